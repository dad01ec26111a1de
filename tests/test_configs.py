"""The configs of both entry points: every one parses, passes its pipeline's check, and overrides
its family's base (``base`` for the IMDB experiment, ``bonbon_base`` for the BoNBoN system)
without adding or dropping a field; every base field has a comment."""

import ast
import os
import pathlib
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from bonjax.experiment import METHODS, SYSTEM_METHODS, check_bonbon_config, check_config
from experiments import configs

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "experiments" / "configs"


def _leaves(config, prefix=""):
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_the_config_list_is_the_config_files():
    assert set(configs.CONFIGS) == {"base", "cpu_demo", "frontier", "full", "test_tiny",
                                    "bonbon_base", "bonbon_hh", "bonbon_tldr", "bonbon_cpu",
                                    "bonbon_tiny"} | (
        {p.stem for p in CONFIG_DIR.glob("*.py")} - {"__init__"})
    assert {configs.base_of(n) for n in configs.CONFIGS} == set(configs.BASES)


@pytest.mark.parametrize("name", configs.CONFIGS)
def test_every_config_parses_and_passes_the_check(name):
    config = configs.get(name)
    if configs.base_of(name) == "bonbon_base":
        runs = check_bonbon_config(config)
        assert set(config.methods) <= set(SYSTEM_METHODS)
    else:
        runs = check_config(config)
        assert set(config.methods) <= set(METHODS)
    assert runs, f"{name} trains no method"
    assert len({r.key for r in runs}) == len(runs), "two trained policies share a directory"


@pytest.mark.parametrize("name", [n for n in configs.CONFIGS if n not in configs.BASES])
def test_variants_override_the_base_without_new_fields(name):
    """A variant changes values of its base's fields; it neither adds nor drops one."""
    base = _leaves(configs.get(configs.base_of(name)))
    variant = _leaves(configs.get(name))
    assert set(variant) == set(base)
    assert any(variant[k] != base[k] for k in base), f"{name} is a copy of its base"


@pytest.mark.parametrize("base", configs.BASES)
def test_every_base_field_has_a_comment(base):
    """Each ``config.<field> = ...`` line of a base is preceded by a comment line."""
    lines = (CONFIG_DIR / f"{base}.py").read_text().splitlines()
    tree = ast.parse("\n".join(lines))
    assigned = [node for node in ast.walk(tree) if isinstance(node, ast.Assign)
                and isinstance(node.targets[0], ast.Attribute)]
    assert len(assigned) > 40
    for node in assigned:
        above = lines[node.lineno - 2].strip()
        assert above.startswith("#"), f"{base}.py:{node.lineno} has no comment above it"


def test_bonbon_paper_configs_are_the_paper_system():
    """Pythia-2.8B with an SFT stage, the DeBERTa-v3-large reward, n in {2, ..., 32} from one
    pool of N = 32, alpha = 0.005, parameters sharded over every device."""
    for name, source in (("bonbon_hh", "hh"), ("bonbon_tldr", "tldr")):
        c = configs.get(name)
        assert (c.model, c.data.source, c.sft.enabled) == ("EleutherAI/pythia-2.8b", source, True)
        assert c.reward == "OpenAssistant/reward-model-deberta-v3-large-v2"
        assert tuple(c.bonbon.ns) == (2, 4, 8, 16, 32) and c.pool.samples == 32
        assert c.bonbon.alpha == 0.005 and tuple(c.mesh_shape) == (1, -1, 1)
        assert (c.compute_dtype, c.remat) == ("bfloat16", "block")
        assert set(c.methods) == set(SYSTEM_METHODS)
        assert set(c.dpo.length_normalised) == set(c.ipo.length_normalised) == {False, True}


def test_bonbon_cpu_is_the_packaged_model_on_imdb():
    c = configs.get("bonbon_cpu")
    assert (c.model, c.reward, c.compute_dtype) == ("gemma3-270m", "sentiment", "bfloat16")
    assert (c.data.source, c.sft.enabled, c.mesh_shape) == ("imdb", False, ())
    assert set(c.methods) == set(SYSTEM_METHODS) and c.holdout_reward


def test_full_is_paper_scale():
    c = configs.get("full")
    assert (c.data.train_prompts, c.data.test_prompts, c.max_new_tokens) == (5000, 512, 40)
    assert (c.data.min_tokens, c.data.max_tokens, c.reference.samples) == (2, 8, 300)
    assert tuple(c.vbon.ns) == (2, 4, 8, 16, 32, 64) and len(c.kl_rl.betas) >= 3
    assert (c.train.learning_rate, c.train.b1, c.train.b2) == (3e-5, 0.9, 0.95)
    assert (c.train.epochs, c.train.train_top, c.vbon.exact) == (4, 2, False)
    assert {"vbon", "bonbon", "kl_rl"} <= set(c.methods)


def test_frontier_meets_the_frontier_study_minimums():
    """Best-of-N to N = 64, >= 4 vBoN N in 2..32, >= 5 KL-RL betas, >= 3 BoNBoN n, >= 2 BOND N,
    >= 128 test prompts x >= 8 samples, the real reward without a fallback."""
    c = configs.get("frontier")
    assert (c.model, c.reward, c.reward_fallback) == ("gemma3-270m", "sentiment", "")
    assert max(c.bon.ns) == 64 and c.reference.samples >= 65
    assert len(c.vbon.ns) >= 4 and all(2 <= n <= 32 for n in c.vbon.ns)
    assert len(c.kl_rl.betas) >= 5 and len(c.bonbon.ns) >= 3 and len(c.bond.ns) >= 2
    assert set(c.methods) == {"vbon", "kl_rl", "bonbon", "bond"}
    assert c.data.test_prompts >= 128 and c.eval.samples_per_prompt >= 8


def test_cpu_demo_is_the_real_setup():
    c = configs.get("cpu_demo")
    assert (c.model, c.reward, c.reward_fallback) == ("gemma3-270m", "sentiment", "vader")
    assert (c.train.train_top, c.train.samples_per_prompt) == (2, 4)
    assert {"vbon", "bonbon", "kl_rl"} <= set(c.methods)


def test_unknown_config_name_raises():
    with pytest.raises(ValueError, match="unknown config 'paper'.*cpu_demo"):
        configs.get("paper")


def test_config_file_flag_with_overrides():
    """The entry point's flag loads a config file by path and applies dotted overrides."""
    argv = [__file__, f"--config={CONFIG_DIR / 'cpu_demo.py'}", "--config.train.steps=3",
            "--config.vbon.ns=(2, 8)"]
    values = flags.FlagValues()
    holder = config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=argv)
    values(argv)
    config = holder.value
    assert config.train.steps == 3 and tuple(config.vbon.ns) == (2, 8)
    assert config.model == "gemma3-270m"
    check_config(config)
    bad = [__file__, f"--config={CONFIG_DIR / 'cpu_demo.py'}", "--config.no_such_field=1"]
    other = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=other, sys_argv=bad)
    with pytest.raises(Exception, match="no_such_field"):
        other(bad)


def test_entry_point_rejects_an_unknown_method_before_loading_anything(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "train.py"),
         f"--config={CONFIG_DIR / 'test_tiny.py'}", f"--run_dir={run_dir}",
         "--config.methods=('vbon', 'rlhf')"], capture_output=True, text=True, env=env,
        timeout=300)
    assert out.returncode != 0
    assert "unknown method 'rlhf'" in out.stderr
    assert not run_dir.exists()
