"""Conversations against the real stack and the real SmolLM2 model: turns streamed over SSE and
stored, list/open/rename/search/delete, regenerate, branch switching, editing, stop mid-answer,
resuming an answer with Last-Event-ID (and a second tab), the isolation matrix (another user gets
404 on every route), share links (public, noindex, revocable), uploads (text, PDF, image refused,
too big), the history daemon killed during a turn, and quota exhaustion on turns.

Users sign up through POST /api/v1/auth/signup (accounts.c). Answers are kept short (small
max_tokens) except where a test needs an answer long enough to interrupt."""

import http.client
import json
import secrets
import signal
import subprocess
import time

import pytest

import parley_stack as ps

MODEL = ps.MODEL_NAME
PASSWORD = "conversations test pw"


# --- helpers ------------------------------------------------------------------------------------

def api(stack, path, method="GET", body=None, token=None, headers=None, timeout=30, raw=None):
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    data = body
    if raw is not None:
        data = raw
    r = ps.http_request(stack.gateway_url(path), method=method, headers=h, body=data,
                        timeout=timeout)
    assert r is not None, f"no answer from {method} {path}"
    return r


def header(resp, name):
    for k, v in resp.headers.items():
        if k.lower() == name.lower():
            return v
    return None


def new_user(stack, prefix="conv"):
    email = f"{prefix}-{secrets.token_hex(4)}@example.com"
    r = api(stack, "/api/v1/auth/signup", "POST", {"email": email, "password": PASSWORD})
    assert r.status == 201, r.text
    j = r.json()
    return {"token": j["token"], "id": j["user"]["id"], "email": email}


def psql(stack, sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", stack.pg_url, "-c", sql],
                   check=True, capture_output=True, text=True, timeout=20)


class Sse:
    """A streaming SSE response read event by event (http.client, chunked)."""

    def __init__(self, stack, path, method="POST", body=None, token=None, headers=None,
                 timeout=120):
        self.conn = http.client.HTTPConnection("127.0.0.1", stack.ports.http, timeout=timeout)
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=h)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = dict(self.resp.getheaders())

    def body(self):
        return self.resp.read().decode()

    def events(self):
        """Yields (id, data dict) per event; keep-alive comments are skipped."""
        eid, data = None, []
        while True:
            line = self.resp.readline()
            if not line:
                return
            line = line.decode().rstrip("\r\n")
            if line == "":
                if data:
                    yield eid, json.loads("\n".join(data))
                eid, data = None, []
            elif line.startswith(":"):
                continue
            elif line.startswith("id:"):
                eid = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())

    def close(self):
        self.conn.close()


def turn(stack, token, conv, content, **kw):
    """Posts a message and reads the whole answer: (start, text, done, ids)."""
    body = {"content": content, "max_tokens": kw.pop("max_tokens", 8), "temperature": 0}
    body.update(kw)
    s = Sse(stack, f"/api/v1/conversations/{conv}/messages", body=body, token=token)
    assert s.status == 200, s.body()
    return read_answer(s)


def read_answer(s, start_expected=True):
    start, text, done, ids = None, "", None, []
    for eid, ev in s.events():
        ids.append(eid)
        if ev["type"] == "start":
            start = ev
        elif ev["type"] == "delta":
            text += ev["text"]
        elif ev["type"] == "done":
            done = ev
            break
    s.close()
    assert done is not None, "the stream ended without a done event"
    if start_expected:
        assert start is not None and ids[0] == "0"
    return start, text, done, ids


def conversation(stack, token, conv):
    r = api(stack, f"/api/v1/conversations/{conv}", token=token)
    assert r.status == 200, r.text
    return r.json()


def wait_message(stack, token, conv, mid, pred, timeout=40, what="the answer"):
    def check():
        c = conversation(stack, token, conv)
        for m in c["messages"]:
            if m["id"] == mid and pred(m):
                return m
        return None
    return ps.wait_until(check, timeout, 0.3, what)


def create(stack, token, **body):
    r = api(stack, "/api/v1/conversations", "POST", body, token=token)
    assert r.status == 201, r.text
    return r.json()["id"]


@pytest.fixture
def served(stack):
    def listed():
        r = stack.gateway("/v1/models")
        return r is not None and r.status == 200 and any(
            m["id"] == MODEL for m in r.json()["data"])
    ps.wait_until(listed, 30, what="the model in /v1/models")
    return stack


