"""Trains methods on the exactly solvable toy and prints one JSON line per result.

    python experiments/toy_bon.py --method vbon --n 4
    python experiments/toy_bon.py --method vbon --optimizer ppo    # value head + GAE
    python experiments/toy_bon.py --own_target all                 # every registered method
    python experiments/toy_bon.py --compare_qrpo --n 4             # QRPO vs vBoN (RLOO, PPO)

``--method``: the exact KL(pi_theta || pi_BoN) and expected reward before and after training,
and the reward of BoN itself. ``--own_target``: each method of bonjax.training.METHODS at its
toy setting (bonjax.toy.TOY_SETTINGS) against its own closed-form target (bonjax.toy.toy_target).
``--compare_qrpo``: KL to pi_BoN and reward along training for the same number of samples
(bonjax.toy.compare_with_vbon). See bonjax/toy.py.
"""

import argparse
import json

from bonjax.toy import (
    TOY_METHODS,
    TOY_SETTINGS,
    compare_with_vbon,
    train_on_toy,
    train_to_own_target,
)
from bonjax.training.registry import OPTIMIZERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    task = parser.add_mutually_exclusive_group(required=True)
    task.add_argument("--method", choices=TOY_METHODS)
    task.add_argument("--own_target", help="comma-separated names of training.METHODS, or all")
    task.add_argument("--compare_qrpo", action="store_true")
    parser.add_argument("--n", type=int, default=4, help="N of the BoN distribution")
    parser.add_argument("--steps", type=int, default=300, help="training steps (rollouts)")
    parser.add_argument("--learning_rate", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="rloo",
                        help="vbon and kl_rl: critic-free RLOO, or PPO with a value head and GAE")
    args = parser.parse_args()
    if args.method:
        print(json.dumps(train_on_toy(args.method, n=args.n, steps=args.steps,
                                      learning_rate=args.learning_rate, seed=args.seed,
                                      optimizer=args.optimizer)))
    elif args.compare_qrpo:
        for row in compare_with_vbon(n=args.n, steps=args.steps,
                                     learning_rate=args.learning_rate, seed=args.seed):
            print(json.dumps(row), flush=True)
    else:
        names = list(TOY_SETTINGS) if args.own_target == "all" else args.own_target.split(",")
        unknown = sorted(set(names) - set(TOY_SETTINGS))
        if unknown:
            parser.error(f"unknown method {unknown[0]!r}; choose from {', '.join(TOY_SETTINGS)}")
        for name in names:
            print(json.dumps(train_to_own_target(name, seed=args.seed)), flush=True)


if __name__ == "__main__":
    main()
