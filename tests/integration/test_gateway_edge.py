"""The gateway's edge behaviour: HTTPS, SSE keep-alives while a request waits, and the limits
that protect it (connections per address, header size, idle connections).

Each test restarts the gateway (and, where needed, the worker) of the session stack with extra
flags and puts the defaults back afterwards.
"""

import json
import socket
import ssl
import subprocess
import threading
import time

import pytest

import parley_stack as ps

MODEL = ps.MODEL_NAME


def restart(stack, args):
    names = list(args) or ["gateway"]
    stack.stop(names)
    stack.extra_args.clear()
    stack.extra_args.update(args)
    stack.start(names, timeout=60)


@pytest.fixture
def edge(stack):
    yield stack
    restart(stack, {"gateway": [], "worker": []})


def post_stream(port, key, content, max_tokens):
    body = json.dumps({"model": MODEL, "stream": True, "max_tokens": max_tokens,
                       "temperature": 0,
                       "messages": [{"role": "user", "content": content}]}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
              + body)
    return s


def read_for(sock, seconds):
    sock.settimeout(0.2)
    data, end = b"", time.time() + seconds
    while time.time() < end:
        try:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        except socket.timeout:
            pass
        except ConnectionResetError:  # refused by a limit: closed, as far as the client goes
            break
    return data


@pytest.mark.timeout(120)
def test_keepalives_flow_while_a_request_waits_in_the_queue(edge):
    restart(edge, {"gateway": ["--keepalive", "500ms", "--first-token-wait", "300ms"],
                   "worker": ["--max-seqs", "1"]})
    ps.wait_until(lambda: edge.gateway("/v1/models").json()["data"], 20, what="model listed")
    key, port = edge.api_key(), edge.ports.http
    busy = post_stream(port, key, "Write a very long essay about rivers.", 400)
    time.sleep(0.5)
    waiting = post_stream(port, key, "Say hi.", 4)
    got = read_for(waiting, 3.0)
    busy.close()
    waiting.close()
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), got[:200]
    assert b"text/event-stream" in head
    assert body.count(b": keepalive") >= 2, body[:500]
    assert b'"role":"assistant"' in body


@pytest.mark.timeout(120)
def test_keepalives_between_events_do_not_break_the_openai_client(edge):
    """A stream that stalls after its first events (the worker paused) gets keep-alives between
    events that carry ids; the openai client must read through them to the end. A keep-alive
    ending in a blank line made openai-python parse an empty event as JSON and raise."""
    import signal

    import openai
    restart(edge, {"gateway": ["--keepalive", "200ms"]})
    ps.wait_until(lambda: edge.gateway("/v1/models").json()["data"], 20, what="model listed")
    cl = openai.OpenAI(base_url=edge.gateway_url("/v1"), api_key=edge.api_key(), max_retries=0,
                       timeout=60)
    stream = cl.chat.completions.create(
        model=ps.MODEL_NAME, stream=True, max_tokens=48, temperature=0,
        messages=[{"role": "user", "content": "Count from one to fifty in words."}])
    worker = edge["worker"]
    finish, n = None, 0
    for c in stream:
        n += 1
        if n == 3:  # a few events with ids are in: pause the worker past several keep-alives
            worker.send(signal.SIGSTOP)
            try:
                time.sleep(1.2)
            finally:
                worker.send(signal.SIGCONT)
        if c.choices and c.choices[0].finish_reason:
            finish = c.choices[0].finish_reason
    assert n > 3 and finish in ("stop", "length")


@pytest.mark.timeout(90)
def test_https_with_certificate(edge, workdir):
    cert, key = workdir / "tls.crt", workdir / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    restart(edge, {"gateway": ["--tls-cert", str(cert), "--tls-key", str(key)]})
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", edge.ports.http), timeout=10) as raw:
        with ctx.wrap_socket(raw) as tls:
            tls.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                        + edge.api_key().encode() + b"\r\nConnection: close\r\n\r\n")
            data = read_for(tls, 3.0)
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert MODEL.encode() in data
    # Plain HTTP on the TLS port is not served.
    r = ps.http_request(edge.gateway_url("/v1/models"), timeout=3)
    assert r is None or r.status >= 400


def test_limits_on_connections_headers_and_idle_time(edge):
    restart(edge, {"gateway": ["--max-conns-per-ip", "3", "--idle-timeout", "1s"]})
    port = edge.ports.http
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    extra = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        extra.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert read_for(extra, 1.5) == b"", "a 4th connection from one address was served"
    for s in socks + [extra]:
        s.close()
    time.sleep(0.3)
    # An idle connection is closed after --idle-timeout.
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    t0 = time.time()
    assert read_for(idle, 4.0) == b""
    assert time.time() - t0 < 3.5, "the idle connection was not closed"
    idle.close()
    # A header block larger than the connection memory is refused, not served.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n")
        data = read_for(s, 2.0)
    assert not data.startswith(b"HTTP/1.1 200")
    assert data == b"" or data.split(b" ")[1] in (b"413", b"431", b"400")


def test_every_response_has_a_request_id(stack):
    r = stack.gateway("/v1/models")
    rid = r.headers.get("X-Request-Id")
    assert rid and len(rid) == 32
    r2 = stack.gateway("/v1/models")
    assert r2.headers["X-Request-Id"] != rid
    r3 = stack.gateway("/v1/nothing-here")
    assert r3.status == 404 and r3.headers.get("X-Request-Id")