# --- the whole flow -------------------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_turn_is_streamed_stored_listed_and_opened(served):
    stack = served
    u = new_user(stack)
    conv = create(stack, u["token"])
    start, text, done, ids = turn(stack, u["token"], conv, "Say hello in one short sentence.")
    assert start["conversation_id"] == conv
    assert start["user_message_id"] and start["assistant_message_id"] and start["request_id"]
    assert done["status"] == "complete" and done["finish_reason"] in ("stop", "length")
    assert done["usage"]["completion_tokens"] > 0
    assert text.strip()
    # Event ids are byte offsets of the answer, increasing; the last one is "<n>.done".
    assert ids[-1] == f"{len(text.encode())}.done"
    offsets = [int(i) for i in ids[1:-1]]
    assert offsets == sorted(offsets) and offsets[-1] == len(text.encode())

    aid, umid = start["assistant_message_id"], start["user_message_id"]
    m = wait_message(stack, u["token"], conv, aid, lambda m: m["status"] == "complete")
    assert m["content"] == text and m["role"] == "assistant" and m["parent_id"] == umid
    assert m["sibling_index"] == 1 and m["sibling_count"] == 1 and m["model"] == MODEL
    c = conversation(stack, u["token"], conv)
    assert [x["role"] for x in c["messages"]] == ["user", "assistant"]
    assert c["messages"][0]["content"] == "Say hello in one short sentence."
    assert c["messages"][0]["parent_id"] is None and c["active_leaf_id"] == aid
    assert c["model"] == MODEL

    lst = api(stack, "/api/v1/conversations", token=u["token"])
    assert lst.status == 200
    assert [x["id"] for x in lst.json()["data"]] == [conv]
    assert "messages" not in lst.json()["data"][0] and lst.json()["next_cursor"] is None
    assert header(lst, "X-RateLimit-Limit-Requests")

    # A second turn continues the branch; the context holds the first exchange.
    start2, text2, done2, _ = turn(stack, u["token"], conv, "Thanks!")
    assert done2["status"] == "complete"
    c = conversation(stack, u["token"], conv)
    assert [x["role"] for x in c["messages"]] == ["user", "assistant", "user", "assistant"]
    assert c["messages"][2]["parent_id"] == aid

    # The model titles the conversation after the first exchange.
    def titled():
        t = conversation(stack, u["token"], conv)["title"]
        return t or None
    title = ps.wait_until(titled, 60, 0.5, "a generated title")
    assert 0 < len(title.encode()) <= 80 and "\n" not in title
    # A title the user gave is never replaced.
    named = create(stack, u["token"], title="My own title")
    turn(stack, u["token"], named, "Hello!")
    time.sleep(3)
    assert conversation(stack, u["token"], named)["title"] == "My own title"


@pytest.mark.timeout(180)
def test_turns_work_without_redis(served):
    stack = served
    u = new_user(stack)
    conv = create(stack, u["token"])
    turn(stack, u["token"], conv, "One.")
    stack.stop(["redis"])
    try:
        start, text, done, _ = turn(stack, u["token"], conv, "Two.")
        assert done["status"] == "complete"
        m = wait_message(stack, u["token"], conv, start["assistant_message_id"],
                         lambda m: m["status"] == "complete")
        assert m["content"] == text
        assert len(conversation(stack, u["token"], conv)["messages"]) == 4
    finally:
        stack.start(["redis"], timeout=30)
    # Back with Redis: the chain is read (and cached) again.
    _, _, done, _ = turn(stack, u["token"], conv, "Three.")
    assert done["status"] == "complete"
    assert len(conversation(stack, u["token"], conv)["messages"]) == 6


