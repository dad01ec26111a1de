"""Tests for bonjax.bon: enumeration of all N-tuples, Monte Carlo against the analytic curves."""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bonjax import bon

# Monte Carlo checks use 5-sigma bounds: each has a false-alarm rate of about 6e-7 (two-sided
# normal tail), and the chi-square check uses a 1e-6 tail, so the file's false-alarm rate is
# below 1e-5. The seeds are fixed, so a given run is deterministic.
SIGMAS = 5.0
NUM_PROMPTS = 200_000


def _less(a: float, b: float) -> bool:
    """The documented order: NaN below everything, NaNs tie."""
    if math.isnan(b):
        return False
    if math.isnan(a):
        return True
    return a < b


def _enumerate(pi_ref_Y, reward_Y, n, winner):
    """Probability of each outcome being returned, by summing over all |Y|^N draws."""
    dist_Y = np.zeros(len(pi_ref_Y))
    for draws in itertools.product(range(len(pi_ref_Y)), repeat=n):
        dist_Y[draws[winner(draws, reward_Y)]] += math.prod(pi_ref_Y[y] for y in draws)
    return dist_Y


def _first_draw_wins(draws, reward_Y):
    best = 0
    for j in range(1, len(draws)):
        if _less(reward_Y[draws[best]], reward_Y[draws[j]]):
            best = j
    return best


def _lowest_outcome_wins(draws, reward_Y):
    best = 0
    for j in range(1, len(draws)):
        a, b = reward_Y[draws[best]], reward_Y[draws[j]]
        tied = not _less(a, b) and not _less(b, a)
        if _less(a, b) or (tied and draws[j] < draws[best]):
            best = j
    return best


def _outcome_spaces():
    rng = np.random.default_rng(0)
    spaces = [
        (np.array([0.3, 0.1, 0.3, 0.2, 0.1]), np.array([0.0, 1.0, 1.0, 2.0, 2.0])),
        (np.array([0.25, 0.25, 0.25, 0.25]), np.array([5.0, 5.0, 5.0, 5.0])),
        (rng.dirichlet(np.ones(5)), np.array([np.nan, -np.inf, 1.0, np.nan, 1.0])),
        (rng.dirichlet(np.ones(4)), np.array([np.inf, 2.0, np.inf, -0.0])),
    ]
    for size in [4, 5]:
        spaces.append((rng.dirichlet(np.ones(size)), rng.integers(0, 3, size).astype(float)))
    return spaces


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_exact_distributions_match_enumeration_of_all_n_tuples(n):
    for pi_ref_Y, reward_Y in _outcome_spaces():
        dist_a = bon.bon_distribution_draw_index(pi_ref_Y, reward_Y, n)
        dist_b = bon.bon_distribution_fixed_order(pi_ref_Y, reward_Y, n)
        want_a = _enumerate(pi_ref_Y, reward_Y, n, _first_draw_wins)
        want_b = _enumerate(pi_ref_Y, reward_Y, n, _lowest_outcome_wins)
        np.testing.assert_allclose(dist_a, want_a, rtol=0, atol=1e-12)
        np.testing.assert_allclose(dist_b, want_b, rtol=0, atol=1e-12)
        assert abs(dist_a.sum() - 1) < 1e-12


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_library_selection_implements_the_draw_index_rule_exactly(n):
    """Enumerate every N-tuple, select with the library, weight by the tuple's probability."""
    pi_ref_Y = np.array([0.3, 0.1, 0.3, 0.2, 0.1])
    reward_Y = np.array([0.0, 1.0, 1.0, 2.0, 2.0])
    draws_TxN = np.array(list(itertools.product(range(5), repeat=n)))
    prob_T = pi_ref_Y[draws_TxN].prod(axis=1)
    best_T, worst_T = bon.select_best_and_worst(reward_Y[draws_TxN].astype(np.float32))
    chosen_best_T = np.asarray(bon.take_selected(draws_TxN, best_T))
    chosen_worst_T = np.asarray(bon.take_selected(draws_TxN, worst_T))
    best_dist = np.bincount(chosen_best_T, weights=prob_T, minlength=5)
    worst_dist = np.bincount(chosen_worst_T, weights=prob_T, minlength=5)
    want_best = bon.bon_distribution_draw_index(pi_ref_Y, reward_Y, n)
    # Worst of N with lowest-index ties is Best of N of the negated rewards, same tie rule.
    want_worst = bon.bon_distribution_draw_index(pi_ref_Y, -reward_Y, n)
    np.testing.assert_allclose(best_dist, want_best, rtol=0, atol=1e-12)
    np.testing.assert_allclose(worst_dist, want_worst, rtol=0, atol=1e-12)
    if n > 1:  # the two rules differ on this space, so the check tells them apart
        other = bon.bon_distribution_fixed_order(pi_ref_Y, reward_Y, n)
        assert np.abs(other - want_best).max() > 0.01


class SelectionTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_tie_rule_and_non_finite_rewards(self):
        nan, inf = np.nan, np.inf
        rewards_BxN = np.array(
            [
                [1.0, 3.0, 3.0, 0.0, 0.0],
                [nan, 1.0, nan, 1.0, -inf],
                [nan, nan, nan, nan, nan],
                [-inf, -inf, 2.0, inf, inf],
                [0.0, -0.0, 0.0, -0.0, 0.0],
                [-1e-45, 0.0, 1e-45, 1e-45, -1e-45],
            ],
            np.float32,
        )
        best_B, worst_B = self.variant(bon.select_best_and_worst)(rewards_BxN)
        np.testing.assert_array_equal(best_B, [1, 1, 0, 3, 0, 2])
        np.testing.assert_array_equal(worst_B, [3, 0, 0, 0, 0, 0])
        assert best_B.dtype == jnp.int32 and worst_B.dtype == jnp.int32

    @chex.variants(with_jit=True, without_jit=True)
    def test_a_nan_reward_is_the_worst_and_never_the_best(self):
        best_B, worst_B = self.variant(bon.select_best_and_worst)(
            np.array([[1.0, np.nan, 2.0, 0.5]], np.float32))
        np.testing.assert_array_equal(best_B, [2])
        np.testing.assert_array_equal(worst_B, [1])

    @chex.variants(with_jit=True, without_jit=True)
    def test_take_selected_gathers_per_prompt(self):
        tokens_BxNxT = np.arange(3 * 4 * 5).reshape(3, 4, 5)
        logp_BxN = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
        index_B = np.array([2, 0, 3], np.int32)
        chosen_BxT = self.variant(bon.take_selected)(tokens_BxNxT, index_B)
        chex.assert_shape(chosen_BxT, (3, 5))
        np.testing.assert_array_equal(chosen_BxT, tokens_BxNxT[np.arange(3), index_B])
        np.testing.assert_array_equal(
            self.variant(bon.take_selected)(logp_BxN, index_B), logp_BxN[np.arange(3), index_B]
        )


@pytest.mark.parametrize("n", [2, 4, 16])
def test_monte_carlo_win_rate_and_kl_of_library_selection_match_continuous_curves(n):
    """Uniform(0, 1) rewards: Q(r) = r, so log(pi_N / pi_ref)(y) = log N + (N - 1) log r(y)."""
    key_draws, key_fresh = jax.random.split(jax.random.key(n))
    rewards_BxN = jax.random.uniform(key_draws, (NUM_PROMPTS, n), minval=1e-30)
    fresh_B = np.asarray(jax.random.uniform(key_fresh, (NUM_PROMPTS,)), np.float64)
    best_B, worst_B = bon.select_best_and_worst(rewards_BxN)
    best_reward_B = np.asarray(bon.take_selected(rewards_BxN, best_B), np.float64)
    worst_reward_B = np.asarray(bon.take_selected(rewards_BxN, worst_B), np.float64)

    for wins_B, want in [
        (best_reward_B > fresh_B, bon.bon_win_rate(n)),
        (worst_reward_B > fresh_B, 1 - bon.bon_win_rate(n)),  # worst of N beats 1/(N+1)
    ]:
        standard_error = math.sqrt(want * (1 - want) / NUM_PROMPTS)
        assert abs(wins_B.mean() - want) < SIGMAS * standard_error, (wins_B.mean(), want)

    log_ratio_B = math.log(n) + (n - 1) * np.log(best_reward_B)
    standard_error = log_ratio_B.std(ddof=1) / math.sqrt(NUM_PROMPTS)
    kl = log_ratio_B.mean()
    assert abs(kl - bon.bon_kl(n)) < SIGMAS * standard_error, (kl, bon.bon_kl(n))


