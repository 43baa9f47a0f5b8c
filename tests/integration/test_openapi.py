"""The OpenAPI document (docs/openapi.json) against the gateway.

1. Every route in the gateway's route tables (the {"METHOD", "/path", handler, ...} entries of
   services/gateway/*.c) is in the document and every operation of the document is routed. A
   route ending in '*' matches a prefix and its handler parses the rest of the path: the
   sub-paths each one serves are listed in PREFIX_ROUTES below, and the words the conversation
   handlers compare path parts with (strcmp(parts[1], "messages"), strcmp(action, "stop"), …)
   must be exactly those of the document's sub-paths.
2. The gateway serves the document it was built with at GET /api/v1/openapi.json.
3. schemathesis (property-based requests generated from the document, examples, coverage,
   fuzzing and stateful phases with a fixed seed and a bounded number of examples) against the
   live stack: no 5xx, and every status, content type and body conforms to the document. The
   product routes run as an administrator signed up for the purpose (session Bearer); /v1 runs
   with that user's API key.
"""

import http.client
import json
import re
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import parley_stack as ps

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "openapi.json"
GATEWAY_SRC = ROOT / "services" / "gateway"
METHODS = ("get", "post", "put", "patch", "delete", "head", "options")

# The prefix routes ('*') and the document paths their handlers serve.
PREFIX_ROUTES = {
    ("DELETE", "/api/v1/keys/*"): ["/api/v1/keys/{id}"],
    ("PATCH", "/api/v1/admin/users/*"): ["/api/v1/admin/users/{id}"],
    ("PUT", "/api/v1/admin/tiers/*"): ["/api/v1/admin/tiers/{name}"],
    ("GET", "/api/v1/admin/safety/conversations/*"): ["/api/v1/admin/safety/conversations/{id}"],
    ("POST", "/api/v1/admin/safety/verdicts/*"): ["/api/v1/admin/safety/verdicts/{id}/review"],
    ("GET", "/api/v1/conversations/*"): [
        "/api/v1/conversations/{id}",
        "/api/v1/conversations/{id}/messages/{mid}/stream",
    ],
    ("PATCH", "/api/v1/conversations/*"): ["/api/v1/conversations/{id}"],
    ("DELETE", "/api/v1/conversations/*"): ["/api/v1/conversations/{id}"],
    ("POST", "/api/v1/conversations/*"): [
        "/api/v1/conversations/{id}/messages",
        "/api/v1/conversations/{id}/shares",
        "/api/v1/conversations/{id}/messages/{mid}/stop",
        "/api/v1/conversations/{id}/messages/{mid}/regenerate",
        "/api/v1/conversations/{id}/messages/{mid}/switch",
        "/api/v1/conversations/{id}/messages/{mid}/feedback",
    ],
    ("DELETE", "/api/v1/shares/*"): ["/api/v1/shares/{token}"],
    ("GET", "/s/*"): ["/s/{token}"],
    ("GET", "/static/*"): ["/static/{name}"],
    ("GET", "/vendor/*"): ["/vendor/{name}"],
}

ROUTE_RE = re.compile(r'\{\s*"(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)"\s*,\s*"(/[^"]*)"\s*,')
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")


def load_doc():
    return json.loads(DOC_PATH.read_text())


def c_routes():
    """(METHOD, path) of every entry of the gateway's route tables."""
    out = set()
    for f in sorted(GATEWAY_SRC.glob("*.c")):
        for m in ROUTE_RE.finditer(f.read_text()):
            out.add((m.group(1), m.group(2)))
    return out


def doc_operations(doc):
    return {(m.upper(), p) for p, item in doc["paths"].items() for m in item if m in METHODS}


# --- 1. route tables ↔ document ------------------------------------------------------------------

def test_route_tables_match_the_document():
    routes = c_routes()
    assert len(routes) >= 25, f"the route tables were not found in {GATEWAY_SRC}: {routes}"
    prefix = {r for r in routes if r[1].endswith("*")}
    assert prefix == set(PREFIX_ROUTES), (
        "a prefix route is new or gone: list the sub-paths its handler serves in PREFIX_ROUTES "
        f"(routes: {sorted(prefix)}, listed: {sorted(PREFIX_ROUTES)})")
    expected = {r for r in routes if not r[1].endswith("*")}
    for (method, _), paths in PREFIX_ROUTES.items():
        expected |= {(method, p) for p in paths}
    documented = doc_operations(load_doc())
    assert not expected - documented, f"routed but not documented: {sorted(expected - documented)}"
    assert not documented - expected, f"documented but not routed: {sorted(documented - expected)}"


