"""max@k (PKPO): the estimator and the gradient weights against brute force over k-subsets,
their identities, unbiasedness by exact enumeration on a tiny softmax policy, the KL-regularised
target, and the trained method on the enumerable toy."""

import itertools
import math

import numpy as np
import pytest

from bonjax import bon
from bonjax import objectives as obj

REWARDS = np.array([[0.3, -1.2, 2.0, 0.7, 0.7, -0.1],
                    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
                    [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]], np.float32)


def _brute_force(g_BxN, k, leave_one_out):
    """``s_i = (1/C(n,k)) sum_{|I| = k, i in I} (max_I g - [max_{I \\ i} g])`` and ``rho``."""
    B, n = g_BxN.shape
    s_BxN, rho_B = np.zeros((B, n)), np.zeros(B)
    for subset in itertools.combinations(range(n), k):
        top_B = g_BxN[:, subset].max(1)
        rho_B += top_B
        for i in subset:
            rest = [j for j in subset if j != i]
            s_BxN[:, i] += top_B - (g_BxN[:, rest].max(1) if leave_one_out and rest else 0)
    return s_BxN / math.comb(n, k), rho_B / math.comb(n, k)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
def test_closed_form_weights_equal_brute_force_over_k_subsets(k):
    g = REWARDS.astype(np.float64)
    s_want, rho_want = _brute_force(g, k, leave_one_out=False)
    np.testing.assert_allclose(obj.max_at_k_weights(REWARDS, k, leave_one_out=False), s_want,
                               atol=2e-6)
    np.testing.assert_allclose(obj.max_at_k_estimate(REWARDS, k), rho_want, atol=2e-6)
    # sum_i s_i = k rho
    np.testing.assert_allclose(s_want.sum(1), k * rho_want, atol=1e-12)
    if k >= 2:
        loo_want, _ = _brute_force(g, k, leave_one_out=True)
        loo = np.asarray(obj.max_at_k_weights(REWARDS, k))
        np.testing.assert_allclose(loo, loo_want, atol=2e-6)
        assert (loo >= -1e-6).all()


def test_k_one_is_the_mean_and_k_n_the_max():
    n = REWARDS.shape[1]
    np.testing.assert_allclose(obj.max_at_k_estimate(REWARDS, 1), REWARDS.mean(1), rtol=1e-6)
    np.testing.assert_allclose(obj.max_at_k_estimate(REWARDS, n), REWARDS.max(1))
    np.testing.assert_allclose(obj.max_at_k_weights(REWARDS, 1, False), REWARDS / n, rtol=1e-6)
    # k = 1 leave-one-out: RLOO, (g_i - mean of the others) / n.
    others = (REWARDS.sum(1, keepdims=True) - REWARDS) / (n - 1)
    np.testing.assert_allclose(obj.max_at_k_weights(REWARDS, 1), (REWARDS - others) / n,
                               atol=1e-6)
    # k = n: every sample gets the max; leave-one-out, the best gets g_max - g_second only.
    np.testing.assert_allclose(obj.max_at_k_weights(REWARDS, n, False),
                               np.repeat(REWARDS.max(1, keepdims=True), n, 1))
    loo = np.asarray(obj.max_at_k_weights(REWARDS[2:], n))
    np.testing.assert_allclose(loo, [[1.0, 0, 0, 0, 0, 0]])
    np.testing.assert_allclose(obj.max_at_k_weights(REWARDS[1:2], n), 0.0)  # ties: no winner


