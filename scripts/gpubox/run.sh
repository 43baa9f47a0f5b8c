#!/usr/bin/env bash
# run.sh — the third call of a GPU verification round, on the device machine (after
# setup-stack.sh in the first and the second model part in the second): joins the model, unpacks
# the binaries from .gpubox/c3, then runs the GPU tests (Gemma 3 on a file of its shapes written
# here), the stack test from a GPU worker, bench-serve with the worker on the GPU and
# bench-cuda, keeping each log under $OUT (the device tool's return folder) when it is set.
#
#   bash scripts/gpubox/run.sh [tests] [stack] [serve] [bench]     (no argument: all four)
set -uo pipefail
want() { for a in "${ARGS[@]}"; do [ "$a" = "$1" ] && return 0; done; return 1; }
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(tests stack serve bench)
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
C=.gpubox/c3
OUTDIR="${OUT:-/tmp/gpubox-out}"
mkdir -p "$OUTDIR" models
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONUNBUFFERED=1
cat /tmp/m/m0 /tmp/m/m1 "$C/m2" |
  python3 -c "import lzma, sys; sys.stdout.buffer.write(lzma.decompress(sys.stdin.buffer.read()))" \
    > models/SmolLM2-135M-Instruct.Q4_1.gguf || exit 1
sha256sum models/SmolLM2-135M-Instruct.Q4_1.gguf
python3 -c "import tarfile; tarfile.open('$C/bin.tar.xz').extractall('build-cuda')" || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$C"/gguf-*.whl
if want tests; then
  echo "=== GPU tests"
  # Gemma 3 270M's shapes and tensor types with random weights (its file is 253 MB, too big to
  # carry); a 64-token window, so the test's 160-token prompt passes it.
  build-cuda/bin/parley-mktiny --out /tmp/gemma-shaped.gguf --arch gemma3 --mixed --layers 18 \
    --embd 640 --heads 4 --kv-heads 1 --head-dim 256 --ff 2048 --window 64 --ctx 2048
  PARLEY_GEMMA3=/tmp/gemma-shaped.gguf timeout 400 build-cuda/bin/cuda-tests 2>&1 |
    tee "$OUTDIR/cuda-tests.log" | tail -40
fi
if want stack; then
  echo "=== stack test (GPU worker)"
  PARLEY_BUILD=build-cuda timeout 200 python3 -m pytest -q -rs \
    tests/integration/test_cuda_worker.py 2>&1 | tee "$OUTDIR/stack.log" | tail -5
fi
if want serve; then
  echo "=== bench-serve, worker on cuda:0"
  PARLEY_BUILD=build-cuda timeout 240 python3 bench/bench_serve.py --device cuda:0 --threads 4 \
    --levels 1,4,16,64 2>&1 | tee "$OUTDIR/serve.log" | tail -16
fi
if want bench; then
  echo "=== bench-cuda"
  PYTHONPATH=/tmp/site timeout 200 python3 bench/bench_cuda.py --build build-cuda 2>&1 |
    grep -v Converting | tee "$OUTDIR/bench.log" | tail -12
fi