def test_monte_carlo_of_library_selection_on_discrete_toy_follows_rule_a_not_rule_b():
    n = 4
    pi_ref_Y = np.array([0.3, 0.1, 0.3, 0.2, 0.1])
    reward_Y = np.array([0.0, 1.0, 1.0, 2.0, 2.0], np.float32)
    draws_BxN = jax.random.categorical(
        jax.random.key(7), jnp.log(jnp.asarray(pi_ref_Y, jnp.float32)), shape=(NUM_PROMPTS, n)
    )
    best_B, _ = bon.select_best_and_worst(jnp.asarray(reward_Y)[draws_BxN])
    counts_Y = np.bincount(np.asarray(bon.take_selected(draws_BxN, best_B)), minlength=5)
    threshold = stats.chi2.isf(1e-6, df=len(pi_ref_Y) - 1)

    def chi_square(dist_Y):
        expected_Y = NUM_PROMPTS * dist_Y
        return ((counts_Y - expected_Y) ** 2 / expected_Y).sum()

    assert chi_square(bon.bon_distribution_draw_index(pi_ref_Y, reward_Y, n)) < threshold
    assert chi_square(bon.bon_distribution_fixed_order(pi_ref_Y, reward_Y, n)) > 10 * threshold


@pytest.mark.parametrize("n", [1, 2, 8, 32])
def test_exact_distribution_reaches_the_continuous_curves_with_many_distinct_outcomes(n):
    """A uniform distribution over Y distinct rewards tends to the continuous case as Y grows."""
    num_outcomes = 4000
    pi_ref_Y = np.full(num_outcomes, 1 / num_outcomes)
    reward_Y = np.random.default_rng(1).permutation(num_outcomes).astype(float)
    dist_a = bon.bon_distribution_draw_index(pi_ref_Y, reward_Y, n)
    np.testing.assert_allclose(dist_a, bon.bon_distribution_fixed_order(pi_ref_Y, reward_Y, n))
    kl = np.sum(dist_a * np.log(dist_a / pi_ref_Y), where=dist_a > 0)
    win_rate = np.sum(dist_a * np.argsort(np.argsort(reward_Y)) / num_outcomes)
    # Gaps measured at Y = 4000: KL below the curve by <= 3e-6, win rate by 1 / (2Y).
    assert bon.bon_kl(n) - 1e-4 < kl <= bon.bon_kl(n)
    np.testing.assert_allclose(win_rate, bon.bon_win_rate(n), atol=1 / num_outcomes)


def test_discrete_kl_with_ties_stays_below_the_continuous_curve():
    rng = np.random.default_rng(2)
    for _ in range(50):
        size = rng.integers(2, 8)
        pi_ref_Y = rng.dirichlet(np.ones(size))
        reward_Y = rng.integers(0, 3, size).astype(float)
        for n in [2, 5, 20]:
            for dist in [
                bon.bon_distribution_draw_index(pi_ref_Y, reward_Y, n),
                bon.bon_distribution_fixed_order(pi_ref_Y, reward_Y, n),
            ]:
                kl = np.sum(dist * np.log(dist / pi_ref_Y), where=dist > 0)
                assert kl <= bon.bon_kl(n) + 1e-12


