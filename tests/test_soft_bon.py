"""Soft Best-of-n (bonjax.bon): the exact law against enumeration of n-tuples, its limits
(n = 1, lambda -> 0, n -> inf) and the Gumbel-max choice against the exact law."""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bonjax import bon

SPACES = [
    (np.array([0.3, 0.1, 0.3, 0.2, 0.1]), np.array([0.0, 1.0, 1.0, 2.0, 2.0])),  # ties
    (np.array([0.25, 0.25, 0.25, 0.25]), np.array([5.0, 5.0, 5.0, 5.0])),
    (np.random.default_rng(0).dirichlet(np.ones(5)), np.random.default_rng(1).normal(size=5)),
]


def _enumerate_soft(pi_ref_Y, reward_Y, n, lam):
    """Sum over all |Y|^n draws of P(draws) * softmax(r / lambda) of each draw."""
    dist_Y = np.zeros(len(pi_ref_Y))
    for draws in itertools.product(range(len(pi_ref_Y)), repeat=n):
        logits = reward_Y[list(draws)] / lam
        share = np.exp(logits - logits.max())
        share /= share.sum()
        prob = math.prod(pi_ref_Y[y] for y in draws)
        for y, s in zip(draws, share, strict=True):
            dist_Y[y] += prob * s
    return dist_Y


def _kl(p, q):
    return float(np.sum(p * np.log(p / q), where=p > 0))


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("lam", [0.3, 1.0, 5.0])
def test_exact_law_equals_enumeration_of_all_n_tuples(n, lam):
    for pi_ref_Y, reward_Y in SPACES:
        got = bon.soft_bon_distribution(pi_ref_Y, reward_Y, n, lam)
        np.testing.assert_allclose(got, _enumerate_soft(pi_ref_Y, reward_Y, n, lam), atol=1e-12)
        assert abs(got.sum() - 1) < 1e-12


def test_one_draw_is_the_reference_and_lambda_to_zero_is_best_of_n_with_its_tie_rule():
    for pi_ref_Y, reward_Y in SPACES:
        np.testing.assert_allclose(bon.soft_bon_distribution(pi_ref_Y, reward_Y, 1, 0.5),
                                   pi_ref_Y, atol=1e-15)
        for n in [2, 4, 7]:
            # Ties share the choice uniformly: the law of the lowest-draw-index rule (a).
            np.testing.assert_allclose(bon.soft_bon_distribution(pi_ref_Y, reward_Y, n, 1e-4),
                                       bon.bon_distribution_draw_index(pi_ref_Y, reward_Y, n),
                                       atol=1e-12)
    pi_ref_Y, reward_Y = SPACES[0]
    # With ties, rule (b) differs from the limit: the check tells the rules apart.
    other = bon.bon_distribution_fixed_order(pi_ref_Y, reward_Y, 4)
    assert np.abs(bon.soft_bon_distribution(pi_ref_Y, reward_Y, 4, 1e-4) - other).max() > 0.01


@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_many_draws_approach_the_tilted_law_with_decreasing_kl(lam):
    pi_ref_Y, reward_Y = SPACES[2]
    tilted_Y = bon.tilted_distribution(pi_ref_Y, reward_Y, lam)
    kls = [_kl(bon.soft_bon_distribution(pi_ref_Y, reward_Y, n, lam), tilted_Y)
           for n in [1, 2, 4, 8, 16, 32, 64, 128]]
    assert all(np.diff(kls) < 0), kls
    assert kls[-1] < 1e-3 * kls[0], kls
    # The tilt is the optimum of E r - lambda KL: any other law scores lower.
    def value(p):
        return p @ reward_Y - lam * _kl(p, pi_ref_Y)

    for p in [pi_ref_Y, bon.soft_bon_distribution(pi_ref_Y, reward_Y, 8, lam)]:
        assert value(p) < value(tilted_Y)


