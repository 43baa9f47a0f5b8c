"""Accounts against the real stack: sign-up, log-in/out, sessions (cookie and Bearer, idle and
absolute expiry), the first user as administrator, closed sign-up, log-in rate limits, per-user
API keys (on /api/v1 and /v1, revocation at once), admin routes (403 for others), tiers and
quotas (requests per minute and tokens per day through a tiny tier), and that no response ever
carries a password hash.

The module starts from an empty users table (TRUNCATE … CASCADE through psql) so that "the
first user becomes administrator" is about this module's first sign-up, and flushes Redis's
login counters when it is done so later tests are not rate-limited from 127.0.0.1."""

import json
import secrets
import socket
import subprocess
import threading
import time

import pytest

import parley_stack as ps

MODEL = ps.MODEL_NAME
PASSWORD = "correct horse battery"


# --- helpers ------------------------------------------------------------------------------------

def check_no_secrets(resp):
    """No response may carry a password or its hash."""
    if resp is None:
        return
    body = resp.body.decode("utf-8", "replace")
    assert "$argon2" not in body, body
    assert "password_hash" not in body, body
    assert PASSWORD not in body, body


def api(stack, path, method="GET", body=None, token=None, cookie=None, headers=None, timeout=15):
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    if cookie:
        h["Cookie"] = f"parley_session={cookie}"
    r = ps.http_request(stack.gateway_url(path), method=method, headers=h, body=body,
                        timeout=timeout)
    assert r is not None, f"no answer from {method} {path}"
    check_no_secrets(r)
    return r


def header(resp, name):
    for k, v in resp.headers.items():
        if k.lower() == name.lower():
            return v
    return None


def cookie_token(resp):
    sc = header(resp, "Set-Cookie")
    assert sc and sc.startswith("parley_session="), sc
    return sc.split(";", 1)[0].split("=", 1)[1]


def signup(stack, email, password=PASSWORD, expect=201):
    r = api(stack, "/api/v1/auth/signup", "POST", {"email": email, "password": password})
    assert r.status == expect, r.text
    return r


def login(stack, email, password=PASSWORD, expect=200):
    r = api(stack, "/api/v1/auth/login", "POST", {"email": email, "password": password})
    assert r.status == expect, r.text
    return r


def psql(stack, sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", stack.pg_url, "-c", sql],
                   check=True, capture_output=True, text=True, timeout=20)


def redis(stack, *args):
    """One Redis command over RESP; the raw reply."""
    cmd = f"*{len(args)}\r\n".encode()
    for a in args:
        a = str(a).encode()
        cmd += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection(("127.0.0.1", stack.ports.redis), timeout=5) as s:
        s.sendall(cmd)
        return s.recv(65536)


def restart(stack, args):
    stack.stop(["gateway"])
    stack.extra_args.clear()
    stack.extra_args.update(args)
    stack.start(["gateway"], timeout=60)


@pytest.fixture(scope="module")
def accounts(_session_stack):
    _session_stack.start(timeout=45)
    psql(_session_stack, "TRUNCATE users CASCADE; DELETE FROM tiers WHERE name NOT IN "
                         "('free', 'paid')")
    redis(_session_stack, "FLUSHDB")
    state = {}
    yield state
    redis(_session_stack, "FLUSHDB")
    if _session_stack.extra_args.get("gateway"):
        restart(_session_stack, {})


@pytest.fixture
def acc(stack, accounts):
    """The stack plus the module's state: admin/user tokens, made by the first test."""
    if "admin" not in accounts:
        # First sign-ups of an empty users table, four at once: exactly one becomes admin.
        results = {}

        def go(i):
            results[i] = api(stack, "/api/v1/auth/signup", "POST",
                             {"email": f"First{i}@Example.com", "password": PASSWORD})

        threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(r.status == 201 for r in results.values()), [r.text for r in results.values()]
        admins = [r.json() for r in results.values() if r.json()["user"]["is_admin"]]
        users = [r.json() for r in results.values() if not r.json()["user"]["is_admin"]]
        assert len(admins) == 1 and len(users) == 3
        accounts["admin"] = admins[0]
        accounts["users"] = users
    return stack, accounts