@pytest.mark.timeout(300)
def test_regenerate_switch_edit_rename_search_delete(served):
    stack = served
    u = new_user(stack)
    tok = u["token"]
    conv = create(stack, tok)
    s1, t1, d1, _ = turn(stack, tok, conv, "Name a colour.", temperature=0)
    first = s1["assistant_message_id"]
    umid = s1["user_message_id"]
    wait_message(stack, tok, conv, first, lambda m: m["status"] != "pending")

    # Regenerate: a new sibling answer to the same user message.
    s = Sse(stack, f"/api/v1/conversations/{conv}/messages/{first}/regenerate",
            body={"max_tokens": 8, "temperature": 1.0, "seed": 7}, token=tok)
    assert s.status == 200, s.body()
    s2, t2, d2, _ = read_answer(s)
    second = s2["assistant_message_id"]
    assert second != first and s2["user_message_id"] is None
    m = wait_message(stack, tok, conv, second, lambda m: m["status"] != "pending")
    assert m["parent_id"] == umid and m["sibling_index"] == 2 and m["sibling_count"] == 2
    assert m["content"] == t2

    # Switch back to the first answer.
    r = api(stack, f"/api/v1/conversations/{conv}/messages/{first}/switch", "POST", token=tok)
    assert r.status == 200, r.text
    msgs = r.json()["messages"]
    assert msgs[-1]["id"] == first and msgs[-1]["sibling_index"] == 1
    assert msgs[-1]["sibling_count"] == 2 and msgs[-1]["content"] == t1
    assert conversation(stack, tok, conv)["active_leaf_id"] == first

    # Edit the first user message: a new branch from the root (parent_id null).
    s3, t3, d3, _ = turn(stack, tok, conv, "Name an animal.", parent_id=None)
    c = conversation(stack, tok, conv)
    assert [x["id"] for x in c["messages"]] == [s3["user_message_id"], s3["assistant_message_id"]]
    assert c["messages"][0]["sibling_index"] == 2 and c["messages"][0]["sibling_count"] == 2
    # Switching to the original user message lands on its newest branch (the regenerated one
    # was created after the first answer).
    r = api(stack, f"/api/v1/conversations/{conv}/messages/{umid}/switch", "POST", token=tok)
    assert r.status == 200
    assert [x["id"] for x in r.json()["messages"]] == [umid, second]
    # A user message cannot follow a user message.
    r = api(stack, f"/api/v1/conversations/{conv}/messages", "POST",
            {"content": "x", "parent_id": umid}, token=tok)
    assert r.status == 400, r.text

    # Feedback on an answer.
    r = api(stack, f"/api/v1/conversations/{conv}/messages/{second}/feedback", "POST",
            {"value": -1}, token=tok)
    assert r.status == 200 and r.json()["feedback"] == -1
    assert api(stack, f"/api/v1/conversations/{conv}/messages/{second}/feedback", "POST",
               {"value": 5}, token=tok).status == 400
    assert conversation(stack, tok, conv)["messages"][-1]["feedback"] == -1

    # Rename, then search by title and by message text.
    word = "zebra" + secrets.token_hex(3)
    r = api(stack, f"/api/v1/conversations/{conv}", "PATCH", {"title": f"About {word}"},
            token=tok)
    assert r.status == 200 and r.json()["title"] == f"About {word}"
    other = create(stack, tok, title="Unrelated")
    found = api(stack, f"/api/v1/conversations/search?q={word}", token=tok).json()["data"]
    assert [x["id"] for x in found] == [conv]
    found = api(stack, "/api/v1/conversations/search?q=animal", token=tok).json()["data"]
    assert conv in [x["id"] for x in found] and other not in [x["id"] for x in found]
    assert api(stack, "/api/v1/conversations/search", token=tok).status == 400

    # Pagination: newest first, with a cursor.
    ids = [create(stack, tok, title=f"page {i}") for i in range(3)]
    page = api(stack, "/api/v1/conversations?limit=2", token=tok).json()
    assert [x["id"] for x in page["data"]] == [ids[2], ids[1]] and page["next_cursor"]
    rest = api(stack, f"/api/v1/conversations?limit=100&cursor={page['next_cursor']}",
               token=tok).json()
    assert [x["id"] for x in rest["data"]][:1] == [ids[0]]
    assert set(x["id"] for x in rest["data"]) == {ids[0], conv, other}
    assert rest["next_cursor"] is None
    assert api(stack, "/api/v1/conversations?cursor=bogus", token=tok).status == 400

    # Delete.
    r = api(stack, f"/api/v1/conversations/{conv}", "DELETE", token=tok)
    assert r.status == 204
    assert api(stack, f"/api/v1/conversations/{conv}", token=tok).status == 404
    assert api(stack, f"/api/v1/conversations/{conv}", "DELETE", token=tok).status == 404


