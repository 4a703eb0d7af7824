#!/usr/bin/env bash
# Installs dalleflow into ./.venv on a fresh machine: the two system libraries the
# Real-ESRGAN upscaler links (libvulkan1, libomp5), then the server and the client.
#   bash scripts/setup.sh          # to serve
#   bash scripts/setup.sh test     # also the test tools, and Debian's chromium for the browser test
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
ldconfig -p | grep -q 'libvulkan\.so\.1' || missing+=(libvulkan1)
ldconfig -p | grep -q 'libomp\.so\.5' || missing+=(libomp5)
# playwright's own browser download needs its CDN; the distribution's chromium installs
# from the same apt mirrors as everything else, and tests/web launches it by path.
if [ "${1:-}" = "test" ]; then command -v chromium >/dev/null || missing+=(chromium); fi
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
extras=""; [ "${1:-}" = "test" ] && extras="[test]"
.venv/bin/pip install -q -e ./client -e ".${extras}"
