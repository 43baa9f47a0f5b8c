# lib.sh — shared by prep.sh and prep-gemma.sh (sourced, after they set REPO, G and die).

# pack_bins OUT.tar.xz NAME... — the named build-cuda/bin programs, debug info stripped, in bin/.
pack_bins() {
  local out="$1" t
  shift
  t="$(mktemp -d)"
  mkdir -p "$t/bin"
  for b in "$@"; do cp "$REPO/build-cuda/bin/$b" "$t/bin/"; done
  strip --strip-debug "$t"/bin/*
  tar -C "$t" -cJf "$out" bin
  rm -rf "$t"
}

# check_fit DIR... — each DIR plus the tracked tree (which travels with every call) must fit in
# one call's 64 MiB; dies naming the first that does not.
check_fit() {
  local tree n d
  tree=$(cd "$REPO" && git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
  for d in "$@"; do
    n=$(du -sb "$d" | cut -f1)
    echo "$(basename "$0"): ${d#$REPO/}: $n bytes (+ $tree of tracked files)"
    [ $((n + tree)) -le $((64 << 20)) ] || die "${d#$REPO/} does not fit in one call"
  done
}