def test_model_choice_is_checked(served):
    stack = served
    u = new_user(stack)
    conv = create(stack, u["token"], model=MODEL)
    r = api(stack, f"/api/v1/conversations/{conv}", "PATCH", {"model": "no-such-model"},
            token=u["token"])
    assert r.status == 400 and "not served" in r.json()["error"]["message"]
    r = api(stack, f"/api/v1/conversations/{conv}", "PATCH", {"model": MODEL},
            token=u["token"])
    assert r.status == 200 and r.json()["model"] == MODEL
    assert api(stack, "/api/v1/conversations", "POST", {"title": 5},
               token=u["token"]).status == 400
    assert api(stack, "/api/v1/conversations").status == 401


# --- stop and resume ------------------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_stop_mid_answer_keeps_the_partial_answer(served):
    stack = served
    u = new_user(stack)
    conv = create(stack, u["token"])
    s = Sse(stack, f"/api/v1/conversations/{conv}/messages",
            body={"content": "Write a long story about a lighthouse keeper.",
                  "max_tokens": 400, "temperature": 0}, token=u["token"])
    assert s.status == 200
    events = s.events()
    _, start = next(events)
    aid = start["assistant_message_id"]
    text, n = "", 0
    for _, ev in events:
        if ev["type"] == "delta":
            text += ev["text"]
            n += 1
            if n == 3:
                break
    r = api(stack, f"/api/v1/conversations/{conv}/messages/{aid}/stop", "POST",
            token=u["token"])
    assert r.status == 202 and r.json()["status"] == "stopping", r.text
    done = None
    for _, ev in events:
        if ev["type"] == "delta":
            text += ev["text"]
        elif ev["type"] == "done":
            done = ev
            break
    s.close()
    assert done and done["status"] == "stopped" and done["finish_reason"] == "cancelled"
    assert done["usage"]["completion_tokens"] < 400
    m = wait_message(stack, u["token"], conv, aid, lambda m: m["status"] != "pending")
    assert m["status"] == "stopped" and m["content"] == text and text
    # Stopping again is harmless.
    r = api(stack, f"/api/v1/conversations/{conv}/messages/{aid}/stop", "POST",
            token=u["token"])
    assert r.status == 200 and r.json()["status"] == "stopped"


@pytest.mark.timeout(120)
def test_stop_before_any_token_ends_the_answer_as_stopped(served):
    """A request that no worker has started (the worker is frozen) is finished by nobody: the
    stop route's stand-in record ends it as stopped, and the open stream ends too."""
    stack = served
    u = new_user(stack)
    conv = create(stack, u["token"])
    assert stack["worker"].send(signal.SIGSTOP)
    try:
        s = Sse(stack, f"/api/v1/conversations/{conv}/messages",
                body={"content": "Hello?", "max_tokens": 8}, token=u["token"])
        assert s.status == 200, s.body()
        events = s.events()
        _, start = next(events)
        aid = start["assistant_message_id"]
        r = api(stack, f"/api/v1/conversations/{conv}/messages/{aid}/stop", "POST",
                token=u["token"])
        assert r.status == 202, r.text
        done = None
        for _, ev in events:
            assert ev["type"] != "delta"
            if ev["type"] == "done":
                done = ev
                break
        s.close()
        assert done and done["status"] == "stopped"
        m = wait_message(stack, u["token"], conv, aid, lambda m: m["status"] != "pending")
        assert m["status"] == "stopped" and m["content"] == ""
    finally:
        stack["worker"].send(signal.SIGCONT)


