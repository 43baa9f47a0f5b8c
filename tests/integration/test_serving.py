"""Serving through the whole stack with the official `openai` client: gateway → infer-gateway →
worker (continuous batching over the real SmolLM2 model) → token deltas over NATS → SSE.

Each test uses the session stack from conftest.py; tests that need other limits restart the
infer-gateway and the worker with extra flags and put them back afterwards.
"""

import json
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

import parley_stack as ps

openai = pytest.importorskip("openai")

MODEL = ps.MODEL_NAME


def client(stack, **kw):
    return openai.OpenAI(base_url=stack.gateway_url("/v1"), api_key=stack.api_key(),
                         max_retries=0, timeout=kw.pop("timeout", 60), **kw)


def ask(stack, content, **kw):
    return client(stack).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], **kw)


def metric(stack, service, name, labels=None):
    """The value of one sample of `name` on a daemon's /metrics (0 when absent)."""
    r = ps.http_request(stack[service].admin_url("/metrics"))
    assert r is not None and r.status == 200
    total = 0.0
    for line in r.text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r'^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$', line)
        if not m or m.group(1) != name:
            continue
        if labels and not all(f'{k}="{v}"' in (m.group(2) or "") for k, v in labels.items()):
            continue
        total += float(m.group(3))
    return total


def restart_with(stack, args):
    stack.stop(["worker", "infer-gateway"])
    stack.extra_args.clear()
    stack.extra_args.update(args)
    stack.start(["infer-gateway", "worker"], timeout=60)
    ps.wait_until(lambda: model_listed(stack), 30, what="model listed")


def model_listed(stack):
    r = stack.gateway("/v1/models")
    return r is not None and r.status == 200 and any(m["id"] == MODEL for m in r.json()["data"])


@pytest.fixture
def serving(stack):
    ps.wait_until(lambda: model_listed(stack), 20, what="the worker's model in /v1/models")
    return stack


# --- the happy paths ----------------------------------------------------------------------------

def test_non_streaming_answer(serving):
    r = ask(serving, "What is the capital of France? Answer in one word.", max_tokens=16,
            temperature=0)
    c = r.choices[0]
    assert c.message.role == "assistant"
    assert c.message.content.strip()
    assert c.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 10
    assert 0 < r.usage.completion_tokens <= 16
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.model == MODEL and r.id.startswith("chatcmpl-")


def test_streaming_chunks_follow_openai(serving):
    chunks = list(ask(serving, "Write one sentence about the sea.", max_tokens=20,
                      temperature=0, stream=True))
    assert len(chunks) >= 3
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert all(c.usage is None for c in chunks), "usage sent without include_usage"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0] is chunks[-1]
    assert finals[0].choices[0].finish_reason in ("stop", "length")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    alone = ask(serving, "Write one sentence about the sea.", max_tokens=20, temperature=0)
    assert text == alone.choices[0].message.content


