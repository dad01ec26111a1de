#!/usr/bin/env bash
# The main job: sets up the environment (see setup.sh), trains the IMDB sentiment reward once if
# its artifact is missing (~7 min on 2 quiet CPU cores), then runs the `cpu_demo` alignment
# experiment (reference CDFs, Best-of-N, vBoN / BoNBoN / PPO training and evaluation, Pareto
# plot and results table) with the shipped Gemma-3-270M into $BONJAX_RUN_DIR
# (default ~/.cache/bonjax/runs/cpu_demo). A killed run continues where it stopped when the
# command is run again; a finished one only reprints its results. Extra arguments go to
# experiments/train.py (e.g. --config.train.steps=4).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/setup.sh"
set -u
cd "$here/.."
source "$here/ensure_reward.sh"
run_dir="${BONJAX_RUN_DIR:-$HOME/.cache/bonjax/runs/cpu_demo}"
python experiments/train.py --config=experiments/configs/cpu_demo.py --run_dir="$run_dir" "$@"
echo "results: $run_dir/results.md, plot: $run_dir/reward_vs_kl.png" >&2
