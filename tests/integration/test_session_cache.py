"""The gateway's session look-up cache (services/gateway/authcache.c) against the real stack:
repeated requests are answered from the cache (metrics show hits), and every gateway forgets a
session at once when another gateway logs it out or an administrator changes its user or tier
(the AuthInvalidate broadcast on NATS). A second gateway runs with a 60 s cache so that only the
broadcast, not the TTL, can explain what it does."""

import re
import secrets
import subprocess
import time

import pytest

import parley_stack as ps
from conftest import binary

PASSWORD = "session cache password"


def api(url, path, method="GET", body=None, token=None):
    h = {"Authorization": f"Bearer {token}"} if token else {}
    r = ps.http_request(url + path, method=method, headers=h, body=body, timeout=15)
    assert r is not None, f"no answer from {method} {path}"
    return r


def header(resp, name):
    return next((v for k, v in resp.headers.items() if k.lower() == name.lower()), None)


def cache_counts(admin_port):
    r = ps.http_request(f"http://{ps.LOOPBACK}:{admin_port}/metrics", timeout=5)
    assert r is not None and r.status == 200
    out = {}
    for res in ("hit", "miss"):
        m = re.search(r'parley_gateway_session_cache_total\{result="%s"\} (\d+)' % res, r.text)
        out[res] = int(m.group(1)) if m else 0
    return out


@pytest.fixture
def second_gateway(stack, workdir):
    """Another gateway on the same NATS (and so the same history), with a long cache TTL."""
    http_port, admin_port = ps.free_ports(2)
    log = open(workdir / f"gateway-b-{http_port}.log", "w")
    p = subprocess.Popen([str(binary("gateway")), "--nats-url", stack.nats_url,
                          "--admin-addr", ps.LOOPBACK, "--admin-port", str(admin_port),
                          "--http-addr", ps.LOOPBACK, "--http-port", str(http_port),
                          "--session-cache", "60s", "--log-level", "warn"],
                         stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{ps.LOOPBACK}:{http_port}"
    try:
        ps.wait_until(lambda: (ps.http_request(f"http://{ps.LOOPBACK}:{admin_port}/readyz",
                                               timeout=1) or ps.Response(0, {}, b"")).status
                      == 200, 30, what="second gateway ready")
        yield url, admin_port
    finally:
        p.terminate()
        p.wait(timeout=15)
        log.close()


def signup(url):
    r = api(url, "/api/v1/auth/signup", "POST",
            {"email": f"cache-{secrets.token_hex(4)}@example.com", "password": PASSWORD})
    assert r.status == 201, r.text
    return r.json()["token"], r.json()["user"]["id"]


def wait_status(url, path, token, status, within=2.0):
    t0 = time.monotonic()
    while True:
        r = api(url, path, token=token)
        if r.status == status or time.monotonic() - t0 > within:
            return r
        time.sleep(0.05)


def test_repeated_requests_hit_the_cache(stack):
    url = stack.gateway_url("")
    token, _ = signup(url)
    admin = stack.ports.admin("gateway")
    before = cache_counts(admin)
    for _ in range(5):
        assert api(url, "/api/v1/conversations", token=token).status == 200
    after = cache_counts(admin)
    assert after["miss"] - before["miss"] >= 1
    assert after["hit"] - before["hit"] >= 3, (before, after)


def test_logout_on_one_gateway_ends_the_session_on_another_at_once(stack, second_gateway):
    url_a = stack.gateway_url("")
    url_b, admin_b = second_gateway
    token, _ = signup(url_a)
    for _ in range(3):  # cached on B (60 s)
        assert api(url_b, "/api/v1/conversations", token=token).status == 200
    assert cache_counts(admin_b)["hit"] >= 2
    assert api(url_a, "/api/v1/auth/logout", "POST", token=token).status == 200
    r = wait_status(url_b, "/api/v1/conversations", token, 401)
    assert r.status == 401, "gateway B still accepts a session logged out on gateway A"


def test_an_administrators_tier_change_reaches_every_gateway(stack, second_gateway):
    url_a = stack.gateway_url("")
    url_b, _ = second_gateway
    admin_token, admin_id = signup(url_a)
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", stack.pg_url, "-c",
                    f"UPDATE users SET is_admin = true WHERE id = '{admin_id}'"],
                   check=True, capture_output=True, timeout=20)
    tier = f"cache{secrets.token_hex(3)}"
    r = api(url_a, f"/api/v1/admin/tiers/{tier}", "PUT",
            {"models": ["*"], "requests_per_minute": 7, "tokens_per_day": 7000,
             "context_window": 2048, "max_tokens": 256, "priority": "free"}, token=admin_token)
    assert r.status == 200, r.text
    token, uid = signup(url_a)
    r = api(url_b, "/api/v1/conversations", token=token)  # cached on B with the old tier
    assert r.status == 200
    old_limit = header(r, "X-RateLimit-Limit-Requests")
    assert old_limit != "7"
    r = api(url_a, f"/api/v1/admin/users/{uid}", "PATCH", {"tier": tier}, token=admin_token)
    assert r.status == 200, r.text
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.0:
        r = api(url_b, "/api/v1/conversations", token=token)
        if header(r, "X-RateLimit-Limit-Requests") == "7":
            break
        time.sleep(0.05)
    assert header(r, "X-RateLimit-Limit-Requests") == "7", "gateway B kept the old tier"
