"""Exports a trained policy of a run directory as a Hugging Face checkpoint directory.

    python experiments/export.py --run_dir=/tmp/cpu_demo --method=vbon-n4 --output=/tmp/vbon-hf
    python experiments/export.py --run_dir=DIR --method=kl_rl-beta0.05 --output=OUT \
        --dtype=bfloat16 --overwrite

``--method`` is the method's directory name in the run directory (``results.md`` and the
directory listing show them). The policy of its latest checkpoint is written with
``bonjax.save_pretrained``: ``transformers.AutoModelForCausalLM.from_pretrained(OUT)`` and
``bonjax.load_model(OUT)`` load it. Errors (no such run directory or method, an untrained
method, a non-empty output without ``--overwrite``) end the command with one line on stderr.
"""

import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from bonjax.experiment import export_policy  # noqa: E402
from bonjax.models.export import EXPORT_DTYPES  # noqa: E402
from experiments import cli  # noqa: E402

_RUN_DIR = flags.DEFINE_string("run_dir", None, "run directory of experiments/train.py")
_METHOD = flags.DEFINE_string("method", None, "the method's directory name in the run "
                              "directory, e.g. vbon-n4")
_OUTPUT = flags.DEFINE_string("output", None, "the Hugging Face checkpoint directory to write")
_DTYPE = flags.DEFINE_enum("dtype", None, list(EXPORT_DTYPES), "tensor dtype (default: the "
                           "parameters' own, float32)")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace a checkpoint already in --output")
flags.mark_flags_as_required(["run_dir", "method", "output"])


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {argv[1:]}")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's per-restore INFO lines
    start = time.perf_counter()
    try:
        policy = export_policy(_RUN_DIR.value, _METHOD.value, _OUTPUT.value,
                               overwrite=_OVERWRITE.value, dtype=_DTYPE.value)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        cli.fail(err)
    size = sum(f.stat().st_size for f in os.scandir(_OUTPUT.value) if f.is_file())
    print(f"exported {_METHOD.value} (step {policy.step}, {policy.lm.config.hf_model_type}) to "
          f"{_OUTPUT.value}: {size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    app.run(main)
