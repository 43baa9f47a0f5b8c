#!/usr/bin/env bash
# build_llama_server.sh — builds llama.cpp's own OpenAI-compatible server (llama-server, with
# several slots and continuous batching), the anchor of `make bench-serve` above concurrency 1,
# from the llama.cpp sources vendored in the llama-cpp-python source package on PyPI (the same
# version as the installed llama-cpp-python, else 0.3.36): nothing comes from anywhere else.
# Native CPU flags, as the Python package's anchor is built. About 10 minutes on 2 cores; the
# result is kept.
#
#   bash bench/build_llama_server.sh [OUT]     (default OUT: build/anchor/llama-server)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$REPO/build/anchor/llama-server}"
[ -x "$OUT" ] && { echo "$OUT"; exit 0; }
VER="$(python3 -c 'import llama_cpp; print(llama_cpp.__version__)' 2>/dev/null || echo 0.3.36)"
W="$(mktemp -d)"
trap 'rm -rf "$W"' EXIT
echo "build_llama_server.sh: building llama-server from llama-cpp-python $VER's sources" >&2
python3 -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VER" -d "$W" >&2
tar -C "$W" -xzf "$W"/llama_cpp_python-*.tar.gz
SRC="$(echo "$W"/llama_cpp_python-*/vendor/llama.cpp)"
cmake -S "$SRC" -B "$W/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
  -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$W/build" --target llama-server -j"$(nproc)" >&2
mkdir -p "$(dirname "$OUT")"
cp "$W/build/bin/llama-server" "$OUT"
echo "$OUT"
