#!/usr/bin/env python3
"""make_quant_golden.py — golden dequantised values for the engine's tensor types.

Writes tests/golden/quant/<type>.bin for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K:
random blocks (every f16 scale field rewritten to a finite value, so the expected output is
finite) plus hand-picked edge blocks (zero scales, the largest and smallest halves, negative
scales, all-zero and all-one quant bits), and what the `gguf` Python package (llama.cpp's own
gguf-py, numpy dequantisers) makes of them. The unit test test_quant_k.c:quant_golden_dequant
checks the engine's scalar references (and so, transitively, the fast paths) against them.

File format (little-endian): b"PQG1", uint32 ggml type id, uint32 block count, uint32 values per
block, uint32 bytes per block, then the raw blocks, then count*values float32 results.

Usage: pip install gguf numpy; python3 tests/golden/quant/make_quant_golden.py
Deterministic (fixed seed): rerunning reproduces the committed files byte for byte.
"""
import os
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES

OUT = os.path.dirname(os.path.abspath(__file__))

# type -> (name, number of random blocks, byte offsets of f16 scale fields in a block)
TYPES = {
    T.Q4_0: ("q4_0", 96, [0]),
    T.Q4_1: ("q4_1", 96, [0, 2]),
    T.Q5_0: ("q5_0", 96, [0]),
    T.Q5_1: ("q5_1", 96, [0, 2]),
    T.Q8_0: ("q8_0", 96, [0]),
    T.Q4_K: ("q4_K", 12, [0, 2]),
    T.Q5_K: ("q5_K", 12, [0, 2]),
    T.Q6_K: ("q6_K", 12, [208]),
}

# Edge halves: 0, -0, 65504, -65504, smallest subnormal, smallest normal, 1.0, -1.0
EDGE_HALVES = [0x0000, 0x8000, 0x7BFF, 0xFBFF, 0x0001, 0x0400, 0x3C00, 0xBC00]


def rand_half(rng):
    """A finite half: random sign, magnitude 2^-20 .. 2^4 (as the unit tests use)."""
    mag = (1.0 + rng.random()) * 2.0 ** int(rng.integers(-20, 4))
    return np.float16(-mag if rng.random() < 0.5 else mag).view(np.uint16)


def blocks_for(t, n_random, scale_offs, rng):
    _, bsize = GGML_QUANT_SIZES[t]
    out = []
    for _ in range(n_random):
        b = bytearray(rng.integers(0, 256, bsize, dtype=np.uint8).tobytes())
        for off in scale_offs:
            struct.pack_into("<H", b, off, int(rand_half(rng)))
        out.append(bytes(b))
    # edge blocks: each edge half in every scale field, over all-zero / all-one / random quants
    for fill in (0x00, 0xFF, None):
        for h in EDGE_HALVES:
            if fill is None:
                b = bytearray(rng.integers(0, 256, bsize, dtype=np.uint8).tobytes())
            else:
                b = bytearray([fill]) * bsize
            for off in scale_offs:
                struct.pack_into("<H", b, off, h)
            out.append(bytes(b))
    return b"".join(out)


def main():
    rng = np.random.default_rng(20261125)
    for t, (name, n_random, offs) in TYPES.items():
        blk, bsize = GGML_QUANT_SIZES[t]
        raw = blocks_for(t, n_random, offs, rng)
        nb = len(raw) // bsize
        vals = quants.dequantize(np.frombuffer(raw, dtype=np.uint8).reshape(nb, bsize), t)
        vals = np.asarray(vals, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(vals)):
            sys.exit(f"{name}: non-finite golden values")
        path = os.path.join(OUT, f"{name}.bin")
        with open(path, "wb") as f:
            f.write(b"PQG1" + struct.pack("<4I", int(t), nb, blk, bsize))
            f.write(raw)
            f.write(vals.astype("<f4").tobytes())
        print(f"{path}: {nb} blocks")


if __name__ == "__main__":
    main()
