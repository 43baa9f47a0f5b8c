#!/usr/bin/env bash
# prep-gemma.sh — packs the real Gemma 3 270M file (253 MB), the SmolLM2 file (its greedy test
# runs beside Gemma's) and the GPU test and benchmark binaries into .gpubox/g1 … gN, one folder
# per device call (each must fit in 64 MiB together with the tracked tree). See
# scripts/gpubox/README.md ("The real Gemma 3 file").
#
#   make CUDA=1 build-cuda/bin/cuda-tests build-cuda/bin/parley-bench && bash scripts/gpubox/prep-gemma.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
G="$REPO/.gpubox"
MODEL="$REPO/models/gemma-3-270m-q4_k_m.gguf"
SMOL="$REPO/models/SmolLM2-135M-Instruct.Q4_1.gguf"
PART=50000000
die() { echo "prep-gemma.sh: $*" >&2; exit 1; }
. "$REPO/scripts/gpubox/lib.sh"

[ -f "$MODEL" ] && [ -f "$SMOL" ] || die "a model file is missing (scripts/parleyctl model)"
for b in cuda-tests parley-bench; do
  [ -x "$REPO/build-cuda/bin/$b" ] || die "build-cuda/bin/$b missing (make CUDA=1 build-cuda/bin/$b)"
done
mkdir -p "$G"
for pair in "gemma.xz:$MODEL" "model.xz:$SMOL"; do
  xzf="$G/${pair%%:*}" src="${pair#*:}"
  if [ ! -f "$xzf" ] || [ "$src" -nt "$xzf" ]; then
    echo "prep-gemma.sh: compressing $(basename "$src") (a few minutes)"
    xz -6 -T2 -c "$src" > "$xzf.tmp" && mv "$xzf.tmp" "$xzf"
  fi
done
rm -rf "$G"/g[0-9]*
mkdir -p "$G/g1"
pack_bins "$G/g1/bin.tar.xz" cuda-tests parley-bench
# gemma.xz as g-part*, then model.xz as s-part*, filling each folder up to PART bytes
n=1
for pair in "gemma.xz:g" "model.xz:s"; do
  xzf="$G/${pair%%:*}" tag="${pair#*:}"
  size=$(stat -c %s "$xzf") off=0 k=1
  while [ "$off" -lt "$size" ]; do
    mkdir -p "$G/g$n"
    room=$(( PART - $(du -sb "$G/g$n" | cut -f1) ))
    if [ "$room" -lt 1000000 ]; then n=$(( n + 1 )); continue; fi
    dd if="$xzf" of="$G/g$n/$tag-part$k" bs=1M iflag=skip_bytes,count_bytes skip="$off" \
       count="$room" status=none
    off=$(( off + room )) k=$(( k + 1 ))
    [ "$off" -lt "$size" ] && n=$(( n + 1 ))
  done
done
check_fit "$G"/g[0-9]*
