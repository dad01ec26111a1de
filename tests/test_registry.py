"""The one method registry: every name builds its method, the experiment and the toy read it."""

import pytest

from bonjax import objectives as obj
from bonjax.experiment.sweeps import method_runs
from bonjax.toy import TOY_METHODS, _toy_method
from bonjax.training import METHODS, PPO, PolicyGradient, PreferencePairs, build_method
from bonjax.training.registry import OPTIMIZERS, method_for, spec_of
from experiments import configs


@pytest.mark.parametrize("name", list(METHODS))
def test_every_registered_method_builds_with_each_of_its_optimizers(name):
    spec = METHODS[name]
    for optimizer in spec.optimizers:
        _, objective, method = build_method(name, optimizer)
        assert spec_of(objective) is spec
        assert callable(method.collect) and callable(method.loss)
        assert method.init_extras is not None
    for optimizer in set(OPTIMIZERS) - set(spec.optimizers):
        with pytest.raises(ValueError, match=f"optimizer '{optimizer}' does not apply to "
                                             f"{spec.label}"):
            build_method(name, optimizer)


def test_the_optimizer_picks_the_method_class():
    assert type(method_for(obj.VBoNConfig(n=4), "ppo")) is PPO
    assert type(method_for(obj.KLRLConfig(beta=0.1), "rloo")) is PolicyGradient
    assert type(method_for(obj.DPOConfig())) is PreferencePairs
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        method_for(obj.VBoNConfig(n=4), "sgd")


def test_unknown_names_and_fields_are_named():
    with pytest.raises(ValueError, match="unknown method 'ppo' \\(the KL-RL baseline is "
                                         "'kl_rl'"):
        build_method("ppo")
    with pytest.raises(ValueError, match="KLRLConfig has no field 'n'"):
        build_method("kl_rl", n=4)
    with pytest.raises(ValueError, match="no method optimises objective 3"):
        spec_of(3)


def test_tables_name_the_setting_and_the_optimizer_where_there_is_a_choice():
    kl_rl, bonbon = METHODS["kl_rl"], METHODS["bonbon"]
    assert kl_rl.describe(obj.KLRLConfig(beta=0.05), "ppo") == "beta=0.05, PPO"
    assert bonbon.describe(obj.BoNBoNConfig(n=8), "rloo") == "n=8"
    assert METHODS["vbon"].title(obj.VBoNConfig(n=4, exact=True)) == "vBoN (exact)"
    assert METHODS["dpo"].title(obj.DPOConfig(length_normalised=True)) == \
        "DPO (length-normalised)"
    assert METHODS["ipo"].title(obj.IPOConfig(length_normalised=True)) == \
        "IPO (length-normalised)"
    assert METHODS["ipo"].title(obj.IPOConfig()) == "IPO"


def test_the_experiment_sweeps_every_registered_method_from_the_base_config():
    config = configs.get("base")
    config.methods = tuple(METHODS)
    config.train.optimizer = "ppo"
    runs = method_runs(config)
    expected = sum(len(config[n][METHODS[n].setting + "s"]) if METHODS[n].setting + "s"
                   in config[n] else 1 for n in METHODS)
    assert len(runs) == expected and len({r.key for r in runs}) == expected
    by_key = {r.key: r for r in runs}
    assert (by_key["kl_rl-beta0.05"].name, by_key["kl_rl-beta0.05"].setting) == (
        "KL-RL", "beta=0.05, PPO")
    assert type(by_key["kl_rl-beta0.05"].method) is PPO
    assert by_key["dpo-beta0.1"].method.n == config.dpo.n
    assert by_key["jbond"].setting == f"eta={config.jbond.anchor_eta:g}"
    assert [r.needs_reference_cdf for r in runs] == [
        METHODS[r.key.split("-")[0]].needs_reference_cdf for r in runs]
    assert {r.key for r in runs if r.needs_reference_cdf} >= {"vbon-n4", "ctrl-beta0.1"}


def test_a_config_without_the_section_of_a_method_is_refused():
    config = configs.get("base")
    del config["dpo"]
    config.methods = ("dpo",)
    with pytest.raises(ValueError, match="no config.dpo section"):
        method_runs(config)


@pytest.mark.parametrize("name", TOY_METHODS)
def test_the_toy_builds_its_methods_from_the_registry(name):
    objective, method = _toy_method(name, 3, 4, 0.2, "ppo")
    spec = METHODS[name]
    assert spec_of(objective) is spec
    if spec.setting == "n":
        assert objective.n == 3
    elif spec.setting == "beta":
        assert objective.beta == 0.2
    assert (type(method) is PPO) == ("ppo" in spec.optimizers)
