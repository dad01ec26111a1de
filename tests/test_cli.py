"""experiments/train.py's command-line errors: one line naming the field, the value and what is
allowed, exit status 1, no traceback, and nothing loaded or created; ``--help`` lists the config
fields with their comments (experiments/cli.py)."""

import os
import pathlib
import subprocess
import sys

import pytest

from experiments import cli, configs

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ROOT / "experiments" / "configs" / "test_tiny.py"


def _train(tmp_path, *args, **env):
    """Runs train.py on the tiny config into tmp_path/run; returns (exit status, stderr)."""
    environ = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1",
               "HF_HOME": str(tmp_path / "hf"),
               "BONJAX_SENTIMENT_REWARD": str(tmp_path / "no_reward"), **env}
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "train.py"),
                          f"--config={TINY}", f"--run_dir={tmp_path / 'run'}", *args],
                         capture_output=True, text=True, env=environ, timeout=300)
    assert not (tmp_path / "run").exists(), "the run directory was created before the error"
    return out.returncode, out.stderr


def _one_fatal_line(tmp_path, *args, **env) -> str:
    status, stderr = _train(tmp_path, *args, **env)
    assert status == 1, stderr
    assert "Traceback" not in stderr, stderr
    fatal = [line for line in stderr.splitlines() if line.startswith("FATAL")]
    assert len(fatal) == 1, stderr
    return fatal[0]


def test_every_base_field_is_described():
    """Each leaf field of the base config has its comment (and default) for --help."""
    described = cli.field_comments()
    base = configs.get("base")

    def leaves(node, prefix=""):
        for key, value in node.items():
            if hasattr(value, "items"):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield prefix + key

    assert set(leaves(base)) == set(described)
    assert described["train.steps"] == ("100", "Training steps per method (one rollout and "
                                        "`epochs` gradient steps each).")
    assert all(comment for _, comment in described.values())


@pytest.mark.slow
def test_help_lists_the_config_fields_with_their_comments(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "train.py"), "--help"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    text = out.stdout + out.stderr  # (absl's --help exits with status 1)
    assert "Traceback" not in text, text
    assert "  train.steps = 100\n      Training steps per method" in text
    assert "  vbon.ns = (2, 4, 8, 16, 32, 64)\n      One trained policy per N." in text


@pytest.mark.slow
@pytest.mark.parametrize("flag, expected", [
    ("--config.train.steps=many", ["--config.train.steps=many is not a valid value",
                                   "Training steps per method", "base default 100"]),
    ("--config.vbon.ns=(4, x)", ["--config.vbon.ns=", "is not a tuple of int",
                                 "One trained policy per N"]),
], ids=["value", "tuple"])
def test_a_value_of_the_wrong_type(tmp_path, flag, expected):
    """The line names the flag and the value, and quotes the field's comment."""
    line = _one_fatal_line(tmp_path, flag)
    for text in expected:
        assert text in line


@pytest.mark.slow
def test_a_value_out_of_range(tmp_path):
    line = _one_fatal_line(tmp_path, "--config.train.steps=0")
    assert "config.train.steps must be an integer >= 1, got 0" in line


@pytest.mark.slow
def test_an_unknown_field(tmp_path):
    line = _one_fatal_line(tmp_path, "--config.train.stepz=3")
    assert "--config.train.stepz=3: config.train has no field 'stepz'" in line
    assert "did you mean train.steps?" in line and "learning_rate" in line
    line = _one_fatal_line(tmp_path, "--config.seed.x=1")
    assert "config.seed is a value (int), not a group of fields" in line


@pytest.mark.slow
def test_a_missing_reward_artifact(tmp_path):
    line = _one_fatal_line(tmp_path, "--config.reward=sentiment")
    assert f"missing at {tmp_path / 'no_reward'}" in line
    assert "python experiments/train_reward.py --output_dir" in line
    assert "--config.reward=vader" in line


@pytest.mark.slow
def test_a_model_that_does_not_exist_or_is_unreachable(tmp_path):
    line = _one_fatal_line(tmp_path, f"--config.model={tmp_path / 'nothing'}")
    assert f"config.model='{tmp_path / 'nothing'}': no such model" in line
    assert "gemma3-270m" in line and "hub id" in line
    line = _one_fatal_line(tmp_path, "--config.model=nobody/no-such-model")
    assert "config.model='nobody/no-such-model' is not reachable on the Hugging Face hub" in line
    assert "HF_HUB_OFFLINE=1" in line