@pytest.mark.timeout(180)
def test_reconnect_with_last_event_id_gets_the_rest_without_gap_or_duplicate(served):
    stack = served
    u = new_user(stack)
    conv = create(stack, u["token"])
    s = Sse(stack, f"/api/v1/conversations/{conv}/messages",
            body={"content": "Count from one to thirty in words.", "max_tokens": 120,
                  "temperature": 0}, token=u["token"])
    assert s.status == 200
    events = s.events()
    _, start = next(events)
    aid = start["assistant_message_id"]
    first, last_id, n = "", "0", 0
    for eid, ev in events:
        if ev["type"] == "delta":
            first += ev["text"]
            last_id = eid
            n += 1
            if n == 4:
                break
    s.close()  # the client goes away mid-answer: the answer goes on
    assert int(last_id) == len(first.encode())

    path = f"/api/v1/conversations/{conv}/messages/{aid}/stream"
    again = Sse(stack, path, method="GET", token=u["token"], headers={"Last-Event-ID": last_id})
    assert again.status == 200
    _, rest, done, ids = read_answer(again, start_expected=False)
    assert "0" not in ids  # no start event on a resume
    assert done["status"] == "complete"
    # A second tab (no Last-Event-ID) gets the whole answer from its start.
    tab = Sse(stack, path, method="GET", token=u["token"])
    _, whole, done2, _ = read_answer(tab)
    assert whole == first + rest and done2["status"] == "complete"
    m = wait_message(stack, u["token"], conv, aid, lambda m: m["status"] == "complete")
    assert m["content"] == first + rest
    # Once stored, a resume is cut from the stored text, at the same offsets.
    late = Sse(stack, path, method="GET", token=u["token"], headers={"Last-Event-ID": last_id})
    _, rest2, done3, _ = read_answer(late, start_expected=False)
    assert rest2 == rest and done3["status"] == "complete"
    fin = Sse(stack, path, method="GET", token=u["token"],
              headers={"Last-Event-ID": f"{len(m['content'].encode())}.done"})
    assert fin.status == 204
    fin.close()


# --- isolation --------------------------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_another_user_gets_404_on_every_route(served):
    stack = served
    a, b = new_user(stack, "owner"), new_user(stack, "intruder")
    conv = create(stack, a["token"], title="private")
    start, _, _, _ = turn(stack, a["token"], conv, "Hi there.")
    aid, umid = start["assistant_message_id"], start["user_message_id"]
    wait_message(stack, a["token"], conv, aid, lambda m: m["status"] != "pending")
    share = api(stack, f"/api/v1/conversations/{conv}/shares", "POST", {}, token=a["token"])
    assert share.status == 201
    share = share.json()
    share_id = api(stack, "/api/v1/shares", token=a["token"]).json()["data"][0]["id"]
    up = api(stack, "/api/v1/uploads", "POST", raw=b"secret notes",
             headers={"Content-Type": "text/plain", "X-Filename": "notes.txt"},
             token=a["token"])
    assert up.status == 201
    upload = up.json()["id"]

    tok = b["token"]
    base = f"/api/v1/conversations/{conv}"
    checks = [
        ("GET", base, None),
        ("PATCH", base, {"title": "mine now"}),
        ("DELETE", base, None),
        ("POST", f"{base}/messages", {"content": "hello", "max_tokens": 4}),
        ("POST", f"{base}/messages", {"content": "hello", "parent_id": aid, "max_tokens": 4}),
        ("GET", f"{base}/messages/{aid}/stream", None),
        ("POST", f"{base}/messages/{aid}/stop", None),
        ("POST", f"{base}/messages/{aid}/regenerate", {}),
        ("POST", f"{base}/messages/{umid}/switch", None),
        ("POST", f"{base}/messages/{aid}/feedback", {"value": 1}),
        ("POST", f"{base}/shares", {}),
        ("DELETE", f"/api/v1/shares/{share['token']}", None),
        ("DELETE", f"/api/v1/shares/{share_id}", None),
    ]
    for method, path, body in checks:
        r = api(stack, path, method, body, token=tok)
        assert r.status == 404, (method, path, r.status, r.text)
    # B's own conversation cannot reach A's messages or uploads either.
    mine = create(stack, tok)
    for method, path, body in [
            ("POST", f"/api/v1/conversations/{mine}/messages",
             {"content": "x", "parent_id": aid, "max_tokens": 4}),
            ("POST", f"/api/v1/conversations/{mine}/messages",
             {"content": "x", "upload_ids": [upload], "max_tokens": 4}),
            ("POST", f"/api/v1/conversations/{mine}/messages/{aid}/switch", None),
            ("GET", f"/api/v1/conversations/{mine}/messages/{aid}/stream", None)]:
        r = api(stack, path, method, body, token=tok)
        assert r.status == 404, (method, path, r.status, r.text)
    assert api(stack, "/api/v1/shares", token=tok).json()["data"] == []
    assert api(stack, "/api/v1/conversations", token=tok).json()["data"][0]["id"] == mine
    assert conv not in [x["id"] for x in api(stack, "/api/v1/conversations/search?q=private",
                                             token=tok).json()["data"]]
    # Nothing changed for A.
    c = conversation(stack, a["token"], conv)
    assert c["title"] == "private" and len(c["messages"]) == 2
    assert c["messages"][1]["feedback"] == 0
    assert api(stack, f"/s/{share['token']}").status == 200


