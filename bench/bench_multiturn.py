"""bench_multiturn — `make bench-multiturn`: time to first token of the tenth turn of a
conversation, with and without prefix caching in the worker (goal: at least 3x faster with it).

Each conversation is ten turns over the OpenAI-compatible API of the whole stack (gateway →
infer-gateway → worker, streaming): every request carries the history so far (the worker's
chat template renders it, so turn N's prompt is a token prefix of turn N+1's), answers are
greedy with up to --max-tokens tokens. The same conversations run twice on the same stack: with
the worker's prefix cache (the default) and after restarting the worker with
--no-prefix-cache. Reported per mode: turn-10 TTFT (median and each conversation), its prompt
tokens, the prompt tokens the cache supplied (from the worker's /metrics), and whether the
greedy answers of every turn were identical in both modes.

    python3 bench/bench_multiturn.py [--threads 2] [--conversations 3] [--max-tokens 48]
"""

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import parley_stack as ps  # noqa: E402

TURNS = 10
TOPICS = ["bicycles", "bread baking", "the moon", "volcanoes", "chess", "honey bees"]
ASKS = ["Tell me one fact about {t}.", "Why is that interesting?", "Give another example.",
        "How would you explain it to a child?", "What is a common mistake about it?",
        "Name a related word.", "Summarise what you said so far.", "What else should I read?",
        "Can you say it more briefly?", "What is the single most important point about {t}?"]


def stream_chat(port, key, messages, max_tokens):
    """One streamed request: (ttft seconds, answer text, prompt tokens)."""
    body = json.dumps({"model": ps.MODEL_NAME, "stream": True, "max_tokens": max_tokens,
                       "temperature": 0, "stream_options": {"include_usage": True},
                       "messages": messages})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    t0 = time.perf_counter()
    c.request("POST", "/v1/chat/completions", body=body,
              headers={"Content-Type": "application/json", "Authorization": "Bearer " + key})
    resp = c.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    ttft, text, prompt = None, "", 0
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        if line[6:] == b"[DONE]":
            break
        ev = json.loads(line[6:])
        if ev.get("usage"):
            prompt = ev["usage"]["prompt_tokens"]
        ch = ev.get("choices") or []
        if ch and (ch[0].get("delta") or {}).get("content"):
            if ttft is None:
                ttft = time.perf_counter() - t0
            text += ch[0]["delta"]["content"]
    c.close()
    if ttft is None:  # an empty answer: its end is its first token
        ttft = time.perf_counter() - t0
    return ttft, text, prompt


def worker_metric(stack, name):
    r = ps.http_request(stack["worker"].admin_url("/metrics"))
    total = 0.0
    for line in (r.text if r else "").splitlines():
        m = re.match(r'^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$', line)
        if m and m.group(1) == name:
            total += float(m.group(3))
    return total


def run_mode(stack, n_conv, max_tokens):
    """Runs the conversations; per conversation, per turn: ttft, prompt tokens, hit tokens."""
    out = []
    for i in range(n_conv):
        topic = TOPICS[i % len(TOPICS)]
        msgs, turns = [], []
        for n in range(TURNS):
            msgs.append({"role": "user", "content": ASKS[n].format(t=topic)})
            h0 = worker_metric(stack, "parley_prefix_cache_hits_total")
            ttft, text, prompt = stream_chat(stack.ports.http, stack.api_key(), msgs, max_tokens)
            hit = worker_metric(stack, "parley_prefix_cache_hits_total") - h0
            turns.append({"ttft": ttft, "prompt_tokens": prompt, "cached_tokens": int(hit),
                          "answer": text})
            msgs.append({"role": "assistant", "content": text})
        out.append(turns)
    return out


def restart_worker(stack, args):
    stack.stop(["worker"])
    stack.extra_args["worker"] = args
    stack.start(["worker"], timeout=90)
    ps.wait_until(lambda: (stack.gateway("/v1/models") or ps.Response(0, {}, b"")).status == 200
                  and ps.MODEL_NAME in (stack.gateway("/v1/models").text or ""), 60,
                  what="the model listed")
    time.sleep(1.5)  # a heartbeat round, so the infer-gateway routes to the new worker


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--conversations", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--json", help="also write all figures to this file")
    a = ap.parse_args()
    model = ps.ensure_model()
    work = Path(tempfile.mkdtemp(prefix="parley-bench-mt-"))
    os.chmod(work, 0o755)
    base = ["--threads", str(a.threads), "--kv-budget", "256M"]
    stack = ps.Stack(var_dir=work / "stack", ports=ps.Ports.pick_free(), model_path=model,
                     durable=False, die_with_parent=True, log_level="warn",
                     extra_args={"worker": base})
    figures = {}
    try:
        stack.start(timeout=90)
        restart_worker(stack, base)
        stream_chat(stack.ports.http, stack.api_key(),
                    [{"role": "user", "content": "Hello"}], 4)  # warm-up
        figures["on"] = run_mode(stack, a.conversations, a.max_tokens)
        restart_worker(stack, base + ["--no-prefix-cache"])
        stream_chat(stack.ports.http, stack.api_key(),
                    [{"role": "user", "content": "Hello"}], 4)
        figures["off"] = run_mode(stack, a.conversations, a.max_tokens)
    finally:
        stack.stop(timeout=15)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nbench-multiturn: SmolLM2-135M-Instruct Q4_1, {a.threads} threads, "
          f"{a.conversations} conversations x {TURNS} turns, max_tokens {a.max_tokens}, "
          f"temperature 0, whole stack over HTTP/SSE")
    print(f"{'turn':>4} | {'prompt':>6} | {'cached (on)':>11} | {'TTFT on ms':>10} | "
          f"{'TTFT off ms':>11} | {'speed-up':>8}")
    for n in range(TURNS):
        on = [c[n] for c in figures["on"]]
        off = [c[n] for c in figures["off"]]
        t_on = statistics.median(x["ttft"] for x in on) * 1e3
        t_off = statistics.median(x["ttft"] for x in off) * 1e3
        print(f"{n + 1:>4} | {statistics.median(x['prompt_tokens'] for x in on):>6.0f} | "
              f"{statistics.median(x['cached_tokens'] for x in on):>11.0f} | {t_on:>10.1f} | "
              f"{t_off:>11.1f} | {t_off / t_on:>7.2f}x")
    on10 = [c[TURNS - 1]["ttft"] * 1e3 for c in figures["on"]]
    off10 = [c[TURNS - 1]["ttft"] * 1e3 for c in figures["off"]]
    same = all(x["answer"] == y["answer"] for c_on, c_off in zip(figures["on"], figures["off"])
               for x, y in zip(c_on, c_off))
    hits_off = sum(x["cached_tokens"] for c in figures["off"] for x in c)
    ratio = statistics.median(off10) / statistics.median(on10)
    print(f"\nturn {TURNS} TTFT with prefix caching: median {statistics.median(on10):.1f} ms "
          f"({', '.join(f'{x:.1f}' for x in on10)}); without: median "
          f"{statistics.median(off10):.1f} ms ({', '.join(f'{x:.1f}' for x in off10)})")
    print(f"turn {TURNS} speed-up: {ratio:.2f}x (goal >= 3x: {'met' if ratio >= 3 else 'NOT met'})")
    print(f"answers identical with and without the cache: {same}; cache hits with it off: "
          f"{hits_off}")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
