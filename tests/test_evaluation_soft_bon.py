"""Soft Best-of-n points from reference rewards (bonjax.evaluation.soft_bon): the density ratio
against the exact discrete law and enumeration of subsets, the estimators against Monte Carlo
and their limits (n = 1, lambda -> 0: the BoN points, lambda -> inf: pi_ref)."""

import itertools
import math

import jax
import numpy as np
import pytest

from bonjax import bon
from bonjax.evaluation import bon_expected_max
from bonjax.evaluation.soft_bon import (
    SOFT_BON_METHOD,
    soft_bon_estimates,
    soft_bon_ratio,
    soft_bon_ratio_without_replacement,
    soft_bon_reference_points,
)

LAMBDAS = [1e-3, 0.05, 0.3, 1.0, 10.0]


def _law(size=12, seed=0):
    """A discrete reward law with ties: weights pi_Y and rewards r_Y."""
    rng = np.random.default_rng(seed)
    reward_Y = rng.normal(size=size)
    reward_Y[1] = reward_Y[4]
    return rng.dirichlet(np.ones(size)), reward_Y


def _exact_point(pi_Y, reward_Y, n, lam):
    p_Y = bon.soft_bon_distribution(pi_Y, reward_Y, n, lam)
    kl = float(np.sum(p_Y * np.log(p_Y / pi_Y), where=p_Y > 0))
    return float(p_Y @ reward_Y), kl


@pytest.mark.parametrize("lam", LAMBDAS)
@pytest.mark.parametrize("n", [1, 2, 5])
def test_ratio_is_the_exact_law_over_pi_ref(n, lam):
    """p(y) / pi_ref(y) = rho(r(y)) on a discrete law with ties (the derivation)."""
    pi_Y, reward_Y = _law()
    rho_Y = soft_bon_ratio(reward_Y, n, lam, pi_Y)
    np.testing.assert_allclose(pi_Y * rho_Y, bon.soft_bon_distribution(pi_Y, reward_Y, n, lam),
                               atol=1e-9)
    assert rho_Y[1] == pytest.approx(rho_Y[4], abs=1e-12)  # equal rewards, equal ratios


def test_ratio_is_the_exact_law_on_the_toy():
    from bonjax.toy import ToyProblem

    toy = ToyProblem(seed=0)
    pi_S = toy.probs(toy.ref_params)
    for n, lam in [(4, 0.2), (8, 1.0)]:
        np.testing.assert_allclose(pi_S * soft_bon_ratio(toy.reward_S, n, lam, pi_S),
                                   bon.soft_bon_distribution(pi_S, toy.reward_S, n, lam),
                                   atol=1e-9)


@pytest.mark.parametrize("lam", LAMBDAS)
@pytest.mark.parametrize("n", [1, 2, 3, 6, 9])
def test_ratio_without_replacement_equals_enumeration_of_subsets(n, lam):
    rng = np.random.default_rng(n)
    reward_M = rng.normal(size=9)
    reward_M[2] = reward_M[7]  # a tie
    share_M = np.zeros(9)
    for subset in itertools.combinations(range(9), n):
        logits = reward_M[list(subset)] / lam
        share = np.exp(logits - logits.max())
        share_M[list(subset)] += share / share.sum()
    expected_M = 9 * share_M / math.comb(9, n)
    got_M = soft_bon_ratio_without_replacement(reward_M, n, lam)
    np.testing.assert_allclose(got_M, expected_M, atol=1e-11)
    assert got_M.mean() == pytest.approx(1.0, abs=1e-11)


def test_plug_in_ratio_is_the_soft_law_of_the_empirical_distribution():
    reward_M = np.random.default_rng(3).normal(size=20)
    for lam in [0.01, 0.4]:
        np.testing.assert_allclose(
            soft_bon_ratio(reward_M, 5, lam) / 20,
            bon.soft_bon_distribution(np.full(20, 1 / 20), reward_M, 5, lam), atol=1e-9)


def test_reward_matches_monte_carlo_soft_selection_on_subsets():
    """The U-statistic is the mean reward of soft BoN run on random n-subsets of the M
    references (select_soft's Gumbel-max choice), within 4 standard errors."""
    rng = np.random.default_rng(5)
    reward_1xM = rng.normal(size=(1, 24))
    n, lam, draws = 6, 0.3, 40_000
    subsets_DxN = np.argsort(rng.random((draws, 24)), axis=1)[:, :n]
    rewards_DxN = reward_1xM[0, subsets_DxN].astype(np.float32)
    chosen_D = np.asarray(bon.select_soft(rewards_DxN, jax.random.key(0), lam))
    kept_D = rewards_DxN[np.arange(draws), chosen_D]
    reward_B, _ = soft_bon_estimates(reward_1xM, n, lam)
    assert abs(kept_D.mean() - reward_B[0]) < 4 * kept_D.std() / math.sqrt(draws)