def wait_for_fresh_minute(margin=12):
    """Quota windows are UTC minutes: start a rate test well inside one."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.2)


# --- sign-up, log-in, sessions -----------------------------------------------------------------

def test_first_user_is_admin_and_others_are_not(acc):
    stack, st = acc
    admin = st["admin"]
    assert admin["user"]["email"].startswith("first") and admin["user"]["email"].endswith(
        "@example.com")  # lower-cased
    assert admin["user"]["tier"] == "free"
    later = signup(stack, "later@example.com").json()
    assert later["user"]["is_admin"] is False


def test_signup_sets_a_secure_cookie_and_me_works_with_cookie_and_bearer(acc):
    stack, _ = acc
    r = signup(stack, "cookie@example.com")
    sc = header(r, "Set-Cookie")
    for attr in ("HttpOnly", "Secure", "SameSite=Lax", "Path=/"):
        assert attr in sc, sc
    token = cookie_token(r)
    assert token == r.json()["token"] and len(token) >= 43
    me = api(stack, "/api/v1/me", cookie=token)
    assert me.status == 200, me.text
    doc = me.json()
    assert doc["user"]["email"] == "cookie@example.com" and doc["auth"] == "session"
    assert doc["tier"]["name"] == "free" and doc["tier"]["requests_per_minute"] == 10
    assert doc["tier"]["tokens_per_day"] == 20000 and doc["tier"]["max_tokens"] == 512
    assert doc["quota"]["requests_limit"] == 10 and doc["quota"]["tokens_left"] == 20000
    assert header(me, "X-RateLimit-Limit-Requests") == "10"
    assert header(me, "X-RateLimit-Remaining-Tokens") == "20000"
    assert api(stack, "/api/v1/me", token=token).status == 200
    # Neither a missing nor a made-up token gets in.
    assert api(stack, "/api/v1/me").status == 401
    bad = api(stack, "/api/v1/me", token=secrets.token_urlsafe(32))
    assert bad.status == 401 and bad.json()["error"]["type"] == "authentication_error"


def test_logout_deletes_the_session_and_expires_the_cookie(acc):
    stack, _ = acc
    token = signup(stack, "logout@example.com").json()["token"]
    r = api(stack, "/api/v1/auth/logout", "POST", cookie=token)
    assert r.status == 200
    sc = header(r, "Set-Cookie")
    assert sc.startswith("parley_session=;") and "Max-Age=0" in sc, sc
    assert api(stack, "/api/v1/me", cookie=token).status == 401
    assert api(stack, "/api/v1/me", token=token).status == 401


def test_login_gives_a_new_session_each_time(acc):
    stack, _ = acc
    signup(stack, "login@example.com")
    a = login(stack, "LOGIN@example.com")
    b = login(stack, "login@example.com")
    ta, tb = a.json()["token"], b.json()["token"]
    assert ta != tb and cookie_token(a) == ta
    assert a.json()["user"]["email"] == "login@example.com"
    for t in (ta, tb):
        assert api(stack, "/api/v1/me", token=t).status == 200


def test_wrong_password_and_unknown_email_get_the_same_401(acc):
    stack, _ = acc
    signup(stack, "wrongpw@example.com")
    wrong = login(stack, "wrongpw@example.com", "not the password", expect=401)
    unknown = login(stack, "nobody-here@example.com", PASSWORD, expect=401)
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]
    assert wrong.json()["error"]["code"] == unknown.json()["error"]["code"] == "invalid_credentials"
    redis(stack, "FLUSHDB")


def test_signup_validation_and_duplicate_email(acc):
    stack, _ = acc
    r = signup(stack, "not-an-email", expect=400)
    assert r.json()["error"]["param"] == "email"
    r = signup(stack, "short@example.com", "seven77", expect=400)
    assert r.json()["error"]["param"] == "password"
    signup(stack, "dup@example.com")
    r = signup(stack, "Dup@Example.com", expect=409)
    assert r.json()["error"]["type"] == "invalid_request_error" or r.status == 409
    r = api(stack, "/api/v1/auth/signup", "POST", b"email=x", headers={"Content-Type": "text/plain"})
    assert r.status == 415
    r = api(stack, "/api/v1/auth/signup", "POST", b"[1]",
            headers={"Content-Type": "application/json"})
    assert r.status == 400
    assert api(stack, "/api/v1/auth/signup").status == 405


@pytest.mark.timeout(120)
def test_closed_signup_answers_403_and_login_still_works(acc):
    stack, _ = acc
    signup(stack, "before-close@example.com")
    restart(stack, {"gateway": ["--signup-open=false"]})
    try:
        r = signup(stack, "after-close@example.com", expect=403)
        assert "closed" in r.json()["error"]["message"]
        login(stack, "before-close@example.com")
    finally:
        restart(stack, {})
    signup(stack, "after-reopen@example.com")


def test_login_is_rate_limited_per_account_and_per_address(acc):
    stack, _ = acc
    redis(stack, "FLUSHDB")
    signup(stack, "ratelimited@example.com")
    for _ in range(5):
        login(stack, "ratelimited@example.com", "wrong password!", expect=401)
    # The account is locked for the window, even with the right password.
    r = login(stack, "ratelimited@example.com", expect=429)
    ra = int(header(r, "Retry-After"))
    assert 0 < ra <= 15 * 60
    assert r.json()["error"]["type"] == "rate_limit_error"
    # Another account from the same address is not (yet) affected.
    signup(stack, "other-account@example.com")
    login(stack, "other-account@example.com")
    # Per address: 20 failures (over different accounts) close log-in from it.
    redis(stack, "FLUSHDB")
    for i in range(20):
        login(stack, f"ghost{i}@example.com", "whatever-pass", expect=401)
    r = login(stack, "other-account@example.com", expect=429)
    assert int(header(r, "Retry-After")) > 0
    redis(stack, "FLUSHDB")
    login(stack, "other-account@example.com")


# --- profile -----------------------------------------------------------------------------------

def test_patch_me_writes_only_allowed_fields(acc):
    stack, _ = acc
    token = signup(stack, "patch@example.com").json()["token"]
    r = api(stack, "/api/v1/me", "PATCH", {"custom_instructions": "Answer in French."},
            token=token)
    assert r.status == 200, r.text
    assert r.json()["user"]["custom_instructions"] == "Answer in French."
    for field, value in (("tier", "paid"), ("is_admin", True), ("email", "x@example.com")):
        r = api(stack, "/api/v1/me", "PATCH", {field: value}, token=token)
        assert r.status == 400 and r.json()["error"]["param"] == field, r.text
    me = api(stack, "/api/v1/me", token=token).json()["user"]
    assert me["tier"] == "free" and me["is_admin"] is False
    assert me["custom_instructions"] == "Answer in French."
    r = api(stack, "/api/v1/me", "PATCH", {"custom_instructions": "x" * 9000}, token=token)
    assert r.status == 400


# --- API keys ----------------------------------------------------------------------------------

def test_api_keys_create_list_use_and_revoke(acc):
    stack, _ = acc
    token = signup(stack, "keys@example.com").json()["token"]
    r = api(stack, "/api/v1/keys", "POST", {"name": "laptop"}, token=token)
    assert r.status == 201, r.text
    created = r.json()
    key = created["key"]
    assert key.startswith("pk-") and len(key) >= 40
    assert created["prefix"] == key[:11] and created["name"] == "laptop"
    listed = api(stack, "/api/v1/keys", token=token).json()["data"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0] and key not in json.dumps(listed)
    assert listed[0]["prefix"] == key[:11] and listed[0]["revoked"] is False

    # The key works on /api/v1 and on /v1 (instead of the gateway's configured key).
    me = api(stack, "/api/v1/me", token=key)
    assert me.status == 200 and me.json()["user"]["email"] == "keys@example.com"
    assert me.json()["auth"] == "api_key"
    models = api(stack, "/v1/models", token=key)
    assert models.status == 200 and any(m["id"] == MODEL for m in models.json()["data"])
    # A key cannot mint keys.
    assert api(stack, "/api/v1/keys", "POST", {"name": "x"}, token=key).status == 403

    # Another user can neither see nor revoke it.
    other = signup(stack, "keys-other@example.com").json()["token"]
    assert api(stack, "/api/v1/keys", token=other).json()["data"] == []
    assert api(stack, f"/api/v1/keys/{created['id']}", "DELETE", token=other).status == 404
    assert api(stack, "/v1/models", token=key).status == 200

    r = api(stack, f"/api/v1/keys/{created['id']}", "DELETE", token=token)
    assert r.status == 200 and r.json()["deleted"] is True
    # Revoked: refused at once, everywhere.
    assert api(stack, "/v1/models", token=key).status == 401
    assert api(stack, "/api/v1/me", token=key).status == 401
    assert api(stack, "/api/v1/keys", token=token).json()["data"] == []
    everything = api(stack, "/api/v1/keys?include_revoked=true", token=token).json()["data"]
    assert len(everything) == 1 and everything[0]["revoked"] is True
    # An unknown key on /v1 is refused too.
    assert api(stack, "/v1/models", token="pk-" + secrets.token_urlsafe(32)).status == 401


# --- administration ----------------------------------------------------------------------------

ADMIN_GETS = ["/api/v1/admin/users", "/api/v1/admin/usage", "/api/v1/admin/tiers"]


def test_admin_routes_are_403_for_others_and_200_for_the_admin(acc):
    stack, st = acc
    admin = st["admin"]["token"]
    user = st["users"][0]["token"]
    user_id = st["users"][0]["user"]["id"]
    for path in ADMIN_GETS:
        r = api(stack, path, token=user)
        assert r.status == 403 and r.json()["error"]["type"] == "permission_error", path
        assert api(stack, path).status == 401, path
        r = api(stack, path, token=admin)
        assert r.status == 200, (path, r.text)
    assert api(stack, f"/api/v1/admin/users/{user_id}", "PATCH", {"tier": "paid"},
               token=user).status == 403
    assert api(stack, "/api/v1/admin/tiers/x", "PUT", {"context_window": 100}, token=user
               ).status == 403

    users = api(stack, "/api/v1/admin/users?limit=2", token=admin).json()
    assert len(users["data"]) == 2 and users["next_cursor"]
    seen = [u["id"] for u in users["data"]]
    more = api(stack, f"/api/v1/admin/users?limit=200&cursor={users['next_cursor']}",
               token=admin).json()
    assert not set(seen) & {u["id"] for u in more["data"]}
    found = api(stack, "/api/v1/admin/users?q=keys-other", token=admin).json()["data"]
    assert [u["email"] for u in found] == ["keys-other@example.com"]
    tiers = {t["name"]: t for t in api(stack, "/api/v1/admin/tiers", token=admin).json()["data"]}
    assert tiers["free"]["requests_per_minute"] == 10 and tiers["paid"]["priority"] == "paid"
    assert tiers["paid"]["context_window"] == 8192 and tiers["paid"]["tokens_per_day"] == 500000


def test_admin_sets_a_users_tier(acc):
    stack, st = acc
    admin = st["admin"]["token"]
    target = st["users"][1]
    path = f"/api/v1/admin/users/{target['user']['id']}"
    r = api(stack, path, "PATCH", {"tier": "paid"}, token=admin)
    assert r.status == 200 and r.json()["user"]["tier"] == "paid", r.text
    me = api(stack, "/api/v1/me", token=target["token"]).json()
    assert me["user"]["tier"] == "paid" and me["tier"]["requests_per_minute"] == 60
    assert me["quota"]["tokens_limit"] == 500000
    assert api(stack, path, "PATCH", {"tier": "platinum"}, token=admin).status == 400
    assert api(stack, path, "PATCH", {"is_admin": True}, token=admin).status == 400
    assert api(stack, "/api/v1/admin/users/nope", "PATCH", {"tier": "paid"},
               token=admin).status == 404


# --- quotas ------------------------------------------------------------------------------------

def chat(stack, key):
    return api(stack, "/v1/chat/completions", "POST",
               {"model": MODEL, "max_tokens": 1, "temperature": 0,
                "messages": [{"role": "user", "content": "Hi"}]}, token=key, timeout=60)


@pytest.mark.timeout(120)
def test_tiny_tier_requests_per_minute_are_enforced(acc):
    stack, st = acc
    admin = st["admin"]["token"]
    r = api(stack, "/api/v1/admin/tiers/tiny", "PUT",
            {"context_window": 512, "requests_per_minute": 2, "tokens_per_day": 100000,
             "max_tokens": 16, "priority": "free", "models": [MODEL]}, token=admin)
    assert r.status == 200 and r.json()["tier"]["models"] == [MODEL], r.text
    sess = signup(stack, "tiny@example.com").json()
    uid = sess["user"]["id"]
    assert api(stack, f"/api/v1/admin/users/{uid}", "PATCH", {"tier": "tiny"},
               token=admin).status == 200
    key = api(stack, "/api/v1/keys", "POST", {}, token=sess["token"]).json()["key"]

    wait_for_fresh_minute()
    q = api(stack, "/api/v1/quota", token=sess["token"])
    assert q.status == 200
    assert q.json()["tier"]["name"] == "tiny"
    assert q.json()["quota"]["requests_left"] == 2 and q.json()["quota"]["exceeded"] is None
    assert header(q, "X-RateLimit-Limit-Requests") == "2"
    for _ in range(2):
        r = chat(stack, key)
        assert r.status == 200, r.text
    r = chat(stack, key)
    assert r.status == 429, r.text
    assert "requests per minute" in r.json()["error"]["message"]
    assert 0 < int(header(r, "Retry-After")) <= 60
    q = api(stack, "/api/v1/quota", token=sess["token"])
    assert q.status == 200
    quota = q.json()["quota"]
    assert quota["requests_left"] == 0 and quota["exceeded"] == "requests_per_minute"
    assert header(q, "X-RateLimit-Remaining-Requests") == "0"
    me = api(stack, "/api/v1/me", token=sess["token"]).json()
    assert me["quota"]["exceeded"] == "requests_per_minute"
    # Reading the quota does not spend it; a GET on /v1 does not count either.
    assert api(stack, "/v1/models", token=key).status == 200


def test_tokens_per_day_exhausted_is_refused_with_429(acc):
    stack, st = acc
    admin = st["admin"]["token"]
    assert api(stack, "/api/v1/admin/tiers/empty", "PUT",
               {"context_window": 512, "requests_per_minute": 100, "tokens_per_day": 0,
                "max_tokens": 16}, token=admin).status == 200
    sess = signup(stack, "empty@example.com").json()
    assert api(stack, f"/api/v1/admin/users/{sess['user']['id']}", "PATCH", {"tier": "empty"},
               token=admin).status == 200
    quota = api(stack, "/api/v1/quota", token=sess["token"]).json()["quota"]
    assert quota["tokens_left"] == 0 and quota["exceeded"] == "tokens_per_day"
    key = api(stack, "/api/v1/keys", "POST", {}, token=sess["token"]).json()["key"]
    r = chat(stack, key)
    assert r.status == 429 and "tokens per day" in r.json()["error"]["message"]
    assert int(header(r, "Retry-After")) > 0
    # The admin usage report counts the requests that were admitted (none here) per user.
    usage = api(stack, "/api/v1/admin/usage?days=2", token=admin).json()
    assert usage["object"] == "list" and usage["days"] == 2
    tiny = [u for u in usage["data"] if u["email"] == "tiny@example.com"]
    assert tiny and tiny[0]["requests"] == 2


# --- session expiry ----------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_sessions_expire_when_idle_and_at_their_absolute_limit(acc):
    stack, _ = acc
    signup(stack, "expiry@example.com")
    restart(stack, {"gateway": ["--session-idle", "2s", "--session-max", "5s"]})
    try:
        busy = login(stack, "expiry@example.com")
        assert "Max-Age=5" in header(busy, "Set-Cookie")
        busy = busy.json()["token"]
        idle = login(stack, "expiry@example.com").json()["token"]
        t0 = time.monotonic()
        # Used every second: stays valid past the idle window...
        while time.monotonic() - t0 < 3.5:
            assert api(stack, "/api/v1/me", token=busy).status == 200
            time.sleep(0.7)
        # ...while the one left alone for longer than 2 s has expired.
        assert api(stack, "/api/v1/me", token=idle).status == 401
        # Past the absolute limit even the busy one is gone.
        while time.monotonic() - t0 < 5.5:
            api(stack, "/api/v1/me", token=busy)
            time.sleep(0.5)
        r = api(stack, "/api/v1/me", token=busy)
        assert r.status == 401 and "expired" in r.json()["error"]["message"]
    finally:
        restart(stack, {})


@pytest.mark.timeout(90)
def test_v1_usage_with_a_personal_key_counts_for_its_owner(acc):
    stack, _ = acc
    token = signup(stack, "usage-v1@example.com").json()["token"]
    key = api(stack, "/api/v1/keys", "POST", {"name": "sdk"}, token=token).json()["key"]
    before = api(stack, "/api/v1/quota", token=token).json()["quota"]["tokens_left"]
    r = api(stack, "/v1/chat/completions", "POST",
            {"model": MODEL, "max_tokens": 5, "temperature": 0, "user": "someone-else",
             "messages": [{"role": "user", "content": "Hello there"}]}, token=key, timeout=60)
    assert r.status == 200, r.text
    used = r.json()["usage"]["total_tokens"]
    ps.wait_until(lambda: api(stack, "/api/v1/quota", token=token).json()["quota"]["tokens_left"]
                  == before - used, 20, what="the /v1 tokens to count for the key's owner")
