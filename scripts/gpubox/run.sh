#!/usr/bin/env bash
# run.sh — the third call of a GPU verification round, on the device machine (after
# setup-stack.sh in the first and the second model part in the second): joins the model, unpacks
# the binaries from .gpubox/c3, then runs the stack test from a GPU worker, the GPU tests and
# the benchmark, keeping each log under $OUT (the device tool's return folder) when it is set.
#
#   bash scripts/gpubox/run.sh [stack] [tests] [bench]     (no argument: all three)
set -uo pipefail
want() { for a in "${ARGS[@]}"; do [ "$a" = "$1" ] && return 0; done; return 1; }
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(stack tests bench)
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
if want stack; then
  echo "=== stack test (GPU worker)"
  PARLEY_BUILD=build-cuda timeout 200 python3 -m pytest -q -rs \
    tests/integration/test_cuda_worker.py 2>&1 | tee "$OUTDIR/stack.log" | tail -5
fi
if want tests; then
  echo "=== GPU tests"
  timeout 300 build-cuda/bin/cuda-tests 2>&1 | tee "$OUTDIR/cuda-tests.log" | tail -30
fi
if want bench; then
  echo "=== bench-cuda"
  PYTHONPATH=/tmp/site timeout 200 python3 bench/bench_cuda.py --build build-cuda 2>&1 |
    grep -v Converting | tee "$OUTDIR/bench.log" | tail -12
fi
