"""bench_engine — `make bench-engine`: parley's inference engine next to llama.cpp, same model,
same machine, same thread count, in one run.

Both sides use llama-bench's convention: pp512 = one 512-token prefill (tokens/s), tg128 = 128
single-token decode steps (tokens/s), after a warm-up, random token ids, no tokenisation or
sampling in the timing; the two tools run in turn over 3 rounds (the ratio is the median of
the rounds' ratios), so a machine whose speed drifts over minutes favours neither. Batched
decode at 1/4/16/64 sequences (aggregate tokens/s: a 32-token prefix per sequence, then 32
steps of one token for every sequence) is measured on both sides the same way, llama.cpp's up
to 16 sequences, each next to its own single-sequence rate: both tools run every batch size in
turn per round, and the gain over one sequence is the median of the rounds' ratios; parley
also reports its peak RSS. The llama.cpp side is llama-cpp-python built from source with
native CPU flags (`CMAKE_ARGS=-DGGML_NATIVE=ON pip install --no-binary
llama-cpp-python llama-cpp-python`); without it the anchor column says so.

Models: both that `make run` serves, SmolLM2-135M-Instruct Q4_1 and Gemma 3 270M Q4_K_M (fetched
like `parleyctl model` fetches them), one table each; --model PATH benchmarks that file alone.

    python3 bench/bench_engine.py [--threads N] [--model PATH] [--reps 5]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import parley_stack as ps  # noqa: E402


def parley_bench(build, model, threads, reps, extra):
    p = subprocess.run([str(build / "bin" / "parley-bench"), "--model", str(model), "--threads",
                        str(threads), "--reps", str(reps), *extra],
                       capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise SystemExit(f"parley-bench failed: {p.stderr.strip()}")
    rows = {}
    for line in p.stdout.splitlines():
        m = re.match(r"^\|\s*([^|]+?)\s*\|\s*([\d.]+) ± ([\d.]+)", line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), float(m.group(3)))
        g = re.match(r"^\|\s*([^|]+?)\s*\|.*\(([\d.]+)x single; rounds ([\d.]+)\.\.([\d.]+)\)",
                     line)
        if g:
            rows[g.group(1) + " gain"] = (float(g.group(2)), float(g.group(3)), float(g.group(4)))
    rss = re.search(r"peak RSS: .*", p.stdout)
    return rows, rss.group(0) if rss else "", p.stdout


def llama_anchor(model, threads, reps, extra):
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "llama_anchor.py"), "--model",
                        str(model), "--threads", str(threads), "--reps", str(reps), *extra],
                       capture_output=True, text=True, timeout=3600)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": (p.stderr or p.stdout).strip()[-300:]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--model", default=None)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    models = [Path(a.model)] if a.model else [ps.ensure_model(), ps.ensure_model2()]
    for model in models:
        bench_model(model, a)
    return 0


ROUNDS = 3  # pp512 / tg128: llama.cpp, then parley, this many times in turn


def mean_sd(xs):
    return f"{statistics.mean(xs):8.2f} ± {statistics.stdev(xs):6.2f}" if len(xs) > 1 else "n/a"


def bench_model(model, a):
    build = ps.default_build_dir()
    # pp512 and tg128 in rounds, llama.cpp then parley, each tool alone on the machine while it
    # runs: a machine whose speed drifts over minutes then favours neither, and the ratio is the
    # median of the rounds' ratios. Batched decode: one run of each, every batch size in turn
    # inside it (see parley-bench and llama_anchor.py).
    reps = max(2, (a.reps + ROUNDS - 1) // ROUNDS)
    single = {"pp512": ([], [], []), "tg128": ([], [], [])}  # ours, theirs, ratios
    anchor_error = None
    for _ in range(ROUNDS):
        theirs = llama_anchor(model, a.threads, reps, ["-p", "512", "-n", "128"])
        ours, _, _ = parley_bench(build, model, a.threads, reps,
                                  ["-p", "512", "-n", "128", "--batch", ""])
        anchor_error = theirs.get("error", anchor_error)
        for test, (o, t, r) in single.items():
            if test in ours:
                o.append(ours[test][0])
            if test in theirs:
                t.append(theirs[test]["mean"])
            if test in ours and test in theirs:
                r.append(ours[test][0] / theirs[test]["mean"])
    anchor = llama_anchor(model, a.threads, a.reps, ["-p", "0", "-n", "0", "--batch", "1,4,16"])
    rows, rss, _ = parley_bench(build, model, a.threads, a.reps,
                                  ["-p", "0", "-n", "0", "--batch", "1,4,16,64"])
    print(f"\nbench-engine: {model.name}, {a.threads} threads; pp512 / tg128: {ROUNDS} rounds of "
          f"{reps} runs each, llama.cpp and parley in turn; batched: {max(3, a.reps)} rounds")
    print(f"{'test':<24} {'parley t/s':>18} {'llama.cpp t/s':>18} {'ratio':>7}")
    for test, (o, t, r) in single.items():
        tt = mean_sd(t) if t else f"n/a ({(anchor_error or 'missing')[:40]})"
        ratio = (f"{statistics.median(r):6.2f}x   (rounds {min(r):.2f}..{max(r):.2f})"
                 if r else "")
        print(f"{test:<24} {mean_sd(o):>18} {tt:>18} {ratio}")
    for b in (1, 4, 16, 64):
        r = rows.get(f"decode x{b} (aggregate)")
        theirs = anchor.get(f"decode x{b}")
        if not r:
            continue
        o = f"{r[0]:8.2f} ± {r[1]:6.2f}"
        t = f"{theirs['mean']:8.2f} ± {theirs['sd']:6.2f}" if theirs else "n/a"
        ratio = f"{r[0] / theirs['mean']:6.2f}x" if theirs else ""
        extra = ""
        gain = rows.get(f"decode x{b} (aggregate) gain")
        if b > 1 and gain:
            # medians of per-round ratios: both tools take every batch size in turn per round
            extra = f"   ({gain[0]:.2f}x single, rounds {gain[1]:.2f}..{gain[2]:.2f}"
            if theirs and "gain_median" in theirs:
                extra += f"; llama.cpp {theirs['gain_median']:.2f}x"
            extra += ")"
        print(f"{'decode x%d aggregate' % b:<24} {o:>18} {t:>18} {ratio:>7}{extra}")
    print(rss)
    if "version" in anchor:
        print(f"anchor: llama-cpp-python {anchor['version']}")


if __name__ == "__main__":
    sys.exit(main())