def test_prefix_handlers_parse_the_documented_words():
    """The literal path words compared in convs.c are exactly the documented sub-path words."""
    src = (GATEWAY_SRC / "convs.c").read_text()
    words = set(re.findall(r'strcmp\((?:parts\[\d\]|action),\s*"([a-z_]+)"\)', src))
    documented = set()
    for paths in PREFIX_ROUTES.values():
        for p in paths:
            if p.startswith("/api/v1/conversations/{id}/"):
                rest = p[len("/api/v1/conversations/{id}/"):]
                documented |= {w for w in rest.split("/") if not w.startswith("{")}
    assert words == documented, f"convs.c compares {sorted(words)}; the document has " \
                                f"{sorted(documented)}"


def test_document_is_well_formed():
    doc = load_doc()
    assert doc["openapi"].startswith("3.1")
    ids = [o["operationId"] for item in doc["paths"].values() for m, o in item.items()
           if m in METHODS]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    text = DOC_PATH.read_text()
    for ref in set(re.findall(r'"\$ref": "#/components/(\w+)/(\w+)"', text)):
        assert ref[1] in doc["components"][ref[0]], f"dangling $ref {ref}"
    for p, item in doc["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", p))
        for m, o in item.items():
            if m not in METHODS:
                continue
            got = {x["name"] for x in o.get("parameters", []) if x["in"] == "path"}
            assert got == names, f"{m.upper()} {p}: path parameters {got} vs {names}"
            for status in o["responses"]:
                assert re.fullmatch(r"[1-5]\d\d", status), f"{m.upper()} {p}: status {status}"


# --- 2. the served document ------------------------------------------------------------------------

def test_gateway_serves_the_document(stack):
    r = ps.http_request(stack.gateway_url("/api/v1/openapi.json"), timeout=10)
    assert r is not None and r.status == 200, r and r.text
    ctype = {k.lower(): v for k, v in r.headers.items()}.get("content-type", "")
    assert ctype.startswith("application/json"), ctype
    assert json.loads(r.body) == load_doc(), "the gateway was built from another docs/openapi.json"


# --- 3. schemathesis against the live stack ------------------------------------------------------

def psql(stack, sql):
    return subprocess.run(["psql", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", stack.pg_url,
                           "-c", sql], check=True, capture_output=True, text=True,
                          timeout=20).stdout


def redis(stack, *args):
    cmd = f"*{len(args)}\r\n".encode()
    for a in args:
        a = str(a).encode()
        cmd += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection(("127.0.0.1", stack.ports.redis), timeout=5) as s:
        s.sendall(cmd)
        return s.recv(65536)


def run_schemathesis(stack, tmp_path, auth, *extra, timeout=150):
    """`st run` on docs/openapi.json; (exit status, output)."""
    argv = [sys.executable, "-c",
            "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'st'; "
            "sys.exit(schemathesis())",
            "run", str(DOC_PATH), "--url", stack.gateway_url("").rstrip("/"),
            "-H", f"Authorization: Bearer {auth}", "--checks", CHECKS, "--seed", "20251125",
            "--workers", "1", "--request-timeout", "60", "--output-truncate", "false",
            "--no-color", *extra]
    p = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


