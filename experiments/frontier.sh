#!/usr/bin/env bash
# The reward-KL frontier study (experiments/configs/frontier.py): sets up the environment (see
# setup.sh), trains the IMDB sentiment reward once if its artifact is missing, then runs or
# resumes the frontier run in $BONJAX_RUN_DIR (default ~/.cache/bonjax/runs/frontier). Extra
# arguments go to experiments/train.py: `--step_budget=K` stops after K training steps with
# checkpoints saved, and the same command continues. When the run is complete, its results
# (results.md, results.json, the reward-KL plot and each method's training curves) are copied to
# docs/results/frontier/ with the command, commit and wall time.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/setup.sh"
set -u
cd "$here/.."
source "$here/ensure_reward.sh"
run_dir="${BONJAX_RUN_DIR:-$HOME/.cache/bonjax/runs/frontier}"
python experiments/train.py --config=experiments/configs/frontier.py --run_dir="$run_dir" "$@"
python -m experiments.publish_results "$run_dir" docs/results/frontier \
  --command "bash experiments/frontier.sh"
