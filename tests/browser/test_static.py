"""The gateway's web files over plain HTTP (services/gateway/static.c): content types, caching
headers, conditional requests, path safety, the app/JSON choice at `/` and the share page's
choice between HTML (a browser) and JSON, and /api/v1/models (the model picker's list)."""

import http.client
import json
from urllib.parse import urlsplit

from conftest import call, signup_api


def raw_get(base, path, headers=None):
    """GET with the path sent exactly as given (no client-side normalisation)."""
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=15)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_root_serves_the_app_to_browsers_and_json_to_others(base_url):
    status, h, body = raw_get(base_url, "/", {"Accept": "*/*"})
    assert status == 200 and h["content-type"].startswith("application/json")
    doc = json.loads(body)
    assert doc["service"] == "parley" and doc["api"] == "/v1"
    status, h, body = raw_get(base_url, "/", {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert status == 200 and h["content-type"] == "text/html; charset=utf-8"
    assert b'<script type="module" src="/static/app.js">' in body
    assert "script-src 'self'" in h["content-security-policy"]
    assert "frame-ancestors 'none'" in h["content-security-policy"]
    assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
    assert h["cache-control"] == "no-cache" and h["etag"].startswith('"')
    # Revalidation: the same ETag answers 304 without a body.
    status, h2, body = raw_get(base_url, "/", {"Accept": "text/html", "If-None-Match": h["etag"]})
    assert status == 304 and body == b"" and h2["etag"] == h["etag"]


def test_app_files_have_their_types(base_url):
    for path, ctype in [("/static/app.js", "text/javascript; charset=utf-8"),
                        ("/static/api.js", "text/javascript; charset=utf-8"),
                        ("/static/style.css", "text/css; charset=utf-8"),
                        ("/static/favicon.svg", "image/svg+xml"),
                        ("/static/share.html", "text/html; charset=utf-8")]:
        status, h, body = raw_get(base_url, path)
        assert status == 200, path
        assert h["content-type"] == ctype, path
        assert h["x-content-type-options"] == "nosniff" and body, path


def test_vendor_libraries_come_from_debian_packages(base_url):
    for name, needle in [("marked.js", b"marked"), ("highlight.js", b"hljs"),
                         ("purify.js", b"DOMPurify"), ("hljs-light.css", b".hljs"),
                         ("hljs-dark.css", b".hljs")]:
        status, h, body = raw_get(base_url, "/vendor/" + name)
        assert status == 200, name
        assert needle in body, name
        assert h["cache-control"] == "public, max-age=86400", name
    status, h, _ = raw_get(base_url, "/vendor/purify.js")
    status2, _, _ = raw_get(base_url, "/vendor/purify.js", {"If-None-Match": h["etag"]})
    assert status2 == 304


def test_no_path_escapes_the_web_root(base_url):
    for path in ["/static/../Makefile", "/static/..%2fMakefile", "/static/%2e%2e/Makefile",
                 "/static/.gitignore", "/static/", "/static/sub/app.js",
                 "/static/..", "/vendor/../../etc/passwd", "/vendor/marked.min.js",
                 "/vendor/", "/static/nothere.js", "/static//etc/passwd"]:
        status, h, body = raw_get(base_url, path)
        assert status in (400, 404), (path, status)
        assert b"root:" not in body and b"BUILD" not in body, path


def test_share_page_for_browsers_json_for_scripts(base_url):
    token, _ = signup_api(base_url)
    status, conv, _ = call(base_url, "POST", "/api/v1/conversations", {"title": "t"}, token)
    assert status == 201
    bad = "/s/" + "A" * 43
    status, h, body = raw_get(base_url, bad, {"Accept": "text/html"})
    assert status == 404 and h["content-type"] == "text/html; charset=utf-8"
    assert b'src="/static/share.js"' in body
    assert h["x-robots-tag"] == "noindex, nofollow" and h["referrer-policy"] == "no-referrer"
    assert h["cache-control"] == "private, no-store"
    status, h, body = raw_get(base_url, bad, {"Accept": "application/json"})
    assert status == 404 and h["content-type"].startswith("application/json")
    assert json.loads(body)["error"]["code"] == "not_found"


def test_models_route_needs_a_session(base_url):
    status, body, _ = call(base_url, "GET", "/api/v1/models")
    assert status == 401
    token, _ = signup_api(base_url)
    status, body, _ = call(base_url, "GET", "/api/v1/models", token=token)
    assert status == 200 and body["object"] == "list" and body["tier"] == "free"
    assert body["data"] and all(m["object"] == "model" and m["context_length"] > 0
                                for m in body["data"])
