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


def test_every_bonbon_base_field_is_described():
    """experiments/bonbon.py's --help and errors read the comments of bonbon_base.py."""
    described = cli.field_comments(cli.BONBON_BASE_CONFIG)

    def leaves(node, prefix=""):
        for key, value in node.items():
            if hasattr(value, "items"):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield prefix + key

    assert set(leaves(configs.get("bonbon_base"))) == set(described)
    assert described["pool.samples"][1].startswith("N: samples per prompt")
    assert all(comment for _, comment in described.values())


def _bonbon_fatal_line(tmp_path, *args) -> str:
    """Runs experiments/bonbon.py on the tiny config; its one FATAL line (nothing created)."""
    environ = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1",
               "HF_HOME": str(tmp_path / "hf"),
               "BONJAX_SENTIMENT_REWARD": str(tmp_path / "no_reward")}
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "bonbon.py"),
                          f"--config={ROOT / 'experiments' / 'configs' / 'bonbon_tiny.py'}",
                          f"--run_dir={tmp_path / 'run'}", *args],
                         capture_output=True, text=True, env=environ, timeout=300)
    assert not (tmp_path / "run").exists(), "the run directory was created before the error"
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    fatal = [line for line in out.stderr.splitlines() if line.startswith("FATAL")]
    assert len(fatal) == 1, out.stderr
    return fatal[0]


def test_bonbon_errors_are_one_line_before_anything_loads(tmp_path):
    """n above the pool's N, a data file that does not exist, a holdout reward whose artifact
    is missing: one line each, exit status 1, no run directory."""
    line = _bonbon_fatal_line(tmp_path, "--config.bonbon.ns=(2, 8)")
    assert "config.bonbon.ns asks for n = 8, more than the pool's N = 4" in line
    line = _bonbon_fatal_line(tmp_path, f"--config.data.train_files=('{tmp_path / 'x.jsonl'}',)")
    assert f"JSONL file {tmp_path / 'x.jsonl'} does not exist" in line


@pytest.mark.slow
def test_bonbon_reward_errors_name_the_field(tmp_path):
    """With readable data, a reward that cannot load is named by its field."""
    from _preference_fixtures import hh_variants, write_jsonl

    files = (f"--config.data.train_files=('{write_jsonl(tmp_path / 'a.jsonl', hh_variants(6))}',)",
             f"--config.data.test_files=('{write_jsonl(tmp_path / 'b.jsonl', hh_variants(4))}',)")
    line = _bonbon_fatal_line(tmp_path, *files, "--config.holdout_reward=sentiment")
    assert "config.holdout_reward='sentiment' needs the trained sentiment reward" in line
    assert "--config.holdout_reward=vader" in line
    line = _bonbon_fatal_line(tmp_path, *files, "--config.reward=nobody/no-such-reward-model")
    assert "config.reward='nobody/no-such-reward-model' is not reachable on the Hugging Face " \
        "hub" in line
