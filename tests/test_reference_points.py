"""The experiment's inference-time points from the test prompts' reference samples
(bonjax.experiment.reference_points): Best-of-N, soft Best-of-n and RBoN, their config checks,
their results.json records and the plot."""

import logging

import numpy as np
import pytest

from bonjax.bon import bon_kl
from bonjax.evaluation import bon_curve, plot_reward_vs_kl
from bonjax.evaluation.rbon import RBON_METHOD, rbon_estimates
from bonjax.evaluation.soft_bon import SOFT_BON_METHOD, soft_bon_estimates
from bonjax.experiment import check_config
from bonjax.experiment.reference_points import (
    check_reference_settings,
    reference_points,
    selection_records,
)
from bonjax.training.reference import ReferenceSamples
from experiments import configs


def _samples(P, M, seed=0):
    rng = np.random.default_rng(seed)
    return ReferenceSamples(rng.normal(size=(P, M)), rng.normal(-30.0, 8.0, size=(P, M)))


def test_points_of_the_tiny_config():
    config = configs.get("test_tiny")
    refs = _samples(8, config.reference.samples)
    bon_points, selection = reference_points(config, refs)
    assert [p.setting for p in bon_points] == ["N=1", "N=2", "N=4"]
    assert [(p.method, p.setting) for p in selection] == [
        (SOFT_BON_METHOD, "n=2, lambda=0.5"), (SOFT_BON_METHOD, "n=4, lambda=0.5"),
        (RBON_METHOD, "n=2, beta=0.1"), (RBON_METHOD, "n=4, beta=0.1")]
    reward_P, kl_P = soft_bon_estimates(refs.rewards_PxM, 4, 0.5)
    assert selection[1].reward.mean == pytest.approx(reward_P.mean())
    assert selection[1].kl.mean == pytest.approx(kl_P.mean())
    reward_P, win_P = rbon_estimates(refs.rewards_PxM, refs.log_ref_PxM, 4, 0.1)
    assert selection[3].reward.mean == pytest.approx(reward_P.mean())
    assert selection[3].win_rate.mean == pytest.approx(win_P.mean())
    assert selection[3].kl == (pytest.approx(bon_kl(4)), 0.0)
    config.soft_bon.ns, config.rbon.ns = (), ()
    assert reference_points(config, refs)[1] == []


def test_a_cache_without_log_probabilities_gives_no_rbon_points(caplog):
    config = configs.get("test_tiny")
    refs = ReferenceSamples(_samples(8, config.reference.samples).rewards_PxM, None)
    with caplog.at_level(logging.WARNING):
        _, selection = reference_points(config, refs)
    assert {p.method for p in selection} == {SOFT_BON_METHOD}
    assert "no RBoN points" in caplog.text


def test_records_carry_the_gap_to_the_bon_curve(tmp_path):
    config = configs.get("cpu_demo")
    refs = _samples(6, config.reference.samples, seed=1)
    bon_points, selection = reference_points(config, refs)
    curve = bon_curve(refs.rewards_PxM)
    records = selection_records(selection, curve)
    assert len(records) == (len(config.soft_bon.ns) * len(config.soft_bon.lambdas)
                            + len(config.rbon.ns) * len(config.rbon.betas))
    for record, point in zip(records, selection, strict=True):
        assert record["setting"] == point.setting and record["method"] == point.method
        at_curve = np.interp(point.kl.mean, curve.kl, curve.reward)
        assert record["bon_gap"] == pytest.approx(point.reward.mean - at_curve)
        assert (record["win_rate"] is None) == (point.method == SOFT_BON_METHOD)
    path = plot_reward_vs_kl(tmp_path / "plot.png", bon_points + selection, bon_curve=curve)
    assert (tmp_path / "plot.png").stat().st_size > 0 and path.endswith("plot.png")


@pytest.mark.parametrize("field, value, message", [
    ("soft_bon.ns", (2, 9), r"config.soft_bon.ns = \(2, 9\) must be integers in \[1, M = 8\]"),
    ("soft_bon.ns", (0,), r"config.soft_bon.ns = \(0,\) must be integers"),
    ("soft_bon.lambdas", (), r"config.soft_bon.lambdas = \(\) must be finite numbers > 0"),
    ("soft_bon.lambdas", (0.5, 0.0), r"lambdas = \(0.5, 0.0\) must be finite numbers > 0"),
    ("soft_bon.lambdas", (float("inf"),), r"lambdas = \(inf,\) must be finite"),
    ("rbon.ns", (9,), r"config.rbon.ns = \(9,\) must be integers in \[1, M = 8\]"),
    ("rbon.betas", (-0.1,), r"config.rbon.betas = \(-0.1,\) must be finite numbers >= 0"),
    ("bon.ns", (1, 8), r"config.bon.ns = \(1, 8\) must be integers in \[1, M - 1 = 7\]"),
])
def test_bad_settings_raise_naming_the_field(field, value, message):
    config = configs.get("test_tiny")
    section, leaf = field.split(".")
    config[section][leaf] = value
    with pytest.raises(ValueError, match=message):
        check_config(config)


def test_no_points_need_no_setting():
    empty = {"bon.ns": (1, 2), "soft_bon.ns": (), "soft_bon.lambdas": (), "rbon.ns": (),
             "rbon.betas": ()}
    check_reference_settings(empty, 4)
    check_reference_settings({**empty, "rbon.ns": (2,), "rbon.betas": (0.0,)}, 4)
    with pytest.raises(ValueError, match="at least one when config.soft_bon.ns"):
        check_reference_settings({**empty, "soft_bon.ns": (2,)}, 4)
