"""The experiment's inference-time points from the test prompts' reference rewards
(bonjax.experiment.reference_points): Best-of-N and soft Best-of-n, their config checks, their
results.json records and the plot."""

import numpy as np
import pytest

from bonjax.evaluation import bon_curve, plot_reward_vs_kl
from bonjax.evaluation.soft_bon import SOFT_BON_METHOD, soft_bon_estimates
from bonjax.experiment import check_config
from bonjax.experiment.reference_points import (
    check_reference_settings,
    reference_points,
    selection_records,
)
from experiments import configs


def test_points_of_the_tiny_config():
    config = configs.get("test_tiny")
    refs_PxM = np.random.default_rng(0).normal(size=(8, config.reference.samples))
    bon_points, selection = reference_points(config, refs_PxM)
    assert [p.setting for p in bon_points] == ["N=1", "N=2", "N=4"]
    assert [(p.method, p.setting) for p in selection] == [
        (SOFT_BON_METHOD, "n=2, lambda=0.5"), (SOFT_BON_METHOD, "n=4, lambda=0.5")]
    reward_P, kl_P = soft_bon_estimates(refs_PxM, 4, 0.5)
    assert selection[1].reward.mean == pytest.approx(reward_P.mean())
    assert selection[1].kl.mean == pytest.approx(kl_P.mean())
    config.soft_bon.ns = ()
    assert reference_points(config, refs_PxM)[1] == []


def test_records_carry_the_gap_to_the_bon_curve(tmp_path):
    config = configs.get("cpu_demo")
    refs_PxM = np.random.default_rng(1).normal(size=(6, config.reference.samples))
    bon_points, selection = reference_points(config, refs_PxM)
    curve = bon_curve(refs_PxM)
    records = selection_records(selection, curve)
    assert len(records) == len(config.soft_bon.ns) * len(config.soft_bon.lambdas)
    for record, point in zip(records, selection, strict=True):
        assert record["win_rate"] is None and record["setting"] == point.setting
        at_curve = np.interp(point.kl.mean, curve.kl, curve.reward)
        assert record["bon_gap"] == pytest.approx(point.reward.mean - at_curve)
    path = plot_reward_vs_kl(tmp_path / "plot.png", bon_points + selection, bon_curve=curve)
    assert (tmp_path / "plot.png").stat().st_size > 0 and path.endswith("plot.png")


@pytest.mark.parametrize("field, value, message", [
    ("soft_bon.ns", (2, 9), r"config.soft_bon.ns = \(2, 9\) must be integers in \[1, M = 8\]"),
    ("soft_bon.ns", (0,), r"config.soft_bon.ns = \(0,\) must be integers"),
    ("soft_bon.lambdas", (), r"config.soft_bon.lambdas = \(\) must be finite numbers > 0"),
    ("soft_bon.lambdas", (0.5, 0.0), r"lambdas = \(0.5, 0.0\) must be finite numbers > 0"),
    ("soft_bon.lambdas", (float("inf"),), r"lambdas = \(inf,\) must be finite"),
    ("bon.ns", (1, 8), r"config.bon.ns = \(1, 8\) must be integers in \[1, M - 1 = 7\]"),
])
def test_bad_settings_raise_naming_the_field(field, value, message):
    config = configs.get("test_tiny")
    section, leaf = field.split(".")
    config[section][leaf] = value
    with pytest.raises(ValueError, match=message):
        check_config(config)


def test_no_soft_points_need_no_lambda():
    check_reference_settings((1, 2), (), (), 4)
    with pytest.raises(ValueError, match="at least one when config.soft_bon.ns"):
        check_reference_settings((1, 2), (2,), (), 4)