def test_analytic_curves_are_elementwise():
    n = np.array([[1, 2], [4, 8]])
    np.testing.assert_allclose(bon.bon_win_rate(n), n / (n + 1))
    np.testing.assert_allclose(bon.bon_kl(n), np.log(n) - (n - 1) / n)
    assert bon.bon_kl(1) == 0.0 and bon.bon_win_rate(1) == 0.5
    np.testing.assert_allclose(bon.bon_kl(2), math.log(2) - 0.5)


def test_bad_input_raises_value_error_naming_the_value():
    with pytest.raises(ValueError, match="N = 0"):
        bon.select_best_and_worst(np.zeros((3, 0), np.float32))
    with pytest.raises(ValueError, match="B = 0"):
        bon.select_best_and_worst(np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match=r"\[B, N\].*\(4,\)"):
        bon.select_best_and_worst(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"\[B, N\].*\(2, 4, 1\)"):
        bon.select_best_and_worst(np.zeros((2, 4, 1), np.float32))
    with pytest.raises(ValueError, match="int32"):
        bon.select_best_and_worst(np.zeros((2, 4), np.int32))
    with pytest.raises(ValueError, match=r"\[B\] = \[2\].*\(3,\)"):
        bon.take_selected(np.zeros((2, 4)), np.zeros(3, np.int32))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        bon.take_selected(np.zeros(4), np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="float32"):
        bon.take_selected(np.zeros((2, 4)), np.zeros(2, np.float32))
    pi_ref_Y, reward_Y = np.array([0.5, 0.5]), np.array([0.0, 1.0])
    for bad_n in [0, -1, 1.5, True]:
        for fn in [bon.bon_distribution_draw_index, bon.bon_distribution_fixed_order]:
            with pytest.raises(ValueError, match=f"got {bad_n!r}"):
                fn(pi_ref_Y, reward_Y, bad_n)
    with pytest.raises(ValueError, match="sums to 0.9"):
        bon.bon_distribution_draw_index(np.array([0.5, 0.4]), reward_Y, 2)
    with pytest.raises(ValueError, match="non-negative"):
        bon.bon_distribution_fixed_order(np.array([1.5, -0.5]), reward_Y, 2)
    with pytest.raises(ValueError, match=r"\(2,\) and \(3,\)"):
        bon.bon_distribution_draw_index(pi_ref_Y, np.zeros(3), 2)
    with pytest.raises(ValueError, match=r"0\.5"):
        bon.bon_kl(np.array([2.0, 0.5]))
    with pytest.raises(ValueError, match="0"):
        bon.bon_win_rate(0)


def test_best_of_n_pipeline_selects_the_best_sample():
    """Sample N, score, select: the chosen completion is the argmax-reward sample of its prompt."""
    from bonjax.sampling import Sampler, Temperature
    from bonjax.toy import ToyProblem

    toy = ToyProblem(seed=1)
    sampler = Sampler(toy.lm, Temperature(1.0), toy.length)
    tokens, mask = toy.prompts(6)
    result = bon.best_of_n(sampler, toy.ref_params, tokens, mask, jax.random.key(0), 5,
                           toy.reward)
    samples = result.samples
    expected = toy.reward(tokens, mask, samples.tokens_BxNxT, samples.mask_BxNxT)
    np.testing.assert_array_equal(np.asarray(result.rewards_BxN), np.asarray(expected))
    rewards = np.asarray(expected)
    np.testing.assert_array_equal(np.asarray(result.best_B), rewards.argmax(1))
    np.testing.assert_array_equal(np.asarray(result.worst_B), rewards.argmin(1))
    chosen = np.asarray(samples.tokens_BxNxT)[np.arange(6), rewards.argmax(1)]
    np.testing.assert_array_equal(np.asarray(result.tokens_BxT), chosen)
    with pytest.raises(ValueError, match="N must be"):
        bon.best_of_n(sampler, toy.ref_params, tokens, mask, jax.random.key(0), 0, toy.reward)
