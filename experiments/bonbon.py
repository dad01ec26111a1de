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

_FLAGS = cli.define_run_flags("BoNBoN system config file (experiments/configs/bonbon_*.py)")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {argv[1:]}")
    config = _FLAGS.config.value
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
    distributed.initialize(heartbeat_timeout_s=_FLAGS.heartbeat_timeout_s.value,
                           shutdown_timeout_s=_FLAGS.shutdown_timeout_s.value)
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's per-save INFO lines
    result = run_bonbon_system(config, os.path.expanduser(_FLAGS.run_dir.value),
                               step_budget=_FLAGS.step_budget.value)
    if distributed.is_main_process():
        print((result.run_dir / "results.md").read_text())


if __name__ == "__main__":
    app.run(main, flags_parser=cli.flags_parser(cli.BONBON_BASE_CONFIG))