# --- shares -----------------------------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_share_link_is_public_noindex_snapshot_and_revocable(served):
    stack = served
    u = new_user(stack)
    secret = "Always answer like a pirate " + secrets.token_hex(4)
    r = api(stack, "/api/v1/me", "PATCH", {"custom_instructions": secret}, token=u["token"])
    assert r.status == 200, r.text
    conv = create(stack, u["token"], title="Shared chat")
    s1, t1, _, _ = turn(stack, u["token"], conv, "First question?")
    wait_message(stack, u["token"], conv, s1["assistant_message_id"],
                 lambda m: m["status"] != "pending")
    s2, t2, _, _ = turn(stack, u["token"], conv, "Second question?")
    wait_message(stack, u["token"], conv, s2["assistant_message_id"],
                 lambda m: m["status"] != "pending")

    # Up to the first answer only.
    r = api(stack, f"/api/v1/conversations/{conv}/shares", "POST",
            {"upto_message_id": s1["assistant_message_id"]}, token=u["token"])
    assert r.status == 201, r.text
    share = r.json()
    assert len(share["token"]) >= 43 and share["url"] == f"/s/{share['token']}"
    pub = api(stack, share["url"])  # no credentials
    assert pub.status == 200
    assert "noindex" in header(pub, "X-Robots-Tag")
    snap = pub.json()
    assert snap["title"] == "Shared chat"
    assert [(m["role"], m["content"]) for m in snap["messages"]] == [
        ("user", "First question?"), ("assistant", t1)]
    assert secret not in pub.text
    # A snapshot: later changes do not show.
    api(stack, f"/api/v1/conversations/{conv}", "PATCH", {"title": "Renamed"}, token=u["token"])
    assert api(stack, share["url"]).json()["title"] == "Shared chat"
    # The whole active branch by default.
    full = api(stack, f"/api/v1/conversations/{conv}/shares", "POST", {}, token=u["token"]).json()
    assert len(api(stack, full["url"]).json()["messages"]) == 4

    lst = api(stack, "/api/v1/shares", token=u["token"]).json()["data"]
    assert len(lst) == 2 and all("token" not in x for x in lst)
    assert {x["conversation_id"] for x in lst} == {conv}
    # Revoke by token, and the other by id.
    assert api(stack, f"/api/v1/shares/{share['token']}", "DELETE", token=u["token"]).status == 204
    assert api(stack, share["url"]).status == 404
    other_id = [x["id"] for x in api(stack, "/api/v1/shares", token=u["token"]).json()["data"]]
    assert len(other_id) == 1
    assert api(stack, f"/api/v1/shares/{other_id[0]}", "DELETE", token=u["token"]).status == 204
    assert api(stack, full["url"]).status == 404
    assert api(stack, "/api/v1/shares", token=u["token"]).json()["data"] == []
    assert api(stack, "/s/" + "A" * 43).status == 404
    # A message that is not on the active branch cannot be shared.
    assert api(stack, f"/api/v1/conversations/{conv}/shares", "POST",
               {"upto_message_id": "0" * 32}, token=u["token"]).status == 404


# --- uploads ----------------------------------------------------------------------------------------

