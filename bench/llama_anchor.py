"""llama_anchor — the llama.cpp side of `make bench-engine`, through llama-cpp-python.

Measures what llama-bench measures, in its convention: pp<P> = one P-token prefill of a fresh
context (tokens/s), tg<N> = N single-token decode steps (tokens/s), mean ± sd over --reps runs
after one warm-up, random token ids, no tokenisation or sampling in the timing. Prints one JSON
object on stdout so bench_engine.py can put the figures next to parley's.

With --batch 1,4,16 it also measures batched decode as parley-bench does: B sequences in one
context (a KV stream per sequence: kv_unified off, which ran 1.2x faster at 16 sequences than
the unified cache), each given a --batch-prompt-token prefix (not timed),
then --batch-steps llama_decode calls that each decode one random token for all B sequences
with logits for every one; aggregate tokens/s = B * steps / time. -p 0 -n 0 skips the
single-stream tests.

    python3 bench/llama_anchor.py --model M.gguf --threads 2 [--reps 5] [-p 512] [-n 128]
                                  [--batch 1,4,16] [--batch-prompt 32] [--batch-steps 32]
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
    ap.add_argument("--batch", default="")
    ap.add_argument("--batch-prompt", type=int, default=32)
    ap.add_argument("--batch-steps", type=int, default=32)
    a = ap.parse_args()
    try:
        import llama_cpp
    except ImportError:
        print(json.dumps({"error": "llama-cpp-python is not installed"}))
        return 2

    rng = random.Random(1234)
    out = {"engine": "llama.cpp", "version": getattr(llama_cpp, "__version__", "?"),
           "threads": a.threads}
    if a.p > 0 or a.n > 0:  # -p 0 -n 0: batched decode only
        out.update(single_stream(llama_cpp, a, rng))
    batches = [int(b) for b in a.batch.split(",") if b]
    if batches:
        out.update(batched_rounds(llama_cpp, a, batches, rng))
    print(json.dumps(out))
    return 0


def single_stream(llama_cpp, a, rng):
    """pp<p> and tg<n> (either skipped at 0): mean and sd of --reps runs after a warm-up."""
    n_batch = max(a.p, 1)
    llm = llama_cpp.Llama(model_path=a.model, n_ctx=max(a.p, a.n) + 16, n_batch=n_batch,
                          n_ubatch=n_batch, n_threads=a.threads, n_threads_batch=a.threads,
                          logits_all=False, verbose=False)
    n_vocab = llm.n_vocab()

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

    out = {}
    for name, fn, n in (("pp%d" % a.p, run_pp, a.p), ("tg%d" % a.n, run_tg, a.n)):
        if n <= 0:
            continue
        fn()  # warm-up
        xs = [fn() for _ in range(a.reps)]
        out[name] = {"mean": statistics.mean(xs),
                     "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0}
    return out


def batched_rounds(L, a, batches, rng):
    """Aggregate tokens/s of each batch size over max(3, --reps) rounds that take every size in
    turn (as parley-bench does, so that a drifting machine favours no size), after a warm-up;
    with x1 among them, each size's gain is the median of the rounds' ratios to x1."""
    runners = {}
    try:
        for b in batches:
            runners[b] = batched_decode(L, a, b, rng)
            runners[b][0]()  # warm-up
        rounds = max(3, a.reps)
        xs = {b: [] for b in batches}
        for _ in range(rounds):
            for b in batches:
                xs[b].append(runners[b][0]())
    finally:
        for _, close in runners.values():
            close()
    out = {}
    for b in batches:
        out["decode x%d" % b] = {"mean": statistics.mean(xs[b]), "sd": statistics.stdev(xs[b])}
        if 1 in xs and b > 1:
            out["decode x%d" % b]["gain_median"] = statistics.median(
                x / y for x, y in zip(xs[b], xs[1]))
    return out


def batched_decode(L, a, n_seq, rng):
    """(run, close): run() decodes n_seq sequences together and returns aggregate tokens/s."""
    mparams = L.llama_model_default_params()
    model = L.llama_model_load_from_file(a.model.encode(), mparams)
    if not model:
        raise RuntimeError("llama.cpp could not load " + a.model)
    per_seq = a.batch_prompt + a.batch_steps + 8
    cparams = L.llama_context_default_params()
    cparams.n_ctx = n_seq * per_seq
    cparams.n_batch = cparams.n_ubatch = max(512, a.batch_prompt)
    cparams.n_seq_max = n_seq
    cparams.n_threads = cparams.n_threads_batch = a.threads
    cparams.kv_unified = False
    ctx = L.llama_init_from_model(model, cparams)
    if not ctx:
        raise RuntimeError("llama.cpp could not make a context for %d sequences" % n_seq)
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    cap = max(n_seq, a.batch_prompt)
    batch = L.llama_batch_init(cap, 0, 1)

    def fill(items):
        """items: (token, pos, seq, want_logits) tuples → the batch."""
        batch.n_tokens = len(items)
        for i, (tok, pos, seq, want) in enumerate(items):
            batch.token[i] = tok
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = 1 if want else 0

    def decode(items):
        fill(items)
        if L.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    def run():
        L.llama_memory_clear(L.llama_get_memory(ctx), True)
        for s in range(n_seq):
            decode([(rng.randrange(n_vocab), p, s, p == a.batch_prompt - 1)
                    for p in range(a.batch_prompt)])
        t0 = time.perf_counter()
        for step in range(a.batch_steps):
            decode([(rng.randrange(n_vocab), a.batch_prompt + step, s, True)
                    for s in range(n_seq)])
        return n_seq * a.batch_steps / (time.perf_counter() - t0)

    def close():
        L.llama_batch_free(batch)
        L.llama_free(ctx)
        L.llama_model_free(model)

    return run, close


if __name__ == "__main__":
    sys.exit(main())
