# Sourced by the launch scripts after setup.sh: trains the IMDB sentiment reward once if its
# artifact is missing ($BONJAX_SENTIMENT_REWARD, default ~/.cache/bonjax/rewards/minilm-imdb).
reward_dir="${BONJAX_SENTIMENT_REWARD:-$HOME/.cache/bonjax/rewards/minilm-imdb}"
if [ ! -f "$reward_dir/reward.json" ]; then
  echo "no sentiment reward at $reward_dir: training it (experiments/train_reward.py)" >&2
  python experiments/train_reward.py --output_dir "$reward_dir"
fi
