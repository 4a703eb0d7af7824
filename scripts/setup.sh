#!/usr/bin/env bash
# Installs dalleflow into ./.venv on a fresh Debian 12/13 or Ubuntu 22.04/24.04: a Python 3.11+
# able to make a venv, the two system libraries the realesrgan upscaler family links (libvulkan1,
# libomp5), then the server and the client, at the versions constraints.txt pins.
#   bash scripts/setup.sh          # to serve
#   bash scripts/setup.sh test     # also the test tools and the training extra, Debian's chromium for
#                                  # the browser test, and dalle-flow's jina client in .venv-jina
#   bash scripts/setup.sh --check [test]  # changes nothing: says which Python it would use and what
#                                         # it would install with apt, or why it cannot go on
set -euo pipefail
cd "$(dirname "$0")/.."

is_check=0 is_test=0
for arg in "$@"; do
  case "$arg" in
    --check) is_check=1 ;;
    test) is_test=1 ;;
    *) echo "usage: bash scripts/setup.sh [--check] [test]" >&2; exit 2 ;;
  esac
done

# What the distributions give (python3 from apt): Debian 12 3.11, Debian 13 3.13, Ubuntu 24.04
# 3.12, Ubuntu 22.04 3.10, whose universe has python3.11. None installs python3-venv by default,
# and without it Debian's Python has no ensurepip, so `python3 -m venv` stops half-way.
MIN_MINOR=11
CANDIDATES=(python3 python3.13 python3.12 python3.11)

version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }

# Sets PYTHON and PYTHON_NAME to the first candidate at 3.11 or newer; TOO_OLD lists those that are not.
find_python() {
  PYTHON="" PYTHON_NAME="" TOO_OLD=""
  local name path version
  for name in "${CANDIDATES[@]}"; do
    path=$(command -v "$name") || continue
    version=$(version_of "$path") || continue
    if [ "${version%%.*}" -eq 3 ] && [ "${version#*.}" -ge "$MIN_MINOR" ]; then
      PYTHON=$path PYTHON_NAME=$name
      return 0
    fi
    TOO_OLD+="${TOO_OLD:+, }$name is $version"
  done
  return 1
}

# Decides what this machine lacks: sets PYTHON (empty until there is one), APT (what apt would
# install) and PROBLEM (set when apt cannot help here: the message to stop with).
plan() {
  APT=() PROBLEM=""
  local has_apt=0
  command -v apt-get >/dev/null && has_apt=1
  if find_python; then
    # Debian's venv package is what puts ensurepip back; python3-venv follows the default python3.
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
      local venv_package=python3-venv
      [ "$PYTHON_NAME" = python3 ] || venv_package="$PYTHON_NAME-venv"
      if [ "$has_apt" -eq 1 ]; then
        APT+=("$venv_package")
      else
        PROBLEM="$PYTHON cannot make a venv: its ensurepip module is missing. Install its venv module (on Debian and Ubuntu the package $venv_package), then run this again."
      fi
    fi
  elif [ "$has_apt" -eq 1 ] && ! command -v python3 >/dev/null; then
    # A bare container: the distribution's own python3 is new enough everywhere but Ubuntu
    # 22.04, which the next round then sees as too old.
    APT+=(python3 python3-venv)
  elif [ "$has_apt" -eq 1 ]; then
    APT+=(python3.11 python3.11-venv)
  else
    PROBLEM="dalleflow needs Python 3.11 or newer with its venv module (${TOO_OLD:-no python3 on PATH}). Install python3.11 or newer and put it on PATH as python3, python3.13, python3.12 or python3.11 (on Ubuntu 22.04: apt-get install python3.11 python3.11-venv), then run this again."
  fi
  local libraries
  libraries=$(ldconfig -p 2>/dev/null) || libraries=""
  [[ $libraries == *libvulkan.so.1* ]] || APT+=(libvulkan1)
  [[ $libraries == *libomp.so.5* ]] || APT+=(libomp5)
  # playwright's own browser download needs its CDN; the distribution's chromium installs
  # from the same apt mirrors as everything else, and tests/web launches it by path.
  if [ "$is_test" -eq 1 ]; then command -v chromium >/dev/null || APT+=(chromium); fi
  if [ ${#APT[@]} -gt 0 ] && [ "$has_apt" -eq 0 ] && [ -z "$PROBLEM" ]; then
    PROBLEM="no apt-get here to install ${APT[*]}: install them, then run this again."
  fi
  return 0
}

fail() { echo "scripts/setup.sh: $1" >&2; exit 1; }

if [ "$is_check" -eq 1 ]; then
  plan
  [ -z "$PROBLEM" ] || fail "$PROBLEM"
  echo "python: ${PYTHON:-none yet}"
  echo "apt: ${APT[*]:-nothing}"
  exit 0
fi

# Each round installs what the last plan asked for and plans again, since what is missing can
# change with what was installed (Ubuntu 22.04: python3 first, then, it being 3.10, python3.11).
installed="" updated=0
for round in 1 2 3 4; do
  plan
  [ -z "$PROBLEM" ] || fail "$PROBLEM"
  [ ${#APT[@]} -gt 0 ] || break
  if [ "${APT[*]}" = "$installed" ] || [ "$round" -eq 4 ]; then
    fail "apt installed ${APT[*]}, yet this machine still lacks what they should give (${TOO_OLD:-a Python 3.11+ that can make a venv}). Install Python 3.11 or newer with its venv module, then run this again."
  fi
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  [ "$updated" -eq 1 ] || $sudo apt-get update -qq
  updated=1
  if ! $sudo apt-get install -y -qq "${APT[@]}" >/dev/null; then
    why=""; [ -n "$PYTHON" ] || why=" dalleflow needs Python 3.11 or newer with its venv module (${TOO_OLD:-no python3 on PATH}): install one and put it on PATH as python3, python3.13, python3.12 or python3.11."
    fail "apt-get could not install ${APT[*]}.$why Then run this again."
  fi
  installed="${APT[*]}"
done
echo "scripts/setup.sh: using $PYTHON ($(version_of "$PYTHON"))"

"$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip
extras=""; [ "$is_test" -eq 1 ] && extras="[test,train]"
# constraints.txt pins every package of the server, client and test environment
# (scripts/make_constraints.py writes it), so a fresh machine gets what CI tested.
.venv/bin/pip install -q -c constraints.txt -e ./client -e ".${extras}"

# dalle-flow's 2022 client (jina 3 with docarray 0.x, which need pydantic 1) for the test
# that runs its README code unchanged against the service: a venv of its own, apart
# from the server's pydantic 2. docarray[common] and IPython are what the README's
# plot_image_sprites and display() use. The same interpreter as .venv: there may be no other.
if [ "$is_test" -eq 1 ]; then
  "$PYTHON" -m venv .venv-jina
  .venv-jina/bin/pip install -q --upgrade pip
  .venv-jina/bin/pip install -q "jina==3.34.0" "docarray[common]==0.21.1" "pydantic<2" "ipython<10"
fi
