#!/usr/bin/env python3
"""reference_noise.py — how far llama.cpp's logits move between its own equally valid settings.

The golden logits (tests/golden/<model>/logits.jsonl, made by make_golden.py) come from
llama.cpp through llama-cpp-python with its defaults: flash attention off, F16 KV cache. This
script evaluates the same text with llama.cpp under other settings it ships (flash attention on;
an F32 KV cache) and prints the normalised mean squared error of each against the defaults, per
token position: the precision floor below which "matches the reference" stops meaning anything,
to read parley's own NMSE (test_engine.c golden tests) against.

    python3 tools/golden/reference_noise.py [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]
                                            [--tokens 400]
"""
import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def nmse_rows(a, b):
    return np.array([((a[i] - b[i]) ** 2).sum() / (b[i] ** 2).sum() for i in range(len(b))])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models",
                                                    "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--corpus", default=os.path.join(ROOT, "tests", "golden", "smollm2",
                                                     "corpus.txt"))
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    try:
        from llama_cpp import Llama
    except ImportError:
        print("skipped: llama-cpp-python is not installed")
        return 0
    text = open(a.corpus, encoding="utf-8").read()

    def run(**kw):
        llm = Llama(model_path=a.model, n_ctx=2048, n_threads=a.threads,
                    n_threads_batch=a.threads, n_batch=512, logits_all=True, verbose=False,
                    seed=0, **kw)
        ids = llm.tokenize(text.encode(), add_bos=False)[:a.tokens]
        llm.eval(ids)
        return np.array(llm.scores[:len(ids)], dtype=np.float64)

    base = run()  # the golden files' settings
    variants = {"flash attention on": {"flash_attn": True},
                "F32 KV cache": {"type_k": 0, "type_v": 0},
                "flash attention on + F32 KV": {"flash_attn": True, "type_k": 0, "type_v": 0}}
    print(f"llama.cpp against itself (defaults: flash attention off, F16 KV), "
          f"{len(base)} positions of {os.path.basename(a.corpus)}")
    print(f"{'variant':<32} {'NMSE mean':>11} {'median':>11} {'max':>11}")
    for name, kw in variants.items():
        e = nmse_rows(run(**kw), base)
        print(f"{name:<32} {e.mean():11.3e} {np.median(e):11.3e} {e.max():11.3e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
