"""Regularised Best-of-N points from reference samples (bonjax.evaluation.rbon): the reward and
win-rate U-statistics against enumeration of subsets, beta = 0 against the BoN estimators, the
reward against the exact RBoN law of the toy, and the KL claim."""

import itertools
import math

import numpy as np
import pytest

from bonjax import bon
from bonjax.evaluation import bon_expected_max, bon_win_rate_empirical
from bonjax.evaluation.rbon import RBON_METHOD, rbon_estimates, rbon_reference_points


def _enumerate(reward_M, log_ref_M, n, beta):
    """Mean over n-subsets of the top scorer's reward, and over (opponent, n-subset of the
    others) of the top scorer's win (ties half)."""
    score_M = reward_M + beta * log_ref_M
    M = reward_M.size
    tops = [reward_M[max(s, key=lambda i: (score_M[i], reward_M[i]))]
            for s in itertools.combinations(range(M), n)]
    wins = []
    for j in range(M):
        others = [i for i in range(M) if i != j]
        for s in itertools.combinations(others, n):
            r = reward_M[max(s, key=lambda i: (score_M[i], reward_M[i]))]
            wins.append((r > reward_M[j]) + 0.5 * (r == reward_M[j]))
    return np.mean(tops), np.mean(wins)


@pytest.mark.parametrize("beta", [0.0, 0.05, 0.5, 10.0])
@pytest.mark.parametrize("n", [1, 2, 4, 7])
def test_estimates_equal_enumeration_of_subsets(n, beta):
    rng = np.random.default_rng(n)
    reward_2xM = rng.integers(0, 4, size=(2, 8)).astype(np.float64)  # ties in the reward
    log_ref_2xM = rng.normal(-10.0, 3.0, size=(2, 8))
    reward_B, win_B = rbon_estimates(reward_2xM, log_ref_2xM, n, beta)
    for b in range(2):
        want_reward, want_win = _enumerate(reward_2xM[b], log_ref_2xM[b], n, beta)
        assert reward_B[b] == pytest.approx(want_reward, abs=1e-12)
        assert win_B[b] == pytest.approx(want_win, abs=1e-12)


def test_beta_zero_is_best_of_n():
    rng = np.random.default_rng(0)
    reward_BxM = rng.integers(0, 5, size=(4, 12)).astype(np.float64)
    log_ref_BxM = rng.normal(size=(4, 12))
    for n in [1, 3, 11]:
        reward_B, win_B = rbon_estimates(reward_BxM, log_ref_BxM, n, 0.0)
        np.testing.assert_allclose(reward_B, bon_expected_max(reward_BxM, n), atol=1e-12)
        assert win_B.mean() == pytest.approx(bon_win_rate_empirical(reward_BxM, n).mean)
    assert rbon_estimates(reward_BxM, log_ref_BxM, 12, 0.0)[1] is None


def test_reward_is_unbiased_for_the_exact_rbon_law_and_its_kl_is_at_most_bons():
    """On an enumerable law: RBoN's exact law is BoN's under the score (ties by draw index);
    the mean of the estimate over 400 replicates of M = 12 samples lies within 4 standard
    errors of its exact reward, and its exact KL is at most log n - (n-1)/n."""
    rng = np.random.default_rng(1)
    pi_Y = rng.dirichlet(np.full(40, 0.5))
    reward_Y = rng.normal(size=40)
    n, beta = 4, 0.3
    p_Y = bon.bon_distribution_draw_index(pi_Y, reward_Y + beta * np.log(pi_Y), n)
    exact_reward = float(p_Y @ reward_Y)
    kl = float(np.sum(p_Y * np.log(p_Y / pi_Y), where=p_Y > 0))
    assert kl <= bon.bon_kl(n) + 1e-12
    assert exact_reward < float(bon.bon_distribution_draw_index(pi_Y, reward_Y, n) @ reward_Y)
    draws_RxM = rng.choice(40, size=(400, 12), p=pi_Y)
    reward_R, _ = rbon_estimates(reward_Y[draws_RxM], np.log(pi_Y)[draws_RxM], n, beta)
    assert abs(reward_R.mean() - exact_reward) < 4 * reward_R.std() / math.sqrt(400)


def test_points_share_bons_kl_and_name_their_setting():
    rng = np.random.default_rng(2)
    reward_BxM, log_ref_BxM = rng.normal(size=(5, 10)), rng.normal(-20, 5, size=(5, 10))
    points = rbon_reference_points(reward_BxM, log_ref_BxM, (2, 10), (0.0, 0.1))
    assert [p.setting for p in points] == ["n=2, beta=0", "n=2, beta=0.1", "n=10, beta=0",
                                           "n=10, beta=0.1"]
    assert {p.method for p in points} == {RBON_METHOD}
    assert [p.kl for p in points] == [(float(bon.bon_kl(n)), 0.0) for n in (2, 2, 10, 10)]
    assert points[2].win_rate is None and points[0].win_rate is not None
    assert points[1].reward.mean <= points[0].reward.mean + 1e-12


def test_bad_settings_raise_value_error_naming_the_value():
    reward_BxM = np.zeros((2, 4))
    with pytest.raises(ValueError, match="beta must be finite and >= 0, got -0.1"):
        rbon_estimates(reward_BxM, reward_BxM, 2, -0.1)
    with pytest.raises(ValueError, match=r"log_ref_BxM must have the rewards' shape \(2, 4\)"):
        rbon_estimates(reward_BxM, np.zeros((2, 3)), 2, 0.1)
    with pytest.raises(ValueError, match="log_ref_BxM has 1 non-finite"):
        rbon_estimates(reward_BxM, np.array([[0, 0, 0, -np.inf], [0, 0, 0, 0]]), 2, 0.1)
    with pytest.raises(ValueError, match=r"N = 5 is outside \[1, 4\]"):
        rbon_reference_points(reward_BxM, reward_BxM, (5,), (0.1,))
    with pytest.raises(ValueError, match="betas is empty"):
        rbon_reference_points(reward_BxM, reward_BxM, (2,), ())
