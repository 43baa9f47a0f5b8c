#!/usr/bin/env bash
# deps.sh — installs what parley's build, local stack and tests need (make deps; .ci/run).
#
# Debian packages from scripts/apt-packages.txt (apt-get, as root; otherwise prints the exact
# command and fails), then the Python packages the tests use, for the python3 on PATH. Safe to
# run again: quiet when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

# pip name=import name
PIP_PACKAGES=(pytest=pytest requests=requests openai=openai pyyaml=yaml yamllint=yamllint
              kubernetes-validate=kubernetes_validate schemathesis=schemathesis
              playwright=playwright)
# playwright drives Debian's /usr/bin/chromium (scripts/apt-packages.txt): never run
# `playwright install`, which downloads browsers from outside Debian and PyPI.

mapfile -t APT < <(sed -e 's/#.*//' scripts/apt-packages.txt | tr -s ' \t' '\n' | sed '/^$/d')

missing=()
for p in "${APT[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    [[ $st == ii* ]] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "deps: missing packages: ${missing[*]}" >&2
        echo "deps: run as root:  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Python packages for the python3 that `make test` runs (PYTHON=python3 in the Makefile).
need=()
for pair in "${PIP_PACKAGES[@]}"; do
    python3 -c "import ${pair#*=}" 2>/dev/null || need+=("${pair%%=*}")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "deps: installing Python packages ${need[*]} for $(command -v python3)"
    extra=()
    # Debian's own python3 is marked externally managed (PEP 668); these are test tools only.
    if [ "$(python3 -c 'import sys; print(sys.prefix)')" = /usr ]; then
        extra=(--break-system-packages)
    fi
    python3 -m pip install -q --disable-pip-version-check "${extra[@]}" "${need[@]}"
fi
