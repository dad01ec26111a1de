"""Gaps to the Best-of-N curve per method family, paired bootstrap intervals, verdicts."""

import dataclasses

import numpy as np
import pytest

from bonjax.bon import bon_kl
from bonjax.evaluation.frontier import BoNPerPrompt, PolicyPoint, frontier_stats

P = 64
NS = np.array([1, 2, 4, 8, 16, 32])


def _bon(rng, difficulty_P):
    """BoN reward log2(N) per prompt, shifted by the prompt's difficulty."""
    kl_Q = bon_kl(NS)
    reward_PxQ = np.log2(NS)[None, :] + difficulty_P[:, None] + 0.01 * rng.normal(size=(P, 6))
    return BoNPerPrompt(kl_Q, reward_PxQ)


def _family(name, kls, shift, difficulty_P, rng, noise=0.3):
    """Points on the noiseless BoN curve moved down by ``shift``, per-prompt noise added."""
    kl_Q, bon_Q = bon_kl(NS), np.log2(NS)
    points = []
    for kl in kls:
        mean = np.interp(kl, kl_Q, bon_Q) - shift
        points.append(PolicyPoint(name, f"kl={kl}", mean + difficulty_P + noise * rng.normal(
            size=P), np.full(P, kl) + 0.01 * rng.normal(size=P)))
    return points


def test_a_family_on_the_curve_shifted_down_has_that_gap():
    rng = np.random.default_rng(0)
    zero = np.zeros(P)
    bon = _bon(rng, zero)
    points = (_family("A", [0.2, 0.6, 1.2], 0.3, zero, rng, noise=0.0)
              + _family("B", [0.3, 0.9, 1.5], 0.5, zero, rng, noise=0.0))
    stats = frontier_stats(points, bon, num_resamples=200)
    gaps = {g.family: g for g in stats.families}
    # The piecewise-linear family curve lies below the concave BoN curve between its points
    # by at most the chord error; the shift dominates.
    assert gaps["A"].gap == pytest.approx(-0.3, abs=0.06)
    assert gaps["B"].gap == pytest.approx(-0.5, abs=0.06)
    (c,) = stats.comparisons
    assert c.verdict == "yes" and c.low > 0 and c.p_value < 0.01
    assert "A closer to BoN than B: yes" in c.line()
    # No resample of 200 has B closer: p is below the bootstrap's resolution 2 / 200, not 0.
    assert c.p_value == 0.0 and c.line().endswith(", p < 0.01)")
    assert dataclasses.replace(c, p_value=0.02).line().endswith(", p = 0.020)")
    assert "95 % CI" in c.line()
    (c90,) = frontier_stats(points, bon, num_resamples=200, level=0.9).comparisons
    assert "90 % CI" in c90.line() and c90.low >= c.low
    lo, hi = stats.kl_range
    assert lo == pytest.approx(0.3, abs=0.01) and hi == pytest.approx(1.2, abs=0.01)


def test_identical_families_are_undecided():
    rng = np.random.default_rng(1)
    difficulty_P = rng.normal(size=P)
    bon = _bon(rng, difficulty_P)
    a = _family("A", [0.2, 0.8], 0.2, difficulty_P, rng)
    b = [PolicyPoint("B", p.setting, p.reward_P, p.kl_P) for p in a]
    (c,) = frontier_stats(a + b, bon, num_resamples=200).comparisons
    assert c.difference == 0.0 and (c.low, c.high) == (0.0, 0.0)
    assert c.verdict == "undecided" and c.p_value == 1.0


