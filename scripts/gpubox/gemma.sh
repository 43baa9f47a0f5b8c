#!/usr/bin/env bash
# gemma.sh — the last call of the real-Gemma round on the device machine (scripts/gpubox/README.md):
# every earlier call copied its .gpubox/gN/* into /tmp/g. Joins and unpacks the two models,
# unpacks the binaries, then runs the Gemma 3 GPU tests on the real file, the greedy tests of
# both models and parley-bench on Gemma 3 on the GPU, keeping the logs under $OUT when it is set.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
OUTDIR="${OUT:-/tmp/gpubox-out}"
mkdir -p "$OUTDIR" models
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
M=models/gemma-3-270m-q4_k_m.gguf
S=models/SmolLM2-135M-Instruct.Q4_1.gguf
unxz() { python3 -c "import lzma, sys; sys.stdout.buffer.write(lzma.decompress(sys.stdin.buffer.read()))"; }
ls /tmp/g/g-part* | sort -V | xargs cat | unxz > "$M" || exit 1
ls /tmp/g/s-part* | sort -V | xargs cat | unxz > "$S" || exit 1
sha256sum "$M" "$S"
python3 -c "import tarfile; tarfile.open('/tmp/g/bin.tar.xz').extractall('build-cuda')" || exit 1
echo "=== GPU tests on the real Gemma 3 file, and the greedy tests of both models"
PARLEY_GEMMA3="$M" timeout 150 build-cuda/bin/cuda-tests gemma3_logits 2>&1 |
  tee "$OUTDIR/gemma3_logits.log"
PARLEY_GEMMA3="$M" timeout 240 build-cuda/bin/cuda-tests greedy 2>&1 | tee "$OUTDIR/greedy.log"
echo "=== parley-bench, Gemma 3 270M on cuda:0"
timeout 90 build-cuda/bin/parley-bench --model "$M" --device cuda:0 --batch 1,16,64,256 \
  --reps 3 2>&1 | tee "$OUTDIR/gemma-bench.log"