def tiny_pdf(text):
    """A minimal one-page PDF with `text` in Helvetica (offsets computed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = b"%PDF-1.4\n"
    offs = []
    for i, o in enumerate(objs, 1):
        offs.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for o in offs:
        out += b"%010d 00000 n \n" % o
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1,
                                                                              xref)
    return out


@pytest.mark.timeout(180)
def test_uploads_text_pdf_image_and_limits(served):
    stack = served
    u = new_user(stack)
    tok = u["token"]

    def upload(data, ctype, name):
        return api(stack, "/api/v1/uploads", "POST", raw=data,
                   headers={"Content-Type": ctype, "X-Filename": name}, token=tok)

    r = upload(b"The secret word is marmalade.\n", "text/plain", "note.txt")
    assert r.status == 201, r.text
    note = r.json()
    assert note["filename"] == "note.txt" and note["size_bytes"] == 30
    assert upload(b"# Title\n\ntext", "text/markdown", "a.md").status == 201
    assert upload(b"a,b\n1,2\n", "text/csv", "t.csv").status == 201
    assert upload(b'{"a": 1}', "application/json", "x.json").status == 201
    assert upload(b"int main(void) { return 0; }\n", "application/octet-stream",
                  "main.c").status == 201
    r = upload(b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png", "cat.png")
    assert r.status == 415 and "image" in r.json()["error"]["message"]
    assert upload(b"\0\1\2", "application/zip", "a.zip").status == 415
    assert upload(b"ok \xff\xfe", "text/plain", "bad.txt").status == 415
    r = upload(b"x" * (600 * 1024), "text/plain", "big.txt")
    assert r.status == 413, r.text
    assert api(stack, "/api/v1/uploads", "POST", raw=b"abc",
               headers={"Content-Type": "text/plain"}, token=tok).status == 400
    assert api(stack, "/api/v1/uploads", "POST", raw=b"abc",
               headers={"Content-Type": "text/plain", "X-Filename": "a.txt"}).status == 401
    if subprocess.run(["which", "pdftotext"], capture_output=True).returncode == 0:
        r = upload(tiny_pdf("Quarterly report of the parley project"), "application/pdf",
                   "report.pdf")
        assert r.status == 201, r.text
        assert upload(b"%PDF-1.4 not really", "application/pdf", "broken.pdf").status == 415
    else:
        print("skipped the PDF part: pdftotext (poppler-utils) is not installed")

    # An upload attached to a message: linked to it, and its text reaches the model.
    conv = create(stack, tok)
    start, text, done, _ = turn(stack, tok, conv, "What is the secret word in the note?",
                                upload_ids=[note["id"]], max_tokens=12)
    assert done["status"] == "complete"
    c = conversation(stack, tok, conv)
    assert c["messages"][0]["upload_ids"] == [note["id"]]
    # Too big for the context window (free tier: 2048 tokens): a clear 400, nothing stored.
    big = upload(("All work and no play. " * 1200).encode(), "text/plain", "big.txt")
    assert big.status == 201, big.text
    r = api(stack, f"/api/v1/conversations/{conv}/messages", "POST",
            {"content": "Summarise.", "upload_ids": [big.json()["id"]]}, token=tok)
    assert r.status == 400 and "context window" in r.json()["error"]["message"], r.text
    assert len(conversation(stack, tok, conv)["messages"]) == 2
    r = api(stack, f"/api/v1/conversations/{conv}/messages", "POST",
            {"content": "x", "upload_ids": ["0" * 32]}, token=tok)
    assert r.status == 404


# --- failures ---------------------------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_answer_is_saved_when_history_comes_back(served):
    stack = served
    u = new_user(stack)
    conv = create(stack, u["token"])
    s = Sse(stack, f"/api/v1/conversations/{conv}/messages",
            body={"content": "Describe the sea in three sentences.", "max_tokens": 60,
                  "temperature": 0}, token=u["token"])
    assert s.status == 200
    events = s.events()
    _, start = next(events)
    aid = start["assistant_message_id"]
    stack["history"].kill()  # SIGKILL, mid-answer
    text, done = "", None
    for _, ev in events:
        if ev["type"] == "delta":
            text += ev["text"]
        elif ev["type"] == "done":
            done = ev
            break
    s.close()
    assert done and done["status"] == "complete"  # the stream does not need history
    time.sleep(2)  # the completion record waits (nak'd) while history is down
    stack.start(["history"], timeout=60)
    m = wait_message(stack, u["token"], conv, aid, lambda m: m["status"] == "complete",
                     timeout=60, what="the answer saved after history came back")
    assert m["content"] == text


@pytest.mark.timeout(120)
def test_sweeper_fails_answers_left_pending(served):
    stack = served
    u = new_user(stack)
    conv = create(stack, u["token"])
    mid = secrets.token_hex(16)
    psql(stack, "INSERT INTO messages (user_id, conversation_id, id, role, content, status,"
                f" model, request_id, created_at, updated_at) VALUES ('{u['id']}', '{conv}',"
                f" '{mid}', 3, '', 1, '{MODEL}', '{secrets.token_hex(16)}',"
                " now() - interval '1 hour', now() - interval '1 hour');"
                f" UPDATE conversations SET active_leaf_id = '{mid}' WHERE id = '{conv}'")
    stack.stop(["chat"])
    stack.extra_args["chat"] = ["--sweep-interval", "300ms", "--sweep-age", "10m",
                                "--turn-deadline", "5m"]
    try:
        stack.start(["chat"], timeout=30)
        m = wait_message(stack, u["token"], conv, mid, lambda m: m["status"] == "failed",
                         timeout=20, what="the sweeper")
        assert "interrupted" in m["error"]
    finally:
        stack.stop(["chat"])
        stack.extra_args.pop("chat", None)
        stack.start(["chat"], timeout=30)


@pytest.mark.timeout(120)
def test_turns_over_quota_are_refused_with_429(served):
    stack = served
    admin, user = new_user(stack, "quota-admin"), new_user(stack, "quota-user")
    psql(stack, f"UPDATE users SET is_admin = true WHERE id = '{admin['id']}'")
    r = api(stack, "/api/v1/admin/tiers/convs-none", "PUT",
            {"context_window": 1024, "requests_per_minute": 100, "tokens_per_day": 0,
             "max_tokens": 16, "priority": "free", "models": [MODEL]}, token=admin["token"])
    if r.status == 404:
        pytest.skip("the admin tier route is not there")
    assert r.status == 200, r.text
    r = api(stack, f"/api/v1/admin/users/{user['id']}", "PATCH", {"tier": "convs-none"},
            token=admin["token"])
    assert r.status == 200, r.text
    conv = create(stack, user["token"])
    r = api(stack, f"/api/v1/conversations/{conv}/messages", "POST",
            {"content": "Hello?", "max_tokens": 4}, token=user["token"])
    assert r.status == 429, r.text
    err = r.json()["error"]
    assert "tokens per day" in err["message"] and err["exceeded"] == "tokens_per_day"
    assert int(header(r, "Retry-After")) > 0
    assert header(r, "X-RateLimit-Remaining-Tokens") == "0"
    # Nothing was stored for the refused turn.
    assert conversation(stack, user["token"], conv)["messages"] == []

    # A tier that allows only one model: another is refused with 403.
    r = api(stack, "/api/v1/admin/tiers/convs-one", "PUT",
            {"context_window": 1024, "requests_per_minute": 100, "tokens_per_day": 100000,
             "max_tokens": 16, "priority": "free", "models": ["some-other-model"]},
            token=admin["token"])
    assert r.status == 200, r.text
    assert api(stack, f"/api/v1/admin/users/{user['id']}", "PATCH", {"tier": "convs-one"},
               token=admin["token"]).status == 200
    r = api(stack, f"/api/v1/conversations/{conv}", "PATCH", {"model": MODEL},
            token=user["token"])
    assert r.status == 403, r.text
    r = api(stack, f"/api/v1/conversations/{conv}/messages", "POST",
            {"content": "Hello?", "max_tokens": 4, "model": MODEL}, token=user["token"])
    assert r.status == 403, r.text


@pytest.mark.timeout(240)
def test_postgres_restart_mid_answer_loses_nothing(served):
    """PostgreSQL goes away during an answer: history reports not ready, the answer still
    streams, and once PostgreSQL is back the answer is saved and everything works again."""
    stack = served
    u = new_user(stack)
    conv = create(stack, u["token"])
    s = Sse(stack, f"/api/v1/conversations/{conv}/messages",
            body={"content": "Describe a forest in three sentences.", "max_tokens": 60,
                  "temperature": 0}, token=u["token"])
    assert s.status == 200
    events = s.events()
    _, start = next(events)
    aid = start["assistant_message_id"]
    stack.stop(["postgres"])

    def history_not_ready():
        r = ps.http_request(stack["history"].admin_url("/readyz"), timeout=2)
        return r is not None and r.status == 503
    ps.wait_until(history_not_ready, 15, what="history to report PostgreSQL down")
    text, done = "", None
    for _, ev in events:
        if ev["type"] == "delta":
            text += ev["text"]
        elif ev["type"] == "done":
            done = ev
            break
    s.close()
    assert done and done["status"] == "complete"
    stack.start(["postgres"], timeout=60)
    stack.wait_ready(["history"], timeout=60)
    m = wait_message(stack, u["token"], conv, aid, lambda m: m["status"] == "complete",
                     timeout=90, what="the answer saved after PostgreSQL came back")
    assert m["content"] == text
    # And the next turn works normally.
    _, text2, done2, _ = turn(stack, u["token"], conv, "Thanks!")
    assert done2["status"] == "complete"
