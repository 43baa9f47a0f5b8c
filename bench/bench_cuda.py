"""bench_cuda — `make CUDA=1 bench-cuda`: parley's CUDA backend next to Hugging Face
`transformers` on the same GPU, same model, in one run (issue 9).

parley side: parley-bench --device cuda:0 (build-cuda/), SmolLM2-135M-Instruct Q4_1: pp512
(one 512-token prefill, tokens/s), tg128 (single-sequence decode, tokens/s) and batched decode
at 1, 16, 64 and 256 sequences (aggregate tokens/s after a 32-token prompt, 64 steps).

Achieved memory bandwidth of a decode step = (weight bytes + KV bytes read) x steps/s, where the
weights are the model's tensor bytes (read once per step whatever the batch) and the KV read is
batch x mean context x KV bytes per token; printed as a fraction of the card's peak (a table
of data-sheet figures by card name, or --peak-gbs) and of a measured device-to-device copy
(torch, when installed). Goals (issue 9): batch 1 ≥ 5x transformers; batch 256 ≥ 50% of peak.

Anchor: transformers + torch on the same GPU, the same GGUF file loaded by transformers'
GGUF reader (dequantised to float16; needs the `gguf` package), greedy decode with its KV cache
at the same batch sizes, and a 512-token prefill. Nothing is downloaded: everything reads the
local file.

Without a GPU (nvidia-smi lists none) or without a CUDA build this prints why and exits 0 with
"skipped: …" — it never reports numbers it did not measure.

    python3 bench/bench_cuda.py [--build build-cuda] [--model PATH] [--reps 3] [--no-anchor]
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import parley_stack as ps  # noqa: E402

BATCHES = (1, 16, 64, 256)
PROMPT, STEPS = 32, 64

# Data-sheet peak memory bandwidth, GB/s, by a substring of the name nvidia-smi prints.
PEAK_GBS = [("H200", 4800), ("H100 NVL", 3900), ("H100 PCIe", 2000), ("H100", 3350),
            ("A100-SXM4-80GB", 2039), ("A100 80GB PCIe", 1935), ("A100", 1555),
            ("L40S", 864), ("L4", 300), ("A10", 600), ("RTX 4090", 1008)]


def gpu_name():
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    r = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                       text=True)
    names = [n.strip() for n in r.stdout.splitlines() if n.strip()]
    return names[0] if r.returncode == 0 and names else None


def peak_for(name):
    for key, gbs in PEAK_GBS:
        if key in name:
            return gbs
    return None


def parley(build, model, reps):
    argv = [str(build / "bin" / "parley-bench"), "--model", str(model), "--device", "cuda:0",
            "--reps", str(reps), "--batch", ",".join(map(str, BATCHES)), "--batch-prompt",
            str(PROMPT), "--batch-steps", str(STEPS)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise SystemExit(f"parley-bench failed: {(p.stderr or p.stdout).strip()[-500:]}")
    rows = {}
    for line in p.stdout.splitlines():
        m = re.match(r"^\|\s*([^|]+?)\s*\|\s*([\d.]+) ± ([\d.]+)", line)
        if m:
            rows[m.group(1)] = float(m.group(2))
    return rows, p.stdout


def model_bytes(model):
    """Tensor bytes and KV bytes per token (F16 K and V over all layers), from the GGUF."""
    try:
        import gguf  # the `gguf` package (pip), which transformers' GGUF loader needs too
        r = gguf.GGUFReader(str(model))
        weights = sum(int(t.n_bytes) for t in r.tensors)
        for f in r.fields.values():
            if f.name.endswith(".block_count"):
                layers = int(f.parts[f.data[0]][0])
            if f.name.endswith(".attention.head_count_kv"):
                heads_kv = int(f.parts[f.data[0]][0])
            if f.name.endswith(".embedding_length"):
                embd = int(f.parts[f.data[0]][0])
            if f.name.endswith(".attention.head_count"):
                heads = int(f.parts[f.data[0]][0])
        kv = 2 * layers * heads_kv * (embd // heads) * 2
        return weights, kv
    except Exception:  # no gguf package: the file size is within a few percent of the tensors
        return Path(model).stat().st_size, None


def torch_copy_gbs():
    try:
        import torch
    except ImportError:
        return None
    n = 1 << 28  # 256 Mi floats = 1 GiB
    a = torch.empty(n, dtype=torch.float32, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize()
    return 10 * 2 * a.numel() * 4 / (time.perf_counter() - t) / 1e9


def transformers_anchor(model, reps):
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        return {"error": f"transformers/torch not installed ({e})"}
    try:
        m = AutoModelForCausalLM.from_pretrained(str(Path(model).parent),
                                                 gguf_file=Path(model).name,
                                                 torch_dtype=torch.float16).cuda().eval()
    except Exception as e:  # noqa: BLE001 — report any loader failure as the anchor's error
        return {"error": f"cannot load the GGUF in transformers: {e}"[:300]}
    out = {}
    vocab = m.config.vocab_size
    with torch.inference_mode():
        ids = torch.randint(0, vocab, (1, 512), device="cuda")
        m(ids)  # warm-up
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            m(ids)
        torch.cuda.synchronize()
        out["pp512"] = 512 * reps / (time.perf_counter() - t)
        for b in BATCHES:
            ids = torch.randint(0, vocab, (b, PROMPT), device="cuda")
            best = 0.0
            for _ in range(reps):
                r = m(ids, use_cache=True)
                past, nxt = r.past_key_values, r.logits[:, -1:].argmax(-1)
                torch.cuda.synchronize()
                t = time.perf_counter()
                for _ in range(STEPS):
                    r = m(nxt, past_key_values=past, use_cache=True)
                    past, nxt = r.past_key_values, r.logits[:, -1:].argmax(-1)
                torch.cuda.synchronize()
                best = max(best, b * STEPS / (time.perf_counter() - t))
            out[f"batch {b}"] = best
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build-cuda")
    ap.add_argument("--model", default=None)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--peak-gbs", type=float, default=None)
    ap.add_argument("--no-anchor", action="store_true")
    a = ap.parse_args()
    build = (ROOT / a.build).resolve()

    name = gpu_name()
    if not name:
        print("bench-cuda: skipped: no GPU (nvidia-smi lists no device)")
        return 0
    if not (build / "bin" / "parley-bench").exists():
        print(f"bench-cuda: skipped: {build}/bin/parley-bench missing (make CUDA=1 first)")
        return 0
    model = Path(a.model) if a.model else ps.ensure_model()
    rows, raw = parley(build, model, a.reps)
    if "CUDA support was not built" in raw:
        print("bench-cuda: skipped: this build has no CUDA support (make CUDA=1)")
        return 0
    weights, kv_tok = model_bytes(model)
    peak = a.peak_gbs or peak_for(name)
    copy = torch_copy_gbs()
    anchor = {} if a.no_anchor else transformers_anchor(model, a.reps)

    print(f"GPU: {name}; model {model.name}; weights {weights / 2**20:.1f} MiB, "
          f"KV {kv_tok or '?'} bytes/token")
    print(f"peak bandwidth: {peak or '?'} GB/s (data sheet), "
          f"{f'{copy:.0f} GB/s' if copy else '?'} (measured copy)")
    print("| test | parley t/s | transformers t/s | ratio | parley GB/s | of peak |")
    print("|---|---|---|---|---|---|")
    res = {}
    for key in ["pp512", "tg128"] + [f"batch {b}" for b in BATCHES]:
        # parley-bench names its batched rows "decode xN (aggregate)"
        want = f"decode x{key.split()[1]} " if key.startswith("batch") else key + " "
        ours = next((v for k, v in rows.items() if (k + " ").startswith(want)), None)
        theirs = anchor.get(key if key != "tg128" else "batch 1") if isinstance(anchor, dict) \
            else None
        gbs = frac = None
        if ours and key.startswith("batch"):
            b = int(key.split()[1])
            ctx = PROMPT + STEPS / 2
            step_bytes = weights + (b * ctx * kv_tok if kv_tok else 0)
            gbs = step_bytes * ours / b / 1e9
            frac = gbs / peak if peak else None
        ratio = ours / theirs if ours and theirs else None
        res[key] = {"parley": ours, "transformers": theirs, "gbs": gbs, "of_peak": frac}
        fmt = lambda v, f: f.format(v) if v is not None else "–"  # noqa: E731
        print(f"| {key} | {fmt(ours, '{:.1f}')} | {fmt(theirs, '{:.1f}')} | "
              f"{fmt(ratio, '{:.2f}x')} | {fmt(gbs, '{:.0f}')} | {fmt(frac, '{:.0%}')} |")
    if isinstance(anchor, dict) and "error" in anchor:
        print(f"anchor: {anchor['error']}")
    print(json.dumps({"gpu": name, "results": res}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
