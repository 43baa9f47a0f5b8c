"""Fixtures of the browser tests: the web app in Debian's Chromium (headless) driven by
Playwright (pip `playwright`, sync API; no browser is ever downloaded: Chromium comes from
Debian, /usr/bin/chromium, or $PARLEY_CHROMIUM).

- `stack`: the same real stack as tests/integration (nats-server, PostgreSQL, Redis and the six
  daemons with the real SmolLM2 model), started once for the session by scripts/parley_stack.py
  on free loopback ports.
- `base_url`: the gateway's address.
- `admin`: a session token of the stack's administrator (the first user to sign up).
- `browser`: one Chromium for the session; `new_page(...)`: pages in fresh contexts (their own
  cookies), closed after the test; a failing test's pages are saved as screenshots.
- `shots`: the folder for screenshots, $PARLEY_BUILD/screenshots (build/screenshots).

Every test is bounded in time: 120 s, or @pytest.mark.timeout(seconds).
"""

import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import parley_stack as ps  # noqa: E402

DEFAULT_TEST_TIMEOUT = 120
PASSWORD = "correct horse battery"


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): fail the test after that many seconds")


@pytest.fixture(autouse=True)
def _time_limit(request):
    marker = request.node.get_closest_marker("timeout")
    secs = int(marker.args[0]) if marker else DEFAULT_TEST_TIMEOUT

    def expired(signum, frame):
        raise TimeoutError(f"test exceeded its {secs}s limit")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(secs)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def chromium_path() -> str | None:
    return os.environ.get("PARLEY_CHROMIUM") or shutil.which("chromium")


@pytest.fixture(scope="session")
def sync_playwright_session():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("skipped: the Python package playwright is missing (make deps installs it)")
    if not chromium_path():
        pytest.skip("skipped: Debian's chromium is missing (make deps installs it)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(sync_playwright_session):
    b = sync_playwright_session.chromium.launch(executable_path=chromium_path(), headless=True)
    yield b
    b.close()


@pytest.fixture(scope="session")
def workdir(request):
    d = Path(tempfile.mkdtemp(prefix="parley-web-"))
    os.chmod(d, 0o755)  # PostgreSQL runs as 'postgres' and must enter it
    yield d
    if request.session.testsfailed:
        print(f"\nbrowser test files (logs in */log/) kept in {d}", file=sys.__stderr__)
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def _session_stack(workdir):
    try:
        model = ps.ensure_model()
    except ps.StackError as e:
        pytest.fail(f"cannot fetch the default model: {e}")
    st = ps.Stack(var_dir=workdir / "stack", ports=ps.Ports.pick_free(), model_path=model,
                  drain_timeout="5s", worker_timeout="3s", durable=False, die_with_parent=True)
    try:
        st.start(timeout=90)
        yield st
    finally:
        st.stop(timeout=10)


@pytest.fixture
def stack(_session_stack) -> ps.Stack:
    _session_stack.start(timeout=45)
    return _session_stack


@pytest.fixture
def base_url(request) -> str:
    """The gateway: the session's stack, or $PARLEY_WEB_URL (a stack already running, e.g. from
    `make run`, for working on the app; then $PARLEY_WEB_ADMIN_TOKEN names its administrator)."""
    if os.environ.get("PARLEY_WEB_URL"):
        return os.environ["PARLEY_WEB_URL"].rstrip("/")
    return request.getfixturevalue("stack").gateway_url("").rstrip("/")


def call(base: str, method: str, path: str, body=None, token: str | None = None):
    """One JSON request to the gateway: (status, parsed body or None, headers)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None), dict(r.headers)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return e.code, parsed, dict(e.headers)


def new_email(tag: str = "u") -> str:
    return f"{tag}-{secrets.token_hex(4)}@example.com"


def signup_api(base: str, email: str | None = None) -> tuple[str, dict]:
    status, body, _ = call(base, "POST", "/api/v1/auth/signup",
                           {"email": email or new_email(), "password": PASSWORD})
    assert status == 201, body
    return body["token"], body["user"]


_admin_cache: dict = {}


@pytest.fixture(autouse=True)
def _first_user(request):
    """Signs the administrator up before any other user (the first sign-up becomes it)."""
    if "base_url" not in request.fixturenames:
        return
    base = request.getfixturevalue("base_url")
    if base not in _admin_cache and not os.environ.get("PARLEY_WEB_ADMIN_TOKEN"):
        token, user = signup_api(base, new_email("admin"))
        _admin_cache[base] = token if user["is_admin"] else None


@pytest.fixture
def admin(base_url) -> str:
    """A session token of the administrator (the first user)."""
    if os.environ.get("PARLEY_WEB_ADMIN_TOKEN"):
        return os.environ["PARLEY_WEB_ADMIN_TOKEN"]
    if not _admin_cache.get(base_url):
        pytest.skip("skipped: the first user of this stack was not signed up by these tests")
    return _admin_cache[base_url]


@pytest.fixture(scope="session")
def shots() -> Path:
    d = ps.default_build_dir() / "screenshots"
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("FAILED-*.png"):  # from an earlier run
        old.unlink()
    return d


@pytest.fixture
def new_page(browser, request, shots):
    """new_page(width=1280, height=800, scheme='light', token=None) → a page in a fresh
    context; `token` logs it in (the session cookie a log-in would set)."""
    contexts = []

    def make(width=1280, height=800, scheme="light", token=None, base=None):
        ctx = browser.new_context(viewport={"width": width, "height": height},
                                  color_scheme=scheme, base_url=base)
        ctx.grant_permissions(["clipboard-read", "clipboard-write"])
        if token and base:
            host = base.split("//")[1].split(":")[0]
            ctx.add_cookies([{"name": "parley_session", "value": token, "domain": host,
                              "path": "/", "httpOnly": True, "secure": True, "sameSite": "Lax"}])
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(30000)
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        return page

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for i, ctx in enumerate(contexts):
        if failed:
            for j, pg in enumerate(ctx.pages):
                try:
                    pg.screenshot(path=str(shots / f"FAILED-{request.node.name}-{i}-{j}.png"))
                except Exception:  # noqa: BLE001 - best effort on a failing test
                    pass
        ctx.close()
