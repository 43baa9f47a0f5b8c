#!/usr/bin/env python3
"""make_qwen2_probe.py — a qwen2-architecture GGUF for checking the engine's qwen2 forward pass
against llama.cpp when no real Qwen2 file is at hand.

It rewrites SmolLM2-135M-Instruct's GGUF as architecture "qwen2": the metadata keys "llama.*"
become "qwen2.*" (same values), and every layer gets the three tensors qwen2 has and llama lacks,
blk.N.attn_{q,k,v}.bias (F32, seeded normal values, sd 0.5). The weights are SmolLM2's, so the
model is no longer a good language model (qwen2 rotates NeoX-style halves, SmolLM2 was trained
with adjacent pairs), but both implementations must compute the same function of it. Then it
runs llama.cpp (llama-cpp-python) on a few prompts and writes the last-position logits.

    python3 tools/golden/make_qwen2_probe.py --smollm2 models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --out /tmp/qwen2-probe.gguf --logits /tmp/qwen2-probe.jsonl
"""

import argparse
import base64
import json
import struct

import numpy as np

SEED = 7
SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
PROMPTS = [[1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018,
            411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47,
            2, 198, 1, 520, 9531, 198],
           list(range(300, 364)), [42] * 5]


def parse(d):
    o = 4
    ver, nt, nk = struct.unpack_from("<IQQ", d, o)
    o += 20
    kvs = []

    def rstr(o):
        n, = struct.unpack_from("<Q", d, o)
        return d[o + 8:o + 8 + n], o + 8 + n

    def skip_val(t, o):
        if t == 8:
            return rstr(o)[1]
        if t == 9:
            et, n = struct.unpack_from("<IQ", d, o)
            o += 12
            for _ in range(n):
                o = skip_val(et, o)
            return o
        return o + SIZES[t]

    for _ in range(nk):
        k, o = rstr(o)
        t, = struct.unpack_from("<I", d, o)
        o += 4
        v0 = o
        o = skip_val(t, o)
        kvs.append((k, t, d[v0:o]))
    tensors = []
    for _ in range(nt):
        name, o = rstr(o)
        nd, = struct.unpack_from("<I", d, o)
        dims = struct.unpack_from("<%dQ" % nd, d, o + 4)
        o += 4 + 8 * nd
        ty, off = struct.unpack_from("<IQ", d, o)
        o += 12
        tensors.append((name, dims, ty, off))
    align = 32
    for k, t, v in kvs:
        if k == b"general.alignment":
            align, = struct.unpack_from("<I", v)
    data0 = (o + align - 1) // align * align
    return ver, kvs, tensors, align, data0


def gstr(b):
    return struct.pack("<Q", len(b)) + b


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smollm2", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--logits", required=True)
    a = ap.parse_args()
    d = open(a.smollm2, "rb").read()
    ver, kvs, tensors, align, data0 = parse(d)
    blob = bytearray(d[data0:])
    meta = {k: v for k, t, v in kvs}
    n_layer, = struct.unpack_from("<I", meta[b"llama.block_count"])
    n_embd, = struct.unpack_from("<I", meta[b"llama.embedding_length"])
    n_head, = struct.unpack_from("<I", meta[b"llama.attention.head_count"])
    n_head_kv, = struct.unpack_from("<I", meta[b"llama.attention.head_count_kv"])
    hd = n_embd // n_head
    rng = np.random.default_rng(SEED)
    new = []
    for l in range(n_layer):
        for part, n in (("attn_q", n_head * hd), ("attn_k", n_head_kv * hd),
                        ("attn_v", n_head_kv * hd)):
            pad = (-len(blob)) % align
            blob += b"\0" * pad
            new.append((f"blk.{l}.{part}.bias".encode(), (n,), 0, len(blob)))
            blob += (rng.standard_normal(n) * 0.5).astype("<f4").tobytes()
    out = bytearray(b"GGUF" + struct.pack("<IQQ", ver, len(tensors) + len(new), len(kvs)))
    for k, t, v in kvs:
        if k.startswith(b"llama."):
            k = b"qwen2." + k[6:]
        if k == b"general.architecture":
            v = gstr(b"qwen2")
        out += gstr(k) + struct.pack("<I", t) + v
    for name, dims, ty, off in tensors + new:
        out += gstr(name) + struct.pack("<I", len(dims)) + struct.pack("<%dQ" % len(dims), *dims)
        out += struct.pack("<IQ", ty, off)
    out += b"\0" * ((-len(out)) % align)
    out += blob
    open(a.out, "wb").write(out)

    import llama_cpp
    from llama_cpp import Llama
    llm = Llama(model_path=a.out, n_ctx=512, n_threads=2, n_threads_batch=2, n_batch=512,
                logits_all=False, verbose=False, seed=0)
    V = llm.n_vocab()
    with open(a.logits, "w") as f:
        for i, ids in enumerate(PROMPTS):
            llm.reset()
            llm.eval(ids)
            row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                        shape=(V,)).astype("<f4")
            f.write(json.dumps({"prompt_index": i, "prompt_ids": ids, "logits_f32_b64":
                                base64.b64encode(row.tobytes()).decode()}) + "\n")


if __name__ == "__main__":
    main()
