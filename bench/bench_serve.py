"""bench_serve — `make bench-serve`: load benchmark of the serving path, in the vocabulary of
`vllm bench serve` (completed, failed, request throughput, output tokens/s, total tokens/s, and
mean / p50 / p99 of TTFT, TPOT, ITL and end-to-end latency).

Targets, measured in one run on this machine with the same model and thread count:
  stack   the whole parley stack over HTTP/SSE (gateway → infer-gateway → worker), at
          concurrency 1, 4, 16 and 64;
  worker  the worker alone, driven over NATS by parley-loadgen (no gateway, no infer-gateway),
          at the same concurrencies: the difference is what the gateway path costs;
  llama.cpp  the OpenAI-compatible server of the llama-cpp-python package at concurrency 1
          (it serves one request at a time: the anchor for single-stream latency only), and
          llama.cpp's own server (llama-server, one slot per concurrent request, continuous
          batching; built from the llama-cpp-python source package by
          bench/build_llama_server.sh) at every level above 1.

    python3 bench/bench_serve.py [--threads 2] [--max-tokens 64] [--levels 1,4,16,64]
                                 [--device cpu|cuda:N] [--llama-server PATH]

The HTTP client is ours (threads + http.client, SSE parsed by hand); each output chunk's
arrival time gives TTFT and ITL; TPOT = (E2EL − TTFT) / (output tokens − 1).
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import parley_stack as ps  # noqa: E402

PROMPT = "Tell me about the history of the bicycle."


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


DELIVERY = "parley_gateway_token_delivery_seconds"


def delivery_buckets(admin_port):
    """The gateway's token-delivery histogram now: {upper bound (s): cumulative count}."""
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(DELIVERY + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def delivery_stats(before, after):
    """Count and the bucket bounds under which 50% and 99% of the tokens delivered between two
    scrapes arrived (a histogram gives bounds, not exact quantiles)."""
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = delta[-1][1] if delta else 0
    bound = {}
    for q in (50, 99):
        bound[q] = next((le for le, c in delta if total and c >= total * q / 100), float("nan"))
    return {"tokens": int(total), "p50_le": bound[50], "p99_le": bound[99]}


def summarize(results, wall):
    ok = [r for r in results if r["ok"]]
    out_toks = sum(r["output_tokens"] for r in ok)
    in_toks = sum(r["prompt_tokens"] for r in ok)
    ttft = [r["ttft"] for r in ok]
    e2el = [r["e2el"] for r in ok]
    itl = [x for r in ok for x in r["itl"]]
    tpot = [(r["e2el"] - r["ttft"]) / (r["output_tokens"] - 1) for r in ok
            if r["output_tokens"] > 1]

    def stats(xs):
        return {"mean": statistics.mean(xs) if xs else float("nan"), "p50": pct(xs, 50),
                "p99": pct(xs, 99)}
    errors = {}
    for x in results:
        if not x["ok"]:
            errors[x.get("error", "?")] = errors.get(x.get("error", "?"), 0) + 1
    return {"completed": len(ok), "failed": len(results) - len(ok), "errors": errors,
            "req_per_s": len(ok) / wall, "output_tok_per_s": out_toks / wall,
            "total_tok_per_s": (out_toks + in_toks) / wall, "ttft": stats(ttft),
            "tpot": stats(tpot), "itl": stats(itl), "e2el": stats(e2el), "wall_s": wall}


def http_one(host, port, path, key, model, max_tokens, n):
    body = json.dumps({"model": model, "stream": True, "max_tokens": max_tokens,
                       "temperature": 0, "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": f"{PROMPT} (request {n})"}]})
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    r = {"ok": False, "ttft": 0.0, "e2el": 0.0, "itl": [], "prompt_tokens": 0,
         "output_tokens": 0}
    t0 = time.perf_counter()
    try:
        c = http.client.HTTPConnection(host, port, timeout=300)
        c.request("POST", path, body=body, headers=headers)
        resp = c.getresponse()
        if resp.status != 200:
            r["error"] = f"HTTP {resp.status}: {resp.read()[:200]!r}"
            return r
        first = last = None
        buf = b""
        chunks = 0
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            data = line[6:]
            if data == b"[DONE]":
                break
            ev = json.loads(data)
            now = time.perf_counter()
            if ev.get("usage"):
                r["prompt_tokens"] = ev["usage"]["prompt_tokens"]
                r["output_tokens"] = ev["usage"]["completion_tokens"]
            ch = ev.get("choices") or []
            if ch and ch[0].get("delta", {}).get("content"):
                chunks += 1
                if first is None:
                    first = now
                else:
                    r["itl"].append(now - last)
                last = now
        del buf
        c.close()
        if first is not None:
            r.update(ok=True, ttft=first - t0, e2el=last - t0)
            if not r["output_tokens"]:
                r["output_tokens"] = chunks
    except (OSError, http.client.HTTPException, ValueError) as e:
        r["error"] = f"{type(e).__name__}: {e}"
    if not r["ok"] and "error" not in r:
        r["error"] = "the stream ended without a token"
    return r


