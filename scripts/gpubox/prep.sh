#!/usr/bin/env bash
# prep.sh — packs what one GPU verification round on the device machine needs into three
# folders, .gpubox/c1, c2 and c3, one per call (each call may carry at most 64 MiB together with
# the tracked tree, about 16 MB; the model alone is 98 MB). See scripts/gpubox/README.md.
#
#   make CUDA=1 all build-cuda/bin/cuda-tests && bash scripts/gpubox/prep.sh
#
# c1: the stack bundle (pack-stack.sh) and the first 15 MB of the xz-compressed SmolLM2 file;
# c2: the next 45 MB; c3: the rest, the test and benchmark binaries, and the gguf wheel the
# transformers anchor needs. Exits non-zero, saying why, when something is missing or a folder
# would not fit.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
G="$REPO/.gpubox"
MODEL="$REPO/models/SmolLM2-135M-Instruct.Q4_1.gguf"
die() { echo "prep.sh: $*" >&2; exit 1; }
. "$REPO/scripts/gpubox/lib.sh"

[ -f "$MODEL" ] || die "$MODEL missing (scripts/parleyctl model)"
for b in cuda-tests parley-bench parley-mktiny parley-worker parley-loadgen; do
  [ -x "$REPO/build-cuda/bin/$b" ] || die "build-cuda/bin/$b missing (make CUDA=1 all build-cuda/bin/cuda-tests)"
done
mkdir -p "$G/c1" "$G/c2" "$G/c3"
bash "$REPO/scripts/gpubox/pack-stack.sh"
if [ ! -f "$G/model.xz" ] || [ "$MODEL" -nt "$G/model.xz" ]; then
  echo "prep.sh: compressing the model (about 2.5 min)"
  xz -9e -T2 -c "$MODEL" > "$G/model.xz.tmp" && mv "$G/model.xz.tmp" "$G/model.xz"
fi
part() { dd if="$G/model.xz" of="$1" bs=1M iflag=skip_bytes,count_bytes skip="$2" ${3:+count=$3} status=none; }
part "$G/c1/m0" 0 15000000
part "$G/c2/m1" 15000000 45000000
part "$G/c3/m2" 60000000
pack_bins "$G/c3/bin.tar.xz" cuda-tests parley-bench parley-mktiny parley-worker parley-loadgen
rm -f "$G"/c3/gguf-*.whl
python3 -m pip download -q --no-deps --only-binary=:all: -d "$G/c3" gguf==0.19.0
check_fit "$G/c1" "$G/c2" "$G/c3"