def test_gumbel_max_choice_follows_the_exact_law():
    """Chi-square of 100k soft choices among n = 4 reference draws (tail 1e-6)."""
    num, n, lam = 100_000, 4, 0.7
    pi_ref_Y, reward_Y = SPACES[0]
    key_draws, key_choice = jax.random.split(jax.random.key(3))
    draws_BxN = jax.random.categorical(key_draws, jnp.log(jnp.asarray(pi_ref_Y, jnp.float32)),
                                       shape=(num, n))
    chosen_B = bon.select_soft(jnp.asarray(reward_Y, jnp.float32)[draws_BxN], key_choice, lam)
    counts_Y = np.bincount(np.asarray(bon.take_selected(draws_BxN, chosen_B)), minlength=5)
    threshold = stats.chi2.isf(1e-6, df=len(pi_ref_Y) - 1)

    def chi_square(dist_Y):
        return (((counts_Y - num * dist_Y) ** 2) / (num * dist_Y)).sum()

    assert chi_square(bon.soft_bon_distribution(pi_ref_Y, reward_Y, n, lam)) < threshold
    assert chi_square(bon.bon_distribution_draw_index(pi_ref_Y, reward_Y, n)) > 10 * threshold


class SoftChoiceTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_tiny_lambda_and_non_finite_rewards_follow_the_hard_rule(self):
        nan, inf = np.nan, np.inf
        rewards_BxN = np.array([[1.0, 3.0, 2.9, 0.0],
                                [nan, 1.0, nan, -inf],
                                [nan, nan, nan, nan],
                                [nan, -inf, nan, -inf],
                                [-inf, inf, 2.0, 1e30]], np.float32)
        choose = self.variant(bon.select_soft, static_argnums=2)
        for seed in range(20):
            chosen_B = choose(rewards_BxN, jax.random.key(seed), 1e-3)
            np.testing.assert_array_equal(chosen_B, [1, 1, 0, 1, 1])
            assert chosen_B.dtype == jnp.int32
        # Tied best draws share the choice; NaN is never chosen while a value is present.
        ties_BxN = np.tile(np.array([[nan, 2.0, 2.0, 1.0]], np.float32), (4000, 1))
        chosen_B = np.asarray(choose(ties_BxN, jax.random.key(0), 1e-3))
        assert set(chosen_B) == {1, 2} and abs(chosen_B.mean() - 1.5) < 0.05


def test_bad_lambda_raises_value_error_naming_the_value():
    pi_ref_Y, reward_Y = SPACES[0]
    for bad in [0.0, -1.0, float("nan"), float("inf")]:
        with pytest.raises(ValueError, match=f"lambda must be finite and > 0, got {bad}"):
            bon.select_soft(np.zeros((2, 3), np.float32), jax.random.key(0), bad)
        with pytest.raises(ValueError, match=f"got {bad}"):
            bon.soft_bon_distribution(pi_ref_Y, reward_Y, 2, bad)
        with pytest.raises(ValueError, match=f"got {bad}"):
            bon.tilted_distribution(pi_ref_Y, reward_Y, bad)
    with pytest.raises(ValueError, match="finite"):
        bon.soft_bon_distribution(pi_ref_Y, np.array([0.0, 1.0, np.nan, 2.0, 2.0]), 2, 1.0)
    with pytest.raises(ValueError, match="got 0"):
        bon.soft_bon_distribution(pi_ref_Y, reward_Y, 0, 1.0)


def test_soft_best_of_n_pipeline_keeps_one_of_the_samples():
    from bonjax.sampling import Sampler, Temperature
    from bonjax.toy import ToyProblem

    toy = ToyProblem(seed=1)
    sampler = Sampler(toy.lm, Temperature(1.0), toy.length)
    tokens, mask = toy.prompts(6)
    result = bon.soft_best_of_n(sampler, toy.ref_params, tokens, mask, jax.random.key(0), 5,
                                toy.reward, lam=1e-4)
    samples = result.samples
    rewards = np.asarray(toy.reward(tokens, mask, samples.tokens_BxNxT, samples.mask_BxNxT))
    np.testing.assert_array_equal(np.asarray(result.rewards_BxN), rewards)
    chosen_B = np.asarray(result.chosen_B)
    # lambda -> 0: a best sample (the same completion may have been drawn twice: a tie).
    np.testing.assert_array_equal(rewards[np.arange(6), chosen_B], rewards.max(1))
    chosen = np.asarray(samples.tokens_BxNxT)[np.arange(6), chosen_B]
    np.testing.assert_array_equal(np.asarray(result.tokens_BxT), chosen)
    with pytest.raises(ValueError, match="lambda"):
        bon.soft_best_of_n(sampler, toy.ref_params, tokens, mask, jax.random.key(0), 5,
                           toy.reward, lam=0.0)
