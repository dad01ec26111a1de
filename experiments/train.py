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

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file "
                                          "(experiments/configs/*.py)", lock_config=True)
_RUN_DIR = flags.DEFINE_string("run_dir", None, "run directory (created, or resumed)")
_STEP_BUDGET = flags.DEFINE_integer("step_budget", None, "train at most this many steps in "
                                    "this call, then stop with checkpoints saved")
_HEARTBEAT = flags.DEFINE_integer("heartbeat_timeout_s", 100, "multi-process: a process silent "
                                  "this long is declared dead and the others stop with an error")
_SHUTDOWN = flags.DEFINE_integer("shutdown_timeout_s", 300, "multi-process: how long a process "
                                 "waits at exit for the others")
flags.mark_flags_as_required(["config", "run_dir"])


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    cli.check_overrides(config, config_flags.get_override_values(flags.FLAGS["config"]))
    try:
        check_config(config)
    except ValueError as err:
        cli.fail(err)
    cli.check_model(config.model)
    cli.check_reward(config)
    distributed.initialize(heartbeat_timeout_s=_HEARTBEAT.value,
                           shutdown_timeout_s=_SHUTDOWN.value)
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's per-save INFO lines
    result = run_experiment(_CONFIG.value, _RUN_DIR.value, step_budget=_STEP_BUDGET.value)
    if distributed.is_main_process():
        print((result.run_dir / "results.md").read_text())


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
