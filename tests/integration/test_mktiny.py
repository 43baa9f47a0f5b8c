"""parley-mktiny (tools/mktiny.c), the random-weight GGUF writer the tests, benchmarks and the
GPU round (scripts/gpubox) build models with.

- `--arch gemma3 --mixed` writes Gemma 3's layout (QK-norm and post-norm vectors, key_length,
  sliding window) with the Gemma 3 270M Q4_K_M file's mix of tensor types; the header is read
  back here by a small GGUF parser of our own, so a wrong name, shape or type fails.
- The file runs through the engine as gemma3 (parley-bench, parley-generate), with a prompt
  longer than its sliding window, and greedy output does not depend on the thread count.
- Bad usage exits 2 naming the problem; the same options and seed give the same bytes.
"""

import json
import struct

import pytest

from conftest import binary, run_binary

# ggml tensor type ids (GGUF's tensor info)
F32, Q5_0, Q8_0, Q4_K, Q6_K = 0, 6, 8, 12, 14
# GGUF metadata value types: fixed sizes; 8 = string, 9 = array
VSIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
VFMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
        11: "<q", 12: "<d"}


def read_gguf(path):
    """(metadata: scalars and strings, arrays as their length; tensors: name -> (type, shape))."""
    b = path.read_bytes()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, b, pos)
        pos += struct.calcsize(fmt)
        return v[0]

    def string():
        nonlocal pos
        n = take("<Q")
        s = b[pos:pos + n].decode()
        pos += n
        return s

    def value(t):
        nonlocal pos
        if t == 8:
            return string()
        if t == 9:
            et, n = take("<I"), take("<Q")
            for _ in range(n):
                if et == 8:
                    n_bytes = take("<Q")  # (`pos += take(...)` would add to the old pos)
                    pos += n_bytes
                else:
                    pos += VSIZE[et]
            return n
        return take(VFMT[t])

    assert b[:4] == b"GGUF"
    pos = 4
    version, n_tensors, n_kv = take("<I"), take("<Q"), take("<Q")
    assert version == 3
    meta = {}
    for _ in range(n_kv):
        k = string()
        meta[k] = value(take("<I"))
    tensors = {}
    for _ in range(n_tensors):
        name = string()
        dims = [take("<Q") for _ in range(take("<I"))]
        ttype = take("<I")
        take("<Q")  # offset
        tensors[name] = (ttype, tuple(dims))
    return meta, tensors


GEMMA_ARGS = ["--arch", "gemma3", "--mixed", "--layers", "3", "--embd", "64", "--heads", "2",
              "--kv-heads", "1", "--head-dim", "128", "--ff", "256", "--window", "8",
              "--ctx", "256"]


@pytest.fixture(scope="module")
def gemma_file(tmp_path_factory, model_file):
    out = tmp_path_factory.mktemp("mktiny") / "gemma.gguf"
    r = run_binary([binary("mktiny"), "--out", out, "--from", model_file, *GEMMA_ARGS],
                   timeout=60)
    assert r.returncode == 0, r.stderr
    return out


def test_gemma3_layout_and_the_270m_type_mix(gemma_file):
    meta, tensors = read_gguf(gemma_file)
    assert meta["general.architecture"] == "gemma3"
    for key, want in (("block_count", 3), ("embedding_length", 64), ("feed_forward_length", 256),
                      ("attention.head_count", 2), ("attention.head_count_kv", 1),
                      ("attention.key_length", 128), ("attention.value_length", 128),
                      ("attention.sliding_window", 8), ("context_length", 256)):
        assert meta[f"gemma3.{key}"] == want, key
    assert meta["gemma3.rope.freq_base"] == 1e6
    assert meta["tokenizer.ggml.model"] == "gpt2"  # copied from the SmolLM2 source
    vocab = meta["tokenizer.ggml.tokens"]
    assert len(tensors) == 2 + 13 * 3 and "output.weight" not in tensors  # tied
    assert tensors["token_embd.weight"] == (Q8_0, (64, vocab))
    assert tensors["output_norm.weight"] == (F32, (64,))
    for layer in range(3):
        def t(name):
            return tensors[f"blk.{layer}.{name}.weight"]
        # 64-wide rows cannot hold 256-value K-quant blocks: Q5_0 / Q8_0 as in the 270M file;
        # the 256-wide rows of the attention output and the down projection take Q4_K / Q6_K
        assert t("attn_q") == (Q5_0, (64, 256))
        assert t("attn_k") == (Q5_0, (64, 128))
        assert t("attn_v") == (Q8_0, (64, 128))
        assert t("attn_output") == (Q4_K, (256, 64))
        assert t("ffn_gate") == (Q5_0, (64, 256)) and t("ffn_up") == (Q5_0, (64, 256))
        assert t("ffn_down") == (Q6_K, (256, 64))
        assert t("attn_q_norm") == (F32, (128,)) and t("attn_k_norm") == (F32, (128,))
        for norm in ("attn_norm", "ffn_norm", "post_attention_norm", "post_ffw_norm"):
            assert t(norm) == (F32, (64,)), norm


def test_gemma3_file_runs_through_the_engine(gemma_file):
    r = run_binary([binary("bench"), "--model", gemma_file, "-p", "32", "-n", "8", "--batch",
                    "1,4", "--batch-prompt", "16", "--batch-steps", "4", "--reps", "1",
                    "--threads", "2"], timeout=120)
    assert r.returncode == 0, r.stderr
    assert "(gemma3," in r.stdout and "decode x4" in r.stdout, r.stdout
    # a prompt of more than the 8-token window, greedy: the same tokens on 1 and 2 threads
    prompt = "The quick brown fox jumps over the lazy dog while the cat watches it run away."
    outs = []
    for threads in (1, 2):
        g = run_binary([binary("generate"), "--model", gemma_file, "--prompt", prompt,
                        "--max-tokens", "6", "--threads", str(threads), "--json"], timeout=60)
        assert g.returncode == 0, g.stderr
        doc = json.loads(g.stdout.strip().splitlines()[-1])
        assert len(doc["prompt_ids"]) > 8 and len(doc["gen_ids"]) == 6, doc
        outs.append(doc["gen_ids"])
    assert outs[0] == outs[1]


@pytest.mark.parametrize("args, why", [
    (["--head-dim", "64"], "--head-dim and --window need --arch gemma3"),
    (["--window", "64"], "--head-dim and --window need --arch gemma3"),
    (["--arch", "gemma3", "--untied"], "tied"),
    (["--arch", "gemma4"], "bad value for --arch"),
    (["--type", "q4_K", "--embd", "96"], "multiples of 256"),
    (["--arch", "gemma3", "--head-dim", "7"], "bad value for --head-dim"),
])
def test_bad_usage_exits_2_saying_why(tmp_path, model_file, args, why):
    out = tmp_path / "x.gguf"
    r = run_binary([binary("mktiny"), "--out", out, "--from", model_file, *args])
    assert r.returncode == 2 and why in r.stderr, (r.returncode, r.stderr)
    assert not out.exists()


def test_same_options_and_seed_give_the_same_bytes(tmp_path, model_file):
    files = []
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        out = tmp_path / f"{name}.gguf"
        r = run_binary([binary("mktiny"), "--out", out, "--from", model_file, "--seed", seed,
                        "--max-vocab", "300", *GEMMA_ARGS], timeout=60)
        assert r.returncode == 0, r.stderr
        files.append(out.read_bytes())
    assert files[0] == files[1] and files[0] != files[2]