@pytest.mark.timeout(300)
def test_schemathesis_finds_no_failures(stack, tmp_path):
    pytest.importorskip("schemathesis", reason="pip install schemathesis (scripts/deps.sh)")
    email = f"openapi-{secrets.token_hex(6)}@example.com"
    r = ps.http_request(stack.gateway_url("/api/v1/auth/signup"), method="POST",
                        body={"email": email, "password": "correct horse battery"}, timeout=30)
    assert r is not None and r.status == 201, r and r.text
    signup = json.loads(r.body)
    token, uid = signup["token"], signup["user"]["id"]
    # An administrator, so the admin routes are reached past their permission check; the routes
    # that change other users or tiers stay out (they would change what later tests rely on).
    psql(stack, f"UPDATE users SET is_admin = true WHERE id = '{uid}'")
    tiers_before = psql(stack, "SELECT json_agg(t ORDER BY name) FROM tiers t")
    try:
        rc, out = run_schemathesis(
            stack, tmp_path, token, "--max-examples", "15", "--mode", "all",
            "--phases", "examples,coverage,fuzzing,stateful",
            "--exclude-path-regex", "^/v1/",
            "--exclude-operation-id", "logout",
            "--exclude-operation-id", "adminSetTier",
            "--exclude-operation-id", "adminPutTier")
        assert rc == 0, out[-20000:]
        # /v1 with the user's own API key: the free tier caps max_tokens (512) and allows 10
        # requests a minute, so generation stays short (a 429 is a documented answer). The
        # gateway's operator key has no cap: an answer without max_tokens can run into the
        # --request-timeout deadline (504).
        # (The run above may have created keys up to the per-user limit: revoke them first.)
        bearer = {"Authorization": f"Bearer {token}"}
        r = ps.http_request(stack.gateway_url("/api/v1/keys"), headers=bearer, timeout=10)
        assert r is not None and r.status == 200, r and r.text
        for k in json.loads(r.body)["data"]:
            ps.http_request(stack.gateway_url(f"/api/v1/keys/{k['id']}"), method="DELETE",
                            headers=bearer, timeout=10)
        r = ps.http_request(stack.gateway_url("/api/v1/keys"), method="POST", body={"name": "st"},
                            headers=bearer, timeout=10)
        assert r is not None and r.status == 201, r and r.text
        rc, out = run_schemathesis(
            stack, tmp_path, json.loads(r.body)["key"], "--max-examples", "10",
            "--phases", "examples,coverage,fuzzing", "--include-path-regex", "^/v1/")
        assert rc == 0, out[-20000:]
        # The session survived the run (nothing above may log it out).
        me = ps.http_request(stack.gateway_url("/api/v1/me"),
                             headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert me is not None and me.status == 200, me and me.text
    finally:
        # Random log-ins count failures per client address; later tests log in from here too.
        redis(stack, "FLUSHDB")
    assert psql(stack, "SELECT json_agg(t ORDER BY name) FROM tiers t") == tiers_before


# --- regressions found while fuzzing ---------------------------------------------------------------

def test_text_that_is_not_utf8_is_a_bad_request(stack):
    """Bytes that are not UTF-8 in the path, the query, a JSON body or an upload's X-Filename are
    refused with 400 at the edge; they used to reach PostgreSQL and come back as 503."""
    email = f"utf8-{secrets.token_hex(6)}@example.com"
    r = ps.http_request(stack.gateway_url("/api/v1/auth/signup"), method="POST",
                        body={"email": email, "password": "correct horse battery"}, timeout=30)
    assert r is not None and r.status == 201, r and r.text
    auth = {"Authorization": f"Bearer {json.loads(r.body)['token']}"}
    jh = dict(auth, **{"Content-Type": "application/json"})
    host, port = stack.gateway_url("").split("//")[1].rstrip("/").split(":")
    cases = [
        ("POST", "/api/v1/conversations", b'{"title":"a\xffb"}', jh),
        ("PATCH", "/api/v1/me", b'{"custom_instructions":"\xed\xa0\x80"}', jh),  # a surrogate
        ("POST", "/api/v1/keys", b'{"name":"\xc0\xaf"}', jh),  # an overlong '/'
        ("GET", "/api/v1/conversations/search?q=%ff", None, auth),
        ("GET", "/api/v1/conversations/%ff", None, auth),
        ("DELETE", "/api/v1/shares/%f4%90%80%80", None, auth),  # past U+10FFFF
        ("POST", "/api/v1/uploads", b"hello", dict(auth, **{"Content-Type": "text/plain",
                                                            "X-Filename": "\xe9.txt"})),
    ]
    for method, path, body, headers in cases:
        c = http.client.HTTPConnection(host, int(port), timeout=15)
        try:
            # http.client encodes header values as latin-1: "\xe9" goes out as the byte 0xE9.
            c.request(method, path, body=body, headers=headers)
            resp = c.getresponse()
            text = resp.read()
        finally:
            c.close()
        assert resp.status == 400, (method, path, resp.status, text)
        json.loads(text)  # the answer itself is valid JSON (UTF-8)
    # Real UTF-8 still works.
    r = ps.http_request(stack.gateway_url("/api/v1/conversations"), method="POST",
                        body={"title": "été ✓ 😀"}, headers=auth, timeout=15)
    assert r is not None and r.status == 201, r and r.text
    assert json.loads(r.body)["title"] == "été ✓ 😀"