def test_include_usage_adds_a_final_usage_chunk(serving):
    chunks = list(ask(serving, "Say hello.", max_tokens=8, temperature=0, stream=True,
                      stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens <= 8 and last.usage.prompt_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_raw_sse_has_ids_headers_and_done(serving):
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                       "max_tokens": 4, "stream": True}).encode()
    r = ps.http_request(serving.gateway_url("/v1/chat/completions"), "POST",
                        {"Authorization": "Bearer " + serving.api_key(),
                         "Content-Type": "application/json"}, body, timeout=30)
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert r.headers["Cache-Control"] == "no-cache"
    assert r.headers["X-Accel-Buffering"] == "no"
    assert r.headers.get("X-Request-Id")
    events = [e for e in r.text.split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        assert re.match(r"^id: \d+\ndata: \{", e), e


def test_max_tokens_gives_length(serving):
    r = ask(serving, "Count from one to one hundred in words.", max_tokens=5, temperature=0)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5
    r = ask(serving, "Count from one to one hundred in words.", max_completion_tokens=3,
            temperature=0)
    assert r.usage.completion_tokens == 3


def test_stop_string_is_matched_and_not_leaked(serving):
    prompt = "List three fruits, separated by commas."
    full = ask(serving, prompt, max_tokens=30, temperature=0).choices[0].message.content
    words = re.findall(r"[A-Za-z]{4,}", full)
    assert len(words) >= 2, full
    stop = words[1]
    cut = full[: full.index(stop)]
    for stream in (False, True):
        if stream:
            chunks = list(ask(serving, prompt, max_tokens=30, temperature=0, stop=[stop],
                              stream=True))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            reason = chunks[-1].choices[0].finish_reason
        else:
            r = ask(serving, prompt, max_tokens=30, temperature=0, stop=stop)
            text, reason = r.choices[0].message.content, r.choices[0].finish_reason
        assert text == cut and stop not in text
        assert reason == "stop"


def test_same_seed_same_text(serving):
    kw = dict(max_tokens=24, temperature=1.0, top_p=0.95)
    a = ask(serving, "Invent a name for a cat.", seed=42, **kw).choices[0].message.content
    b = ask(serving, "Invent a name for a cat.", seed=42, **kw).choices[0].message.content
    assert a == b
    others = {ask(serving, "Invent a name for a cat.", seed=s, **kw).choices[0].message.content
              for s in (1, 2, 3)}
    assert len(others | {a}) > 1, "different seeds never changed the text"


def test_multibyte_text_arrives_whole(serving):
    # Prompts this model answers with CJK characters and emoji (3- and 4-byte UTF-8 sequences
    # that span several byte-level tokens).
    for prompt, lo in (("Translate 'hello' into Chinese characters.", 0x2E80),
                       ("Reply with only emojis: happy birthday", 0x1F000)):
        chunks = list(ask(serving, prompt, max_tokens=30, temperature=0, stream=True))
        pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        assert all("\ufffd" not in p for p in pieces), pieces
        text = "".join(pieces)
        assert any(ord(ch) >= lo for ch in text), f"no character above {lo:#x} in {text!r}"
        alone = ask(serving, prompt, max_tokens=30, temperature=0).choices[0].message.content
        assert text == alone


# --- invalid requests -----------------------------------------------------------------------------

def raw(stack, body, key=True, ctype="application/json"):
    headers = {"Content-Type": ctype}
    if key:
        headers["Authorization"] = "Bearer " + stack.api_key()
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ps.http_request(stack.gateway_url("/v1/chat/completions"), "POST", headers, data,
                           timeout=20)


GOOD = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.mark.parametrize("change,param", [
    ({"n": 2}, "n"),
    ({"temperature": 5}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"presence_penalty": 3}, "presence_penalty"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": 7}, "stop"),
    ({"messages": "hi"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages"),
    ({"model": 3}, "model"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
])
def test_invalid_parameters_get_400(serving, change, param):
    r = raw(serving, {**GOOD, **change})
    assert r.status == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["param"] == param and err["message"]


def test_malformed_json_and_other_errors(serving):
    r = raw(serving, b"{not json")
    assert r.status == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = raw(serving, GOOD, key=False)
    assert r.status == 401 and r.json()["error"]["type"] == "authentication_error"
    r = raw(serving, {**GOOD, "model": "no-such-model"})
    assert r.status == 404 and r.json()["error"]["code"] == "model_not_found"
    # A body over the limit is refused from its Content-Length, before it is read.
    with socket.create_connection(("127.0.0.1", serving.ports.http), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 2097152\r\n\r\n")
        head = sock.recv(4096).decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head
    huge = {**GOOD, "messages": [{"role": "user", "content": "word " * 9000}]}
    r = raw(serving, huge)
    assert r.status == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError):
        client(serving).chat.completions.create(model="nope", messages=[
            {"role": "user", "content": "x"}])


# --- cancellation, overload, failure ----------------------------------------------------------

def test_closing_the_stream_frees_the_slot(serving):
    cancelled = metric(serving, "worker", "parley_request_success_total",
                       {"finished_reason": "cancelled"})
    stream = ask(serving, "Tell me a very long story about a dragon.", max_tokens=2000,
                 temperature=0, stream=True)
    got = 0
    for chunk in stream:
        got += 1
        if got >= 3:
            break
    stream.close()
    ps.wait_until(lambda: metric(serving, "worker", "parley_request_success_total",
                                 {"finished_reason": "cancelled"}) > cancelled, 10,
                  what="the worker to count a cancelled request")
    ps.wait_until(lambda: metric(serving, "worker", "parley_num_requests_running",
                                 {"model": MODEL}) == 0, 10, what="the slot to be free")


@pytest.mark.timeout(120)
def test_full_queue_answers_429(serving):
    restart_with(serving, {"worker": ["--max-seqs", "1"], "infer-gateway": ["--queue-size", "1"]})
    try:
        results = []

        def one():
            r = raw(serving, {**GOOD, "max_tokens": 64,
                              "messages": [{"role": "user", "content": "Write a poem."}]})
            results.append((r.status, r.headers.get("Retry-After"), r.text))

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        codes = [c for c, _, _ in results]
        assert len(results) == 6
        assert 200 in codes and 429 in codes, codes
        for code, retry, text in results:
            if code == 429:
                assert retry and int(retry) >= 1
                assert json.loads(text)["error"]["type"] == "rate_limit_error"
    finally:
        restart_with(serving, {})


@pytest.mark.timeout(150)
def test_killing_a_worker_ends_every_stream(serving):
    restart_with(serving, {"infer-gateway": ["--start-timeout", "8s"]})
    try:
        outcomes = []

        def one(i):
            try:
                s = ask(serving, f"Story number {i}: tell a long tale.", max_tokens=400,
                        temperature=0, stream=True)
                finish = None
                for c in s:
                    if c.choices and c.choices[0].finish_reason:
                        finish = c.choices[0].finish_reason
                outcomes.append(("done", finish))
            except openai.APIError as e:  # an error event, or an error status
                outcomes.append(("error", type(e).__name__))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        ps.wait_until(lambda: metric(serving, "worker", "parley_num_requests_running",
                                     {"model": MODEL}) > 0, 40, what="streams running")
        time.sleep(1.0)
        serving["worker"].kill(signal.SIGKILL)
        for t in threads:
            t.join(100)
        assert not any(t.is_alive() for t in threads), "a stream hung after the worker died"
        assert len(outcomes) == 8
        assert any(kind == "error" for kind, _ in outcomes), outcomes
    finally:
        restart_with(serving, {})


@pytest.mark.timeout(120)
def test_batched_greedy_equals_alone(serving):
    prompts = ["Name a color.", "What is 3 plus 4?", "Give me a synonym for happy.",
               "Which planet is largest?", "Say something kind.", "What do bees make?"]
    kw = dict(max_tokens=24, temperature=0)
    alone = [ask(serving, p, **kw).choices[0].message.content for p in prompts]
    together = [None] * len(prompts)
    batch_before = metric(serving, "worker", "parley_batch_size_sum")

    def one(i):
        together[i] = ask(serving, prompts[i], **kw).choices[0].message.content

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert together == alone
    assert metric(serving, "worker", "parley_batch_size_sum") > batch_before


def test_metrics_use_operator_names(serving):
    ask(serving, "Hello!", max_tokens=4, temperature=0)
    names = ["parley_num_requests_running", "parley_num_requests_waiting",
             "parley_time_to_first_token_seconds_count", "parley_inter_token_latency_seconds_count",
             "parley_e2e_request_latency_seconds_count", "parley_request_queue_time_seconds_count",
             "parley_prompt_tokens_total", "parley_generation_tokens_total",
             "parley_kv_cache_usage_perc", "parley_batch_size_count"]
    r = ps.http_request(serving["worker"].admin_url("/metrics"))
    for n in names:
        assert re.search(rf"^{n}\{{model=\"{MODEL}\"\}} ", r.text, re.M), n
    assert metric(serving, "worker", "parley_generation_tokens_total") > 0
    assert metric(serving, "infer-gateway", "parley_infer_workers") >= 1
    assert "parley_infer_num_requests_waiting" in ps.http_request(
        serving["infer-gateway"].admin_url("/metrics")).text


def test_gateway_times_each_streamed_token_from_the_worker(serving):
    """parley_gateway_token_delivery_seconds gets one sample per worker-stamped delta that the
    gateway hands to a client's socket, and the samples are plausible (the same host's clock)."""
    count = "parley_gateway_token_delivery_seconds_count"
    before = metric(serving, "gateway", count)
    before_sum = metric(serving, "gateway", "parley_gateway_token_delivery_seconds_sum")
    chunks = list(ask(serving, "Count from one to ten.", max_tokens=12, temperature=0,
                      stream=True))
    deltas = [c for c in chunks if c.choices and c.choices[0].delta.content]
    added = metric(serving, "gateway", count) - before
    # every content delta, plus the final one (finish reason, no text) the worker also stamps
    assert len(deltas) <= added <= len(deltas) + 2, (len(deltas), added)
    mean = (metric(serving, "gateway", "parley_gateway_token_delivery_seconds_sum")
            - before_sum) / added
    assert 0 <= mean < 1.0


def test_worker_is_not_ready_until_its_models_load(serving, workdir):
    r = ps.http_request(serving["worker"].admin_url("/readyz"))
    checks = {c["name"]: c for c in r.json()["checks"]}
    assert checks["models"]["ok"] is True
    bad = workdir / "not-a-model.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    port = ps.free_ports(1)[0]
    proc = subprocess.Popen([str(serving.build / "bin" / "parley-worker"), "--nats-url",
                             serving.nats_url, "--admin-port", str(port), "--models",
                             f"broken={bad}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        def status():
            x = ps.http_request(f"http://127.0.0.1:{port}/readyz", timeout=1)
            return x and x.status == 503 and any(
                c["name"] == "models" and not c["ok"] and c["detail"] for c in x.json()["checks"])
        ps.wait_until(status, 15, what="the broken worker to report not ready with a reason")
        assert "broken" not in [m["id"] for m in serving.gateway("/v1/models").json()["data"]]
    finally:
        proc.terminate()
        proc.wait(15)
