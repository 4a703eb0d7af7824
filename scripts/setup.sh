#!/usr/bin/env bash
# Installs dalleflow into ./.venv on a fresh machine: the two system libraries the
# Real-ESRGAN upscaler links (libvulkan1, libomp5), then the server and the client.
#   bash scripts/setup.sh          # to serve
#   bash scripts/setup.sh test     # also the test tools, Debian's chromium for the browser test, and
#                                  # dalle-flow's jina client in .venv-jina
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

# dalle-flow's 2022 client (jina 3 with docarray 0.x, which need pydantic 1) for the test
# that runs its README code unchanged against the service: a venv of its own, apart
# from the server's pydantic 2. docarray[common] and IPython are what the README's
# plot_image_sprites and display() use.
if [ "${1:-}" = "test" ]; then
  python3.11 -m venv .venv-jina
  .venv-jina/bin/pip install -q --upgrade pip
  .venv-jina/bin/pip install -q "jina==3.34.0" "docarray[common]==0.21.1" "pydantic<2" "ipython<10"
fi
