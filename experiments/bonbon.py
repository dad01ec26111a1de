"""Runs (or resumes) the BoNBoN system of a config into a run directory.

    python experiments/bonbon.py --config=experiments/configs/bonbon_cpu.py \
        --run_dir=~/.cache/bonjax/runs/bonbon_cpu
    python experiments/bonbon.py --config=experiments/configs/bonbon_hh.py --run_dir=DIR \
        --config.bonbon.ns='(2, 8)' --step_budget=500

SFT, the pool of pi_ref samples, BoNBoN / DPO / IPO / SFT-on-best on its fixed pairs, and the
evaluation (bonjax.experiment.run_bonbon_system). Every process of a multi-host job runs this
same command (see bonjax.distributed). A bad ``--config.*`` value, an unknown field, a data file
that is missing or malformed, a missing reward artifact or an unreachable model end it with one
line on stderr before any model loads (experiments/cli.py); ``--help`` lists the config fields.
"""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from bonjax import distributed  # noqa: E402
from bonjax.experiment import check_bonbon_config, run_bonbon_system  # noqa: E402
from bonjax.experiment.bonbon_data import read_records  # noqa: E402
from experiments import cli  # noqa: E402

__doc__ += cli.help_text(cli.BONBON_BASE_CONFIG)

_CONFIG = config_flags.DEFINE_config_file("config", None, "BoNBoN system config file "
                                          "(experiments/configs/bonbon_*.py)", lock_config=True)
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
    cli.check_overrides(config, config_flags.get_override_values(flags.FLAGS["config"]),
                        cli.BONBON_BASE_CONFIG)
    try:
        check_bonbon_config(config)
        read_records(config)  # a missing or malformed data file, before any model loads
    except (ValueError, FileNotFoundError) as err:
        cli.fail(err)
    cli.check_model(config.model)
    cli.check_scorer("config.reward", config.reward)
    cli.check_scorer("config.holdout_reward", config.holdout_reward)
    distributed.initialize(heartbeat_timeout_s=_HEARTBEAT.value,
                           shutdown_timeout_s=_SHUTDOWN.value)
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's per-save INFO lines
    result = run_bonbon_system(config, os.path.expanduser(_RUN_DIR.value),
                               step_budget=_STEP_BUDGET.value)
    if distributed.is_main_process():
        print((result.run_dir / "results.md").read_text())


if __name__ == "__main__":
    app.run(main, flags_parser=cli.flags_parser(cli.BONBON_BASE_CONFIG))
