"""Runs (or resumes) the IMDB sentiment experiment of a config into a run directory.

    python experiments/train.py --config=experiments/configs/cpu_demo.py --run_dir=/tmp/cpu_demo
    python experiments/train.py --config=experiments/configs/full.py --run_dir=DIR \
        --config.train.steps=500

Every process of a multi-host job runs this same command (see bonjax.distributed). A bad
``--config.*`` value, an unknown field, a missing reward artifact or an unreachable model end it
with one line on stderr before any model loads (experiments/cli.py); ``--help`` lists the config
fields.
"""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from bonjax import distributed  # noqa: E402
from bonjax.experiment import check_config, run_experiment  # noqa: E402
from experiments import cli  # noqa: E402

__doc__ += cli.help_text()

_FLAGS = cli.define_run_flags("experiment config file (experiments/configs/*.py)")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {argv[1:]}")
    config = _FLAGS.config.value
    cli.check_overrides(config, config_flags.get_override_values(flags.FLAGS["config"]))
    try:
        check_config(config)
    except ValueError as err:
        cli.fail(err)
    cli.check_model(config.model)
    cli.check_reward(config)
    distributed.initialize(heartbeat_timeout_s=_FLAGS.heartbeat_timeout_s.value,
                           shutdown_timeout_s=_FLAGS.shutdown_timeout_s.value)
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's per-save INFO lines
    result = run_experiment(_FLAGS.config.value, _FLAGS.run_dir.value,
                            step_budget=_FLAGS.step_budget.value)
    if distributed.is_main_process():
        print((result.run_dir / "results.md").read_text())


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