def test_pairing_removes_the_prompt_difficulty_from_gaps_and_differences():
    """Prompt difficulty (sd 1) shared by every method and by BoN makes each point's reward
    interval wide, but a gap (family minus BoN on the same prompts) and a difference of gaps
    stay narrow: a 0.15 difference is decided although each point's reward interval is ~0.5."""
    rng = np.random.default_rng(2)
    difficulty_P = rng.normal(size=P)
    bon = _bon(rng, difficulty_P)
    points = (_family("A", [0.2, 0.8], 0.1, difficulty_P, rng, noise=0.1)
              + _family("B", [0.2, 0.8], 0.25, difficulty_P, rng, noise=0.1))
    stats = frontier_stats(points, bon, num_resamples=500)
    reward_width = min(hi - lo for (lo, hi), _ in stats.point_ci.values())
    (c,) = stats.comparisons
    assert c.verdict == "yes" and c.low <= 0.15 <= c.high
    assert max(g.high - g.low for g in stats.families) < 0.25 * reward_width
    assert c.high - c.low < 0.25 * reward_width


def test_the_interval_of_a_difference_covers_the_truth_about_95_percent_of_the_time():
    """Monte Carlo over 120 data sets with known gaps (true difference 0.1)."""
    covered = 0
    for seed in range(120):
        rng = np.random.default_rng(100 + seed)
        difficulty_P = 0.5 * rng.normal(size=P)
        bon = _bon(rng, difficulty_P)
        points = (_family("A", [0.3], 0.2, difficulty_P, rng, noise=0.5)
                  + _family("B", [0.3], 0.3, difficulty_P, rng, noise=0.5))
        (c,) = frontier_stats(points, bon, num_resamples=300, seed=seed).comparisons
        # truth: each single-point family's gap is -shift plus the BoN noise, shared, so the
        # true difference is exactly 0.1
        covered += c.low <= 0.1 <= c.high
    assert 0.88 <= covered / 120 <= 0.99


def test_every_point_gets_reward_and_kl_intervals():
    rng = np.random.default_rng(3)
    zero = np.zeros(P)
    points = _family("A", [0.2, 0.8], 0.2, zero, rng)
    stats = frontier_stats(points, _bon(rng, zero), num_resamples=200)
    for p in points:
        (r_lo, r_hi), (k_lo, k_hi) = stats.point_ci[(p.family, p.setting)]
        assert r_lo < p.reward_P.mean() < r_hi and k_lo < p.kl_P.mean() < k_hi


def test_a_family_beyond_the_curves_end_is_left_out_not_compared_to_the_clamped_end():
    """Past the largest N the BoN curve is not measured: a point there has no gap (interpolation
    would hold BoN at its last reward and make more KL look closer to it)."""
    rng = np.random.default_rng(5)
    zero = np.zeros(P)
    bon = _bon(rng, zero)
    end = bon_kl(NS)[-1]
    inside = _family("A", [0.5, 1.0], 0.3, zero, rng)
    far = [PolicyPoint("C", "far", np.full(P, np.log2(NS[-1]) + 1.0), np.full(P, end + 1.0))]
    stats = frontier_stats(inside + far, bon, num_resamples=200)
    assert stats.beyond == ("C",)
    assert [g.family for g in stats.families] == ["A"] and not stats.comparisons
    assert ("C", "far") in stats.point_ci
    with pytest.raises(ValueError, match=rf"every family lies beyond.*ends at KL {end:.3f}.*C"):
        frontier_stats(far, bon)


def test_bad_input_is_named():
    rng = np.random.default_rng(4)
    zero = np.zeros(P)
    bon = _bon(rng, zero)
    short = PolicyPoint("A", "x", np.zeros(P - 1), np.zeros(P - 1))
    with pytest.raises(ValueError, match=r"A x: reward_P has shape \(63,\).*\(64,\)"):
        frontier_stats([short], bon)
    apart = (_family("A", [0.1, 0.2], 0.1, zero, rng) + _family("B", [1.0, 1.5], 0.1, zero, rng))
    with pytest.raises(ValueError, match=r"do not overlap.*A \[0.1"):
        frontier_stats(apart, bon)
    with pytest.raises(ValueError, match="level must lie in"):
        frontier_stats(_family("A", [0.2], 0.1, zero, rng), bon, level=1.0)
    nan = PolicyPoint("A", "y", np.full(P, np.nan), np.zeros(P))
    with pytest.raises(ValueError, match="A y: reward_P has non-finite"):
        frontier_stats([nan], bon)