@pytest.mark.parametrize("n, lam", [(4, 0.3), (8, 1.0)])
def test_estimates_approach_the_exact_point_of_the_law(n, lam):
    """Reference rewards drawn from a discrete law: the reward estimate is unbiased (the mean
    over 300 replicates of M = 16 lies within 4 standard errors of the exact reward) and the
    plug-in KL converges (M = 3000: within 0.02 nats of the exact KL)."""
    pi_Y, reward_Y = _law(size=30, seed=2)
    exact_reward, exact_kl = _exact_point(pi_Y, reward_Y, n, lam)
    rng = np.random.default_rng(0)
    refs_RxM = reward_Y[rng.choice(30, size=(300, 16), p=pi_Y)]
    reward_R, _ = soft_bon_estimates(refs_RxM, n, lam)
    assert abs(reward_R.mean() - exact_reward) < 4 * reward_R.std() / math.sqrt(300)
    for refs_M in reward_Y[rng.choice(30, size=(2, 3000), p=pi_Y)]:
        rho_M = soft_bon_ratio(refs_M, n, lam)
        assert np.mean(rho_M * np.log(rho_M)) == pytest.approx(exact_kl, abs=0.02)


def test_limits_are_the_bon_points_and_pi_ref():
    refs_BxM = np.random.default_rng(1).normal(size=(4, 32))
    for n in [2, 4, 16]:
        reward_B, kl_B = soft_bon_estimates(refs_BxM, n, 1e-6)
        np.testing.assert_allclose(reward_B, bon_expected_max(refs_BxM, n), atol=1e-12)
        j_M = np.arange(1, 33)
        q_M = (j_M / 32) ** n - ((j_M - 1) / 32) ** n
        np.testing.assert_allclose(kl_B, np.sum(q_M * np.log(32 * q_M)), atol=1e-9)
        assert np.all(kl_B <= bon.bon_kl(n))
        reward_B, kl_B = soft_bon_estimates(refs_BxM, n, 1e6)
        np.testing.assert_allclose(reward_B, refs_BxM.mean(1), atol=1e-5)
        np.testing.assert_allclose(kl_B, 0.0, atol=1e-9)
    reward_B, kl_B = soft_bon_estimates(refs_BxM, 1, 0.1)
    np.testing.assert_allclose(reward_B, refs_BxM.mean(1), atol=1e-12)
    np.testing.assert_allclose(kl_B, 0.0, atol=1e-15)


def test_kl_and_reward_grow_as_lambda_falls():
    refs_BxM = np.random.default_rng(2).normal(size=(3, 20))
    points = [soft_bon_estimates(refs_BxM, 8, lam) for lam in [3.0, 1.0, 0.3, 0.1]]
    for (r0, k0), (r1, k1) in itertools.pairwise(points):
        assert np.all(r1 > r0) and np.all(k1 > k0)


def test_reference_points_name_their_family_and_setting():
    refs_BxM = np.random.default_rng(4).normal(size=(5, 12))
    points = soft_bon_reference_points(refs_BxM, (2, 8), (0.5, 2.0))
    assert [p.setting for p in points] == ["n=2, lambda=0.5", "n=2, lambda=2", "n=8, lambda=0.5",
                                           "n=8, lambda=2"]
    assert {p.method for p in points} == {SOFT_BON_METHOD}
    assert all(p.win_rate is None and p.kl.stderr > 0 and p.reward.stderr > 0 for p in points)
    reward_B, kl_B = soft_bon_estimates(refs_BxM, 8, 2.0)
    assert points[3].reward.mean == pytest.approx(reward_B.mean())
    assert points[3].kl.mean == pytest.approx(kl_B.mean())


def test_bad_settings_raise_value_error_naming_the_value():
    refs_BxM = np.zeros((2, 4))
    for bad in [0.0, -1.0, float("inf"), float("nan")]:
        with pytest.raises(ValueError, match=f"lambda must be finite and > 0, got {bad}"):
            soft_bon_estimates(refs_BxM, 2, bad)
    with pytest.raises(ValueError, match="N = 5 is outside \\[1, 4\\]"):
        soft_bon_reference_points(refs_BxM, (2, 5), (1.0,))
    with pytest.raises(ValueError, match="n = 5 exceeds the M = 4"):
        soft_bon_ratio_without_replacement(np.zeros(4), 5, 1.0)
    with pytest.raises(ValueError, match="lambdas is empty"):
        soft_bon_reference_points(refs_BxM, (2,), ())
    with pytest.raises(ValueError, match="rewards must be finite"):
        soft_bon_ratio(np.array([0.0, np.nan]), 2, 1.0)
