#!/usr/bin/env bash
# Creates (once) the virtual environment and installs bonjax with its pinned dependencies.
# Usage: source experiments/setup.sh [test]   (with "test": also the test-only references)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${BONJAX_VENV:-$HOME/.venvs/bonjax}"
python="$(command -v python3.11 || command -v python3)"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtual environment $venv" >&2
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
fi
reqs="$root/requirements.txt"
[ "${1:-}" = "test" ] && reqs="$root/requirements-test.txt"
"$venv/bin/pip" install -q -r "$reqs"
"$venv/bin/pip" install -q --no-deps -e "$root"
export PATH="$venv/bin:$PATH"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$HOME/.cache/bonjax/jax_compile_cache}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
set +u
