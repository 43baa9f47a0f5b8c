"""llama_anchor — the llama.cpp side of `make bench-engine`, through llama-cpp-python.

Measures what llama-bench measures, in its convention: pp<P> = one P-token prefill of a fresh
context (tokens/s), tg<N> = N single-token decode steps (tokens/s), mean ± sd over --reps runs
after one warm-up, random token ids, no tokenisation or sampling in the timing. Prints one JSON
object on stdout so bench_engine.py can put the figures next to parley's.

    python3 bench/llama_anchor.py --model M.gguf --threads 2 [--reps 5] [-p 512] [-n 128]
"""

import argparse
import json
import random
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    a = ap.parse_args()
    try:
        import llama_cpp
    except ImportError:
        print(json.dumps({"error": "llama-cpp-python is not installed"}))
        return 2

    llm = llama_cpp.Llama(model_path=a.model, n_ctx=max(a.p, a.n) + 16, n_batch=a.p,
                          n_ubatch=a.p, n_threads=a.threads, n_threads_batch=a.threads,
                          logits_all=False, verbose=False)
    n_vocab = llm.n_vocab()
    rng = random.Random(1234)

    def run_pp():
        toks = [rng.randrange(n_vocab) for _ in range(a.p)]
        llm.reset()
        llm._ctx.memory_clear(True) if hasattr(llm._ctx, "memory_clear") else None
        t0 = time.perf_counter()
        llm.eval(toks)
        return a.p / (time.perf_counter() - t0)

    def run_tg():
        llm.reset()
        llm._ctx.memory_clear(True) if hasattr(llm._ctx, "memory_clear") else None
        t0 = time.perf_counter()
        for _ in range(a.n):
            llm.eval([rng.randrange(n_vocab)])
        return a.n / (time.perf_counter() - t0)

    out = {"engine": "llama.cpp", "version": getattr(llama_cpp, "__version__", "?"),
           "threads": a.threads}
    for name, fn in (("pp%d" % a.p, run_pp), ("tg%d" % a.n, run_tg)):
        fn()  # warm-up
        xs = [fn() for _ in range(a.reps)]
        out[name] = {"mean": statistics.mean(xs),
                     "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
