#!/usr/bin/env bash
# The GPU check (see experiments/device_check.py): on a machine with jax[cuda], flax, optax,
# orbax-checkpoint, chex, torch, transformers, scipy and pytest installed, no network needed.
# Prints JSON lines and writes them to $OUT/device_check.jsonl (default /tmp/device_check).
#   bash experiments/device_check.sh          # on the GPU
#   bash experiments/device_check.sh --cpu    # dry run on CPU with small models
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python="$(command -v python3)"
exec "$python" -m experiments.device_check "$@"
