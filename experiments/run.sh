#!/usr/bin/env bash
# The main job: sets up the environment (see setup.sh), then Best-of-N-samples continuations of
# held-out IMDB review openings with the shipped Gemma-3-270M, scored by the sentiment reward.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/setup.sh"
set -u
cd "$here/.."
exec python experiments/bon_demo.py "$@"
