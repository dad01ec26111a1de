"""Off-target summaries: weighted means and quantiles, Best-of-n selection weights against
enumeration of every n-subset, ties shared evenly."""

import itertools

import numpy as np
import pytest

from bonjax.evaluation import (
    bon_expected_max,
    bon_selection_weights,
    completion_lengths,
    reaches_limit,
    summarize,
)


def _enumerated_weights(reward_M, n):
    """P(sample m is chosen) over all n-subsets, a tie split evenly among the tied maxima."""
    M = len(reward_M)
    weight_M = np.zeros(M)
    subsets = list(itertools.combinations(range(M), n))
    for subset in subsets:
        best = max(reward_M[i] for i in subset)
        tied = [i for i in subset if reward_M[i] == best]
        for i in tied:
            weight_M[i] += 1.0 / len(tied) / len(subsets)
    return weight_M


@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_selection_weights_equal_enumeration_with_and_without_ties(n):
    rng = np.random.default_rng(0)
    reward_BxM = np.stack([rng.normal(size=6), [0.3, 1.0, 0.3, 1.0, -2.0, 1.0],
                           np.full(6, 0.5)])
    got = bon_selection_weights(reward_BxM, n)
    want = np.stack([_enumerated_weights(r, n) for r in reward_BxM])
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(got.sum(1), 1.0)


def test_selection_weights_give_the_bon_reward_and_limits():
    rng = np.random.default_rng(1)
    reward_BxM = rng.normal(size=(4, 20))
    for n in (1, 4, 20):
        weight_BxM = bon_selection_weights(reward_BxM, n)
        np.testing.assert_allclose((weight_BxM * reward_BxM).sum(1),
                                   bon_expected_max(reward_BxM, n), rtol=1e-10)
    np.testing.assert_allclose(bon_selection_weights(reward_BxM, 1), 1 / 20)
    top = bon_selection_weights(reward_BxM, 20)
    np.testing.assert_array_equal(top.argmax(1), reward_BxM.argmax(1))
    with pytest.raises(ValueError, match="n <= M = 20 .* n = 21"):
        bon_selection_weights(reward_BxM, 21)


def test_summary_with_equal_weights_is_the_sample_summary():
    rng = np.random.default_rng(2)
    value_BxK = rng.integers(1, 40, size=(7, 5)).astype(float)
    s = summarize(value_BxK, quantiles=(0.0, 0.1, 0.5, 0.9, 1.0))
    m_B = value_BxK.mean(1)
    assert s.mean.mean == pytest.approx(value_BxK.mean())
    assert s.mean.stderr == pytest.approx(m_B.std(ddof=1) / np.sqrt(7))
    for q, v in s.quantiles:
        assert v == np.quantile(value_BxK, q, method="inverted_cdf"), q
    assert s.quantile(0.5) == np.quantile(value_BxK, 0.5, method="inverted_cdf")


def test_weighted_summary_is_the_weighted_distribution():
    """Weights on two samples per prompt: the summary is that of the distribution they give,
    i.e. of a sample set that repeats each value in proportion to its weight."""
    value_BxK = np.array([[1.0, 10.0], [2.0, 20.0]])
    weight_BxK = np.array([[0.25, 0.75], [0.5, 0.5]])
    s = summarize(value_BxK, weight_BxK, quantiles=(0.1, 0.3, 0.5, 0.8))
    assert s.mean.mean == pytest.approx((7.75 + 11.0) / 2)
    repeated = np.array([1.0, 10, 10, 10, 2, 2, 20, 20])
    for q, v in s.quantiles:
        assert v == np.quantile(repeated, q, method="inverted_cdf"), q
    with pytest.raises(ValueError, match="sum to 1"):
        summarize(value_BxK, np.full((2, 2), 0.3))
    with pytest.raises(ValueError, match="B >= 2"):
        summarize(value_BxK[:1])


def test_lengths_and_the_limit():
    eos = 1
    tokens = np.array([[[5, 1, 0], [5, 6, 7], [5, 6, 1]]])
    mask = np.array([[[1, 1, 0], [1, 1, 1], [1, 1, 1]]], bool)
    np.testing.assert_array_equal(completion_lengths(mask), [[2, 3, 3]])
    np.testing.assert_array_equal(reaches_limit(tokens, mask, eos), [[False, True, False]])
