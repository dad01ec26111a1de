"""Fine-tunes the IMDB sentiment reward (all-MiniLM-L6-v2 + linear head) and saves it.

    python experiments/train_reward.py                    # ~/.cache/bonjax/rewards/minilm-imdb
    python experiments/train_reward.py --output_dir DIR --train_examples 4000

Trains on the train part of bonjax's fixed IMDB split, reports the accuracy on its 2,500-review
held-out test part, and writes the artifact that ``bonjax.rewards.load_sentiment_reward()`` loads.
"""

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bonjax.data import load_reviews  # noqa: E402
from bonjax.rewards.sentiment import (  # noqa: E402
    SentimentTrainConfig,
    accuracy,
    default_reward_dir,
    save_sentiment_classifier,
    train_sentiment_classifier,
)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def main() -> None:
    defaults = SentimentTrainConfig()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default=str(default_reward_dir()),
                        help="artifact directory (replaced atomically)")
    parser.add_argument("--data_dir", default=None, help="tfds data_dir (default: "
                        "$BONJAX_TFDS_DIR or ~/.cache/bonjax/tfds)")
    for field in dataclasses.fields(SentimentTrainConfig):
        default = getattr(defaults, field.name)
        kind = int if field.name == "train_examples" else type(default)
        parser.add_argument(f"--{field.name}", type=kind, default=default)
    args = parser.parse_args()
    config = SentimentTrainConfig(**{f.name: getattr(args, f.name)
                                     for f in dataclasses.fields(SentimentTrainConfig)})

    start = time.perf_counter()
    train, test = (load_reviews(s, data_dir=args.data_dir) for s in ("train", "test"))
    print(f"reviews: {len(train)} train, {len(test)} held-out test", flush=True)
    model, params, stats = train_sentiment_classifier(config, train)
    tokenizer = config.tokenizer()
    test_accuracy = accuracy(model, params, tokenizer, test)
    wall = time.perf_counter() - start
    command = shlex.join(["python", *sys.argv])
    result = {"test_accuracy": test_accuracy, "test_reviews": len(test), "wall_seconds": wall,
              "command": command, **stats}
    metadata = {**result, "train_config": dataclasses.asdict(config),
                "split": "bonjax.data.imdb held-out split (test: 1,250 reviews per label with "
                         "the smallest SHA-256 of their cleaned text)",
                "git_commit": _git_commit()}
    path = save_sentiment_classifier(args.output_dir, model, params, tokenizer, metadata)
    print(json.dumps({"artifact": str(path), **result}), flush=True)


if __name__ == "__main__":
    main()