@pytest.mark.parametrize("leave_one_out", [False, True])
def test_estimates_are_unbiased_by_exact_enumeration_on_a_softmax_policy(leave_one_out):
    """Every n-tuple of a 3-outcome softmax policy: E[rho] = maxg@k and E[sum_i s_i grad log
    pi(y_i)] = grad maxg@k (central differences in float64)."""
    theta = np.array([0.4, -0.3, 0.1])
    g_Y = np.array([1.0, -0.5, 2.5])

    def policy(theta):
        p = np.exp(theta - theta.max())
        return p / p.sum()

    p_Y, n = policy(theta), 4
    tuples = np.array(list(itertools.product(range(3), repeat=n)))
    prob_T = p_Y[tuples].prod(1)
    rewards_TxN = g_Y[tuples].astype(np.float32)
    for k in range(1, n + 1):
        rho_T = np.asarray(obj.max_at_k_estimate(rewards_TxN, k), np.float64)
        np.testing.assert_allclose(prob_T @ rho_T, obj.max_at_k_exact(p_Y, g_Y, k), atol=1e-6)
        s_TxN = np.asarray(obj.max_at_k_weights(rewards_TxN, k, leave_one_out), np.float64)
        score_TxNxY = np.eye(3)[tuples] - p_Y  # grad_theta log softmax(theta)_y = e_y - p
        grad_Y = np.einsum("t,tn,tny->y", prob_T, s_TxN, score_TxNxY)
        h = 1e-6
        want_Y = [(obj.max_at_k_exact(policy(theta + h * e), g_Y, k)
                   - obj.max_at_k_exact(policy(theta - h * e), g_Y, k)) / (2 * h)
                  for e in np.eye(3)]
        np.testing.assert_allclose(grad_Y, want_Y, atol=2e-6)


def test_kl_regularised_target_is_the_tilt_at_k_one_and_stationary_otherwise():
    rng = np.random.default_rng(0)
    pi_ref_Y, g_Y = rng.dirichlet(np.ones(6)), rng.normal(size=6)
    np.testing.assert_allclose(obj.max_at_k_optimal_policy(pi_ref_Y, g_Y, 1, 0.5),
                               bon.tilted_distribution(pi_ref_Y, g_Y, 0.5), atol=1e-12)
    beta = 0.5

    def value(p):
        return obj.max_at_k_exact(p, g_Y, 3) - beta * np.sum(p * np.log(p / pi_ref_Y))

    target = obj.max_at_k_optimal_policy(pi_ref_Y, g_Y, 3, beta)
    for _ in range(20):  # no nearby policy does better
        nearby = target * np.exp(1e-3 * rng.normal(size=6))
        assert value(nearby / nearby.sum()) < value(target)
    assert value(target) > value(pi_ref_Y)


def test_bad_k_raises_value_error_naming_the_value():
    with pytest.raises(ValueError, match="k must be <= n = 6.*got k = 7"):
        obj.max_at_k_weights(REWARDS, 7)
    for bad in [0, -1, 1.5, True]:
        with pytest.raises(ValueError, match=f"k must be an integer >= 1, got {bad!r}"):
            obj.max_at_k_estimate(REWARDS, bad)
    with pytest.raises(ValueError, match="beta must be finite and > 0, got -0.1"):
        obj.max_at_k_optimal_policy(np.array([0.5, 0.5]), np.array([0.0, 1.0]), 2, -0.1)


def test_max_at_k_method_moves_the_toy_policy_towards_its_optimum():
    """max@2 - KL with beta = 1 from n = 8 samples per prompt. The leave-one-out weights are
    unbiased but not centred (all >= 0), so with n = 4 the clipped, Adam-normalised steps first
    sharpen the policy on sampled outcomes: measured KL(pi || pi*) 0.222 -> 0.386 after 30
    steps (n = 4); with n = 8, 0.222 -> 0.192 after 30 steps and 0.144 after 60."""
    from bonjax.toy import ToyProblem, train_toward_target
    from bonjax.training.registry import method_for

    toy = ToyProblem(seed=0)
    config = obj.MaxAtKConfig(k=2, beta=1.0)
    target = obj.max_at_k_optimal_policy(toy.probs(toy.ref_params), toy.reward_S, 2, 1.0)
    result = train_toward_target(method_for(config, samples_per_prompt=8), target, steps=30,
                                 problem=toy)
    print(result)
    assert result["kl_to_target_end"] < 0.92 * result["kl_to_target_start"], result
    assert result["reward_end"] > result["reward_start"] + 0.1, result
    with pytest.raises(ValueError, match="k must be <= n = 4.*got k = 5"):
        method_for(obj.MaxAtKConfig(k=5, beta=1.0), samples_per_prompt=4)
