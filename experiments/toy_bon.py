"""Trains one method on the exactly solvable toy and prints one JSON line.

    python experiments/toy_bon.py --method vbon --n 4
    python experiments/toy_bon.py --method vbon --optimizer ppo    # value head + GAE

The line gives the exact KL(pi_theta || pi_BoN) and expected reward before and after training,
and the reward of BoN itself (see bonjax/toy.py).
"""

import argparse
import json

from bonjax.toy import TOY_METHODS, train_on_toy
from bonjax.training.registry import OPTIMIZERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=TOY_METHODS, required=True)
    parser.add_argument("--n", type=int, default=4, help="N of the BoN distribution")
    parser.add_argument("--steps", type=int, default=300, help="training steps (rollouts)")
    parser.add_argument("--learning_rate", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="rloo",
                        help="vbon and kl_rl: critic-free RLOO, or PPO with a value head and GAE")
    args = parser.parse_args()
    print(json.dumps(train_on_toy(args.method, n=args.n, steps=args.steps,
                                  learning_rate=args.learning_rate, seed=args.seed,
                                  optimizer=args.optimizer)))


if __name__ == "__main__":
    main()
