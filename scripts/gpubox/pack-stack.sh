#!/usr/bin/env bash
# pack-stack.sh — builds .gpubox/c1/stack.tar.xz: everything tests/integration needs to start a parley
# stack on a bare Ubuntu 24.04 box (nats-server, redis-server, PostgreSQL 15, the shared
# libraries of all of them and of the daemons, and the daemons from build-cuda/bin).
# Run on the Debian 12 build machine. Touches nothing outside .gpubox/c1 and a temp dir.
#
#   bash scripts/gpubox/pack-stack.sh            # BUILD dir defaults to build-cuda
#   PARLEY_PACK_BUILD=build bash scripts/gpubox/pack-stack.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BUILD="${PARLEY_PACK_BUILD:-build-cuda}"
mkdir -p "$REPO/.gpubox/c1"
OUTTAR="$REPO/.gpubox/c1/stack.tar.xz"
LIMIT=$((28 * 1000 * 1000))   # 28 MB (decimal, the stricter reading)

PGVER=15
PGBIN=/usr/lib/postgresql/$PGVER/bin
PGLIB=/usr/lib/postgresql/$PGVER/lib
PGSHARE=/usr/share/postgresql/$PGVER
PG_PROGS=(postgres initdb pg_ctl pg_isready psql)
DAEMONS=(gateway chat infer-gateway worker history safety)

# Libraries never carried: glibc, the toolchain runtime, and the CUDA runtime (the remote box
# has CUDA 13 under /usr/local/cuda-13.0).
EXCLUDE_RE='^(linux-vdso\.so|ld-linux-x86-64\.so|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libresolv\.so|libutil\.so|libanl\.so|libnsl\.so|libcrypt\.so\.1$|libmvec\.so|libBrokenLocale\.so|libnss_|libthread_db|libstdc\+\+\.so|libgcc_s\.so|libatomic\.so|libcudart\.so|libcublas\.so|libcublasLt\.so|libcuda\.so|libLLVM)'

STAGE="$(mktemp -d /tmp/parley-pack.XXXXXX)"
trap 'rm -rf "$STAGE"' EXIT
R="$STAGE/parley-stack"
mkdir -p "$R"/{bin,libs,daemons,pg/bin,pg/lib,pg/share}

need() { [ -e "$1" ] || { echo "pack-stack.sh: missing $1 ($2)" >&2; exit 1; }; }

# --- servers ----------------------------------------------------------------------------------
NATS="$(command -v nats-server || true)"; [ -n "$NATS" ] || NATS=/usr/sbin/nats-server
REDIS="$(command -v redis-server || true)"; [ -n "$REDIS" ] || REDIS=/usr/bin/redis-server
need "$NATS" "apt-get install nats-server"
need "$REDIS" "apt-get install redis-server"
cp -L "$NATS" "$R/bin/nats-server"
cp -L "$REDIS" "$R/bin/redis-server"

for p in "${PG_PROGS[@]}"; do
  need "$PGBIN/$p" "apt-get install postgresql-$PGVER"
  cp -L "$PGBIN/$p" "$R/pg/bin/$p"
done
# The lib dir less the JIT (llvmjit.so needs libLLVM, ~100 MB; PostgreSQL runs without it: jit
# is then simply unavailable) and the extension-build files.
( cd "$PGLIB" && tar --exclude='./bitcode' --exclude='./llvmjit*' --exclude='./pgxs' -cf - . ) \
  | ( cd "$R/pg/lib" && tar -xf - )
( cd "$PGSHARE" && tar -cf - . ) | ( cd "$R/pg/share" && tar -xf - )

# --- daemons ----------------------------------------------------------------------------------
for d in "${DAEMONS[@]}"; do
  need "$REPO/$BUILD/bin/parley-$d" "build it: make CUDA=1 (BUILD=$BUILD)"
  cp "$REPO/$BUILD/bin/parley-$d" "$R/daemons/parley-$d"
  strip --strip-debug "$R/daemons/parley-$d"
done

# --- the shared-library closure ---------------------------------------------------------------
declare -A SEEN=()
objs=("$R"/bin/* "$R"/pg/bin/* "$R"/daemons/*)
while IFS= read -r f; do objs+=("$f"); done < <(find "$R/pg/lib" -name '*.so' -type f)
for o in "${objs[@]}"; do
  # "soname => path" lines; a "not found" here is a build-machine problem (except CUDA).
  while read -r so arrow path _; do
    [ "$arrow" = "=>" ] || continue
    [[ "$so" =~ $EXCLUDE_RE ]] && continue
    if [ "$path" = "not" ]; then echo "pack-stack.sh: $o: $so not found on this machine" >&2; exit 1; fi
    SEEN["$so"]="$path"
  done < <(ldd "$o" 2>/dev/null || true)
done
for so in "${!SEEN[@]}"; do
  real="$(readlink -f "${SEEN[$so]}")"
  base="$(basename "$real")"
  cp -L "$real" "$R/libs/$base"
  [ "$base" = "$so" ] || ln -sf "$base" "$R/libs/$so"
done

# --- manifest ---------------------------------------------------------------------------------
{
  echo "parley stack bundle, packed $(date -u +%FT%TZ) on $(. /etc/os-release; echo "$PRETTY_NAME")"
  echo "repo commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (working tree modified)')"
  echo "build dir: $BUILD"
  echo "nats-server: $("$NATS" --version 2>&1 | head -1)"
  echo "redis-server: $("$REDIS" --version 2>&1 | head -1)"
  echo "postgres: $("$PGBIN/postgres" --version 2>&1 | head -1)"
  echo "sonames carried (setup.sh installs only those the box lacks):"
  for so in $(printf '%s\n' "${!SEEN[@]}" | sort); do echo "  $so  ($(readlink -f "${SEEN[$so]}"))"; done
  echo "daemon sha256:"
  (cd "$R/daemons" && sha256sum parley-*) | sed 's/^/  /'
} > "$R/MANIFEST"

# --- tarball ----------------------------------------------------------------------------------
tar -C "$STAGE" --owner=0 --group=0 --numeric-owner -cf - parley-stack \
  | xz -T1 --x86 --lzma2=preset=9e,dict=96MiB > "$OUTTAR.tmp"   # BCJ filter: ~1 MB smaller
mv "$OUTTAR.tmp" "$OUTTAR"
size=$(stat -c %s "$OUTTAR")
echo "pack-stack.sh: wrote $OUTTAR: $size bytes ($(du -sh "$R" | cut -f1) unpacked), ${#SEEN[@]} libraries"
if [ "$size" -gt "$LIMIT" ]; then
  echo "pack-stack.sh: $OUTTAR is larger than the 28 MB limit" >&2
  exit 1
fi