def run_http(host, port, path, key, model, conc, n_req, max_tokens):
    results, lock, nxt = [], threading.Lock(), [0]

    def client():
        while True:
            with lock:
                if nxt[0] >= n_req:
                    return
                n = nxt[0]
                nxt[0] += 1
            res = http_one(host, port, path, key, model, max_tokens, n)
            with lock:
                results.append(res)
    t0 = time.perf_counter()
    ts = [threading.Thread(target=client) for _ in range(conc)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return summarize(results, time.perf_counter() - t0)


def run_direct(stack, conc, n_req, max_tokens):
    exe = stack.build / "bin" / "parley-loadgen"
    t0 = time.perf_counter()
    p = subprocess.run([str(exe), "--nats-url", stack.nats_url, "--model", ps.MODEL_NAME,
                        "--concurrency", str(conc), "--requests", str(n_req), "--max-tokens",
                        str(max_tokens), "--prompt", PROMPT], capture_output=True, text=True,
                       timeout=1800)
    wall = time.perf_counter() - t0
    results = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    return summarize(results, wall)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_anchor(argv, port, what, runs, max_tokens):
    """Starts an anchor server (argv, listening on port), waits for /v1/models, warms it up,
    then runs run_http for each (concurrency, requests) in runs; {conc: figures}, or
    {"skipped": why} when it does not start."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            r = ps.http_request(f"http://127.0.0.1:{port}/v1/models", timeout=1)
            if r is not None and r.status == 200:
                break
            if proc.poll() is not None:
                return {"skipped": f"{what} exited with status {proc.returncode}"}
            time.sleep(0.5)
        else:
            return {"skipped": f"{what} did not start"}
        run_http("127.0.0.1", port, "/v1/chat/completions", None, ps.MODEL_NAME, 1, 1,
                 max_tokens)  # warm-up
        return {conc: run_http("127.0.0.1", port, "/v1/chat/completions", None, ps.MODEL_NAME,
                               conc, n_req, max_tokens) for conc, n_req in runs}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_llama_server(model, threads, n_req, max_tokens):
    """llama-cpp-python's server: one request at a time, the anchor at concurrency 1."""
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as e:
        return {"skipped": f"llama-cpp-python[server] not installed ({e})"}
    port = free_port()
    out = serve_anchor([sys.executable, "-m", "llama_cpp.server", "--model", str(model),
                        "--n_threads", str(threads), "--n_ctx", "2048", "--port", str(port),
                        "--host", "127.0.0.1", "--model_alias", ps.MODEL_NAME],
                       port, "llama_cpp.server", [(1, n_req)], max_tokens)
    return out.get(1, out)


def run_llama_multislot(exe, model, threads, runs, max_tokens):
    """llama.cpp's own server (bench/build_llama_server.sh): one slot per concurrent request,
    continuous batching, 512 tokens of context per slot; the anchor above concurrency 1.
    {conc: figures}, or {"skipped": why}."""
    if not exe or not os.access(exe, os.X_OK):
        return {"skipped": f"no llama-server at {exe} (bash bench/build_llama_server.sh)"}
    slots = max(conc for conc, _ in runs)
    port = free_port()
    return serve_anchor([str(exe), "-m", str(model), "-t", str(threads), "-np", str(slots),
                         "-c", str(512 * slots), "-cb", "--host", "127.0.0.1", "--port",
                         str(port), "-a", ps.MODEL_NAME],
                        port, "llama-server", runs, max_tokens)


def fmt_row(name, s):
    if "skipped" in s:
        return f"{name:<22} skipped: {s['skipped']}"
    ms = lambda d: f"{d['mean']*1e3:7.1f} {d['p50']*1e3:7.1f} {d['p99']*1e3:7.1f}"
    return (f"{name:<22} {s['completed']:>4} {s['failed']:>4} {s['req_per_s']:7.2f} "
            f"{s['output_tok_per_s']:8.1f} {s['total_tok_per_s']:8.1f} | {ms(s['ttft'])} | "
            f"{ms(s['tpot'])} | {ms(s['itl'])} | {ms(s['e2el'])}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--levels", default="1,4,16,64")
    ap.add_argument("--min-requests", type=int, default=8,
                    help="requests per level at least (each level sends max(this, 4 x concurrency))")
    ap.add_argument("--device", default="cpu",
                    help="the worker's device: cpu, or cuda:N with PARLEY_BUILD=build-cuda "
                         "(the llama.cpp anchor stays on the CPU)")
    ap.add_argument("--llama-server", default=os.environ.get("PARLEY_LLAMA_SERVER") or
                    str(ROOT / "build" / "anchor" / "llama-server"),
                    help="llama.cpp's server binary, the anchor above concurrency 1 "
                         "(bench/build_llama_server.sh builds it)")
    ap.add_argument("--json", help="also write all figures to this file")
    a = ap.parse_args()
    levels = [int(x) for x in a.levels.split(",")]
    model = ps.ensure_model()
    work = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    os.chmod(work, 0o755)
    max_conc = max(levels)
    stack = ps.Stack(var_dir=work / "stack", ports=ps.Ports.pick_free(), model_path=model,
                     durable=False, die_with_parent=True, log_level="warn",
                     extra_args={"worker": ["--max-seqs", str(max_conc), "--threads",
                                            str(a.threads), "--kv-budget", "1G",
                                            "--device", a.device],
                                 "infer-gateway": ["--queue-size", "1024"],
                                 # every client is 127.0.0.1: the per-address connection cap
                                 # (64 by default) would reset connections at c=64
                                 "gateway": ["--max-conns-per-ip", "1024"]})
    rows, figures = [], {}
    try:
        stack.start(timeout=90)
        ps.wait_until(lambda: (stack.gateway("/v1/models") or ps.Response(0, {}, b"")).status
                      == 200, 30, what="gateway")
        time.sleep(2)
        host, port = "127.0.0.1", stack.ports.http
        run_http(host, port, "/v1/chat/completions", stack.api_key(), ps.MODEL_NAME, 1, 2,
                 a.max_tokens)  # warm-up
        for conc in levels:
            n_req = max(a.min_requests, 4 * conc)
            before = delivery_buckets(stack.ports.admin("gateway"))
            s = run_http(host, port, "/v1/chat/completions", stack.api_key(), ps.MODEL_NAME,
                         conc, n_req, a.max_tokens)
            s["delivery"] = delivery_stats(before, delivery_buckets(stack.ports.admin("gateway")))
            figures[f"stack c={conc}"] = s
            rows.append(fmt_row(f"parley stack c={conc}", s))
            d = run_direct(stack, conc, n_req, a.max_tokens)
            figures[f"worker c={conc}"] = d
            rows.append(fmt_row(f"parley worker c={conc}", d))
    finally:
        stack.stop(timeout=15)
        shutil.rmtree(work, ignore_errors=True)
    ll = run_llama_server(model, a.threads, 4, a.max_tokens)
    figures["llama.cpp c=1"] = ll
    rows.append(fmt_row("llama-cpp-python c=1", ll))
    multi_runs = [(conc, max(a.min_requests, 4 * conc)) for conc in levels if conc > 1]
    if multi_runs:
        ms = run_llama_multislot(a.llama_server, model, a.threads, multi_runs, a.max_tokens)
        for conc, _ in multi_runs:
            f = ms.get(conc, ms)
            figures[f"llama-server c={conc}"] = f
            rows.append(fmt_row(f"llama-server c={conc}", f))

    print(f"\nbench-serve: SmolLM2-135M-Instruct Q4_1 on {a.device}, {a.threads} threads, "
          f"max_tokens {a.max_tokens}, temperature 0")
    print(f"{'target':<22} {'done':>4} {'fail':>4} {'req/s':>7} {'out t/s':>8} {'tot t/s':>8} | "
          f"{'TTFT ms mean/p50/p99':^23} | {'TPOT ms':^23} | {'ITL ms':^23} | {'E2EL ms':^23}")
    for r in rows:
        print(r)
    for name, f in figures.items():
        for why, n in (f.get("errors") or {}).items():
            print(f"  {name}: {n} failed: {why}")
    one = figures.get("stack c=1")
    sixteen = figures.get("stack c=16")
    if one and sixteen:
        print(f"\naggregate output tok/s at c=16 vs c=1: "
              f"{sixteen['output_tok_per_s'] / one['output_tok_per_s']:.2f}x")
    for conc in levels:
        s, d = figures.get(f"stack c={conc}"), figures.get(f"worker c={conc}")
        if s and d and d["output_tok_per_s"] > 0:
            dl = s.get("delivery") or {}
            print(f"c={conc}: stack/worker throughput {s['output_tok_per_s'] / d['output_tok_per_s']:.3f}, "
                  f"ITL p99 stack − worker {(s['itl']['p99'] - d['itl']['p99']) * 1e3:+.2f} ms; "
                  f"token delivery worker → client socket (gateway histogram, "
                  f"{dl.get('tokens', 0)} tokens): p50 ≤ {dl.get('p50_le', float('nan')) * 1e3:g} ms, "
                  f"p99 ≤ {dl.get('p99_le', float('nan')) * 1e3:g} ms")
    if "skipped" not in ll and one:
        print(f"c=1 vs llama.cpp: TTFT {one['ttft']['mean'] * 1e3:.1f} vs "
              f"{ll['ttft']['mean'] * 1e3:.1f} ms, output tok/s {one['output_tok_per_s']:.1f} vs "
              f"{ll['output_tok_per_s']:.1f}")
    for conc, _ in multi_runs:
        s, m = figures.get(f"stack c={conc}"), figures.get(f"llama-server c={conc}")
        if s and m and "skipped" not in m and m["output_tok_per_s"] > 0:
            print(f"c={conc} vs llama-server ({conc} slots): output tok/s "
                  f"{s['output_tok_per_s']:.1f} vs {m['output_tok_per_s']:.1f} "
                  f"({s['output_tok_per_s'] / m['output_tok_per_s']:.2f}x), TTFT p50 "
                  f"{s['ttft']['p50'] * 1e3:.1f} vs {m['ttft']['p50'] * 1e3:.1f} ms")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
