"""Prefix caching through the whole stack: a second conversation turn reuses the KV cache of the
first (the worker's parley_prefix_cache_hits_total grows by at least the first turn's prompt,
in whole 16-token blocks), both on the OpenAI-compatible API and on the product's conversation
path (the chat daemon renders the history; the worker applies the chat template and tokenises),
and the answer is the same with the cache turned off (--no-prefix-cache).
"""

import http.client
import json
import re
import secrets

import pytest

import parley_stack as ps

openai = pytest.importorskip("openai")

MODEL = ps.MODEL_NAME
BLOCK = 16
SYSTEM = ("You are a careful assistant for a small grocery shop. Answer in one short sentence, "
          "name concrete products, and never invent prices or opening hours.")


def metric(stack, service, name):
    """The sum of every sample of `name` on a daemon's /metrics (0 when absent)."""
    r = ps.http_request(stack[service].admin_url("/metrics"))
    assert r is not None and r.status == 200
    total = 0.0
    for line in r.text.splitlines():
        m = re.match(r'^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$', line)
        if m and m.group(1) == name:
            total += float(m.group(3))
    return total


def hits(stack):
    return metric(stack, "worker", "parley_prefix_cache_hits_total")


def model_listed(stack):
    r = stack.gateway("/v1/models")
    return r is not None and r.status == 200 and any(m["id"] == MODEL for m in r.json()["data"])


def restart_worker(stack, args):
    stack.stop(["worker"])
    stack.extra_args.pop("worker", None)
    if args:
        stack.extra_args["worker"] = args
    stack.start(["worker"], timeout=60)
    ps.wait_until(lambda: model_listed(stack), 30, what="the model in /v1/models")


@pytest.fixture
def serving(stack):
    ps.wait_until(lambda: model_listed(stack), 30, what="the model in /v1/models")
    return stack


def chat(stack, messages, max_tokens=12):
    c = openai.OpenAI(base_url=stack.gateway_url("/v1"), api_key=stack.api_key(), max_retries=0,
                      timeout=60)
    r = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens,
                                  temperature=0)
    return r.choices[0].message.content, r.usage.prompt_tokens


@pytest.mark.timeout(180)
def test_second_turn_reuses_the_first_and_answers_the_same(serving):
    ask = f"Which fruit would you suggest for a pie? ({secrets.token_hex(3)})"
    turn1 = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ask}]
    answer1, prompt1 = chat(serving, turn1)
    turn2 = turn1 + [{"role": "assistant", "content": answer1},
                     {"role": "user", "content": "And which vegetable for a soup?"}]
    before = hits(serving)
    answer2, prompt2 = chat(serving, turn2)
    gained = hits(serving) - before
    assert prompt2 > prompt1
    # Turn 1's prompt is a token prefix of turn 2's: every full block of it was reused (and
    # possibly blocks of the answer, which the cache also holds).
    assert gained >= prompt1 // BLOCK * BLOCK, (gained, prompt1)
    assert gained < prompt2
    assert metric(serving, "worker", "parley_prefix_cache_queries_total") >= prompt1 + prompt2
    assert metric(serving, "worker", "parley_prefix_cache_blocks") > 0

    # The same turn without the cache: the same greedy answer, and no hits counted.
    try:
        restart_worker(serving, ["--no-prefix-cache"])
        again, _ = chat(serving, turn2)
        assert again == answer2
        assert hits(serving) == 0
    finally:
        restart_worker(serving, None)


# --- the product's conversation path -------------------------------------------------------------

def api(stack, path, method="GET", body=None, token=None):
    h = {"Authorization": f"Bearer {token}"} if token else {}
    r = ps.http_request(stack.gateway_url(path), method=method, headers=h, body=body, timeout=60)
    assert r is not None, f"no answer from {method} {path}"
    return r


def post_turn(stack, token, conv, content):
    """Posts a message and reads its whole SSE answer, up to the done event."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.ports.http, timeout=120)
    conn.request("POST", f"/api/v1/conversations/{conv}/messages",
                 body=json.dumps({"content": content, "max_tokens": 12, "temperature": 0}),
                 headers={"Authorization": f"Bearer {token}",
                          "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    body = resp.read().decode()
    conn.close()
    assert '"type":"done"' in body.replace(" ", ""), body[-400:]


@pytest.mark.timeout(120)
def test_conversation_turns_hit_the_cache(serving):
    email = f"prefix-{secrets.token_hex(4)}@example.com"
    r = api(serving, "/api/v1/auth/signup", "POST",
            {"email": email, "password": "prefix cache test pw"})
    assert r.status == 201, r.text
    tok = r.json()["token"]
    r = api(serving, "/api/v1/conversations", "POST", {}, token=tok)
    assert r.status == 201, r.text
    conv = r.json()["id"]
    words = " ".join(secrets.token_hex(2) for _ in range(20))
    post_turn(serving, tok, conv, f"Please remember these codes and say ok: {words}")
    before = hits(serving)
    post_turn(serving, tok, conv, "Which was the first code?")
    # The first turn's prompt (system prompt, 20 codes, template) is well over 64 tokens; its
    # whole blocks come back only if the chat daemon's history, rendered by the worker's
    # template and tokenised again, starts with exactly the first turn's tokens.
    assert hits(serving) - before >= 64
