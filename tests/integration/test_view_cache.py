"""The conversation view caches: history's (services/history/ops_convs.c, view_get) answers
conv.get from Redis once a conversation has been opened, and the gateway's (viewcache.c) keeps
the JSON it rendered and serves it again while history confirms the version; every change made
through the product API is visible at once afterwards (each op that changes a conversation
replaces its version key).

The tests prove both halves: a change written to PostgreSQL behind history's back (psql) is NOT
seen while the view is cached (so the cache is really in use), and the same kind of change made
through the API IS seen on the next open."""

import re

import pytest

import parley_stack as ps
from test_conversations import (Sse, api, conversation, create, new_user, psql,  # noqa: F401
                                read_answer, served, turn, wait_message)


def gateway_hits(stack):
    r = ps.http_request(f"http://{ps.LOOPBACK}:{stack.ports.admin('gateway')}/metrics", timeout=5)
    m = re.search(r'parley_gateway_view_cache_total\{result="hit"\} (\d+)', r.text)
    return int(m.group(1)) if m else 0


def sneak_title(stack, user, conv, title):
    psql(stack, f"UPDATE conversations SET title = '{title}' WHERE user_id = '{user['id']}'"
                f" AND id = '{conv}'")


@pytest.mark.timeout(240)
def test_open_is_cached_and_every_api_change_shows_at_once(served):
    stack = served
    u = new_user(stack, "view")
    tok = u["token"]
    conv = create(stack, tok, title="first", model=ps.MODEL_NAME)
    start, _, done, _ = turn(stack, tok, conv, "Say hi.")
    # The answer is saved just after its stream ends; a view with a pending answer is not
    # cached, so wait for it to be complete.
    wait_message(stack, tok, conv, start["assistant_message_id"],
                 lambda m: m["status"] != "pending")
    first = conversation(stack, tok, conv)  # cached from here on
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    hits = gateway_hits(stack)
    assert conversation(stack, tok, conv) == first
    assert gateway_hits(stack) == hits + 1, "the gateway did not serve its kept copy"

    sneak_title(stack, u, conv, "behind the cache")
    assert conversation(stack, tok, conv)["title"] == "first", "conv.get did not use its cache"

    # rename through the API: seen (and the sneaked title overwritten)
    assert api(stack, f"/api/v1/conversations/{conv}", "PATCH", {"title": "renamed"},
               token=tok).status == 200
    assert conversation(stack, tok, conv)["title"] == "renamed"

    # feedback on the answer
    answer = first["messages"][1]["id"]
    sneak_title(stack, u, conv, "behind again")
    r = api(stack, f"/api/v1/conversations/{conv}/messages/{answer}/feedback", "POST",
            {"value": 1}, token=tok)
    assert r.status == 200, r.text
    c = conversation(stack, tok, conv)
    assert c["messages"][1]["feedback"] == 1 and c["title"] == "behind again"

    # a new turn (and its completion)
    sneak_title(stack, u, conv, "renamed")
    start2, _, _, _ = turn(stack, tok, conv, "And again.")
    # as above: the answer is stored just after its stream ends
    wait_message(stack, tok, conv, start2["assistant_message_id"],
                 lambda m: m["status"] != "pending")
    c = conversation(stack, tok, conv)
    assert len(c["messages"]) == 4 and c["messages"][3]["status"] == "complete", c["messages"]

    # regenerate the last answer, then switch back to the first version
    old_answer = c["messages"][3]["id"]
    s = Sse(stack, f"/api/v1/conversations/{conv}/messages/{old_answer}/regenerate",
            body={"max_tokens": 8, "temperature": 1.0, "seed": 3}, token=tok)
    assert s.status == 200, s.body()
    s2, _, _, _ = read_answer(s)
    new_answer = s2["assistant_message_id"]
    m = wait_message(stack, tok, conv, new_answer, lambda m: m["status"] != "pending")
    assert m["sibling_count"] == 2
    r = api(stack, f"/api/v1/conversations/{conv}/messages/{old_answer}/switch", "POST", {},
            token=tok)
    assert r.status == 200, r.text
    c = conversation(stack, tok, conv)
    assert c["messages"][3]["id"] == old_answer
    assert c["messages"][3]["sibling_ids"] == [old_answer, new_answer]
    assert c["messages"][2]["sibling_ids"] == [c["messages"][2]["id"]]

    # delete: gone, not served from the cache
    assert api(stack, f"/api/v1/conversations/{conv}", "DELETE", token=tok).status in (200, 204)
    assert api(stack, f"/api/v1/conversations/{conv}", token=tok).status == 404
