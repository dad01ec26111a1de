"""BoNBoN, DPO and IPO on best-vs-worst pairs."""

import dataclasses
import math

import jax
import numpy as np
import pytest

from bonjax import bon
from bonjax import objectives as obj


def _pairs(seed, b=4, num_steps=5):
    rng = np.random.default_rng(seed)
    logp = np.log(rng.uniform(0.05, 1, (b, 2, num_steps))).astype(np.float32)
    logp_ref = np.log(rng.uniform(0.05, 1, (b, 2, num_steps))).astype(np.float32)
    mask = np.arange(num_steps) < rng.integers(1, num_steps + 1, (b, 2, 1))
    return logp, logp_ref, mask


def _margin_numpy(logp, logp_ref, mask):
    ratio = np.where(mask, logp.astype(np.float64) - logp_ref, 0).sum(-1)
    return ratio[:, 0] - ratio[:, 1]


@pytest.mark.parametrize(
    "n,want", [(2, 0.5), (4, 1 / 11), (8, 0.0275482), (16, 0.0100455), (3, 1 / 6)]
)
def test_bonbon_beta_known_values(n, want):
    assert obj.bonbon_beta(n) == pytest.approx(want, rel=2e-6)


def test_bonbon_beta_sets_the_ipo_target_to_the_bon_log_ratio_gap():
    """For continuous rewards ``log(pi_n/pi_ref)(y) = log n + (n-1) log Q(y)``, so under the BoN
    policy ``E[h] = (n-1) E[log Q_(n) - log Q_(1)]`` over n uniform draws; ``beta*_n`` makes the
    IPO target ``1/(2 beta)`` equal to it. Monte Carlo, 200k prompts, tolerance 5 standard errors
    (false-alarm rate ~6e-7)."""
    rng = np.random.default_rng(0)
    for n in (2, 4, 8):
        u = rng.uniform(size=(200_000, n))
        h = (n - 1) * (np.log(u.max(1)) - np.log(u.min(1)))
        se = h.std() / math.sqrt(h.size)
        assert abs(h.mean() - 1 / (2 * obj.bonbon_beta(n))) < 5 * se


@pytest.mark.parametrize("bad", [1, 0, -3, 2.0, True])
def test_bonbon_rejects_n_below_two(bad):
    with pytest.raises(ValueError, match=f"got {bad!r}"):
        obj.bonbon_beta(bad)
    with pytest.raises(ValueError, match=f"BoNBoNConfig.n must be an integer >= 2, got {bad!r}"):
        obj.BoNBoNConfig(n=bad)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_bonbon_rejects_alpha_outside_unit_interval(alpha):
    with pytest.raises(ValueError, match=f"alpha must lie in \\[0, 1\\], got {alpha}"):
        obj.BoNBoNConfig(n=4, alpha=alpha)


def test_bonbon_is_squared_ipo_plus_sft():
    logp, logp_ref, mask = _pairs(1)
    config = obj.BoNBoNConfig(n=8, alpha=0.2)
    h = _margin_numpy(logp, logp_ref, mask)
    sft = -np.where(mask[:, 0], logp[:, 0], 0).sum(-1)
    want = 0.2 * sft + 0.8 * (h - 1 / (2 * obj.bonbon_beta(8))) ** 2
    np.testing.assert_allclose(obj.bonbon_loss(logp, logp_ref, mask, config), want, rtol=1e-5)
    assert config.ipo_beta == obj.bonbon_beta(8)
    assert obj.BoNBoNConfig(n=8, beta=0.3).ipo_beta == 0.3


def test_bonbon_alpha_one_is_exactly_sft():
    logp, logp_ref, mask = _pairs(2)
    config = obj.BoNBoNConfig(n=4, alpha=1.0)
    bonbon = lambda lp: obj.bonbon_loss(lp, logp_ref, mask, config)
    sft = lambda lp: obj.sft_loss(lp[:, 0], mask[:, 0])
    np.testing.assert_array_equal(bonbon(logp), sft(logp))
    np.testing.assert_array_equal(
        jax.grad(lambda lp: bonbon(lp).sum())(logp), jax.grad(lambda lp: sft(lp).sum())(logp)
    )


def test_bonbon_alpha_zero_is_ipo_at_beta_star():
    logp, logp_ref, mask = _pairs(3)
    np.testing.assert_allclose(
        obj.bonbon_loss(logp, logp_ref, mask, obj.BoNBoNConfig(n=16, alpha=0.0)),
        obj.ipo_loss(logp, logp_ref, mask, obj.IPOConfig(beta=obj.bonbon_beta(16))),
        rtol=1e-6,
    )


def test_dpo_value_and_swap_symmetry():
    logp, logp_ref, mask = _pairs(4)
    config = obj.DPOConfig(beta=0.5)
    h = _margin_numpy(logp, logp_ref, mask)
    loss = obj.dpo_loss(logp, logp_ref, mask, config)
    np.testing.assert_allclose(loss, np.log1p(np.exp(-0.5 * h)), rtol=1e-5)
    swap = lambda x: x[:, ::-1]
    swapped = obj.dpo_loss(swap(logp), swap(logp_ref), swap(mask), config)
    np.testing.assert_allclose(swapped - loss, 0.5 * h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        obj.log_ratio_margin(swap(logp), swap(logp_ref), swap(mask)), -h, rtol=1e-5
    )


def test_ipo_value_and_swap_symmetry():
    logp, logp_ref, mask = _pairs(5)
    config = obj.IPOConfig(beta=0.25)
    h = _margin_numpy(logp, logp_ref, mask)
    np.testing.assert_allclose(obj.ipo_loss(logp, logp_ref, mask, config), (h - 2) ** 2, rtol=1e-5)
    swap = lambda x: x[:, ::-1]
    np.testing.assert_allclose(
        obj.ipo_loss(swap(logp), swap(logp_ref), swap(mask), config), (h + 2) ** 2, rtol=1e-5
    )
    # Squared, not logistic: zero at the target margin and symmetric around it.
    np.testing.assert_allclose(
        obj.ipo_loss_from_margin(np.array([2.0, 1.5, 2.5]), 0.25), [0.0, 0.25, 0.25]
    )


def _lengths(mask):
    return mask.sum(-1).astype(np.float64)


@pytest.mark.parametrize("config_class", [obj.DPOConfig, obj.IPOConfig])
def test_length_normalised_margin_divides_each_log_ratio_by_its_length(config_class):
    """``h_norm = ratio(y_w)/|y_w| - ratio(y_l)/|y_l|``; the default stays the sequence sum."""
    logp, logp_ref, mask = _pairs(6)
    ratio = np.where(mask, logp.astype(np.float64) - logp_ref, 0).sum(-1) / _lengths(mask)
    h_norm = ratio[:, 0] - ratio[:, 1]
    np.testing.assert_allclose(obj.log_ratio_margin(logp, logp_ref, mask, True), h_norm,
                               rtol=1e-5, atol=1e-6)
    config = config_class(beta=0.25, length_normalised=True)
    loss = {obj.DPOConfig: lambda h: np.log1p(np.exp(-0.25 * h)),
            obj.IPOConfig: lambda h: (h - 2) ** 2}[config_class]
    fn = obj.dpo_loss if config_class is obj.DPOConfig else obj.ipo_loss
    np.testing.assert_allclose(fn(logp, logp_ref, mask, config), loss(h_norm), rtol=1e-5,
                               atol=1e-6)
    assert not config_class().length_normalised
    np.testing.assert_allclose(fn(logp, logp_ref, mask, config_class(beta=0.25)),
                               loss(_margin_numpy(logp, logp_ref, mask)), rtol=1e-5, atol=1e-6)


def test_length_normalised_limits():
    """Completions of one token: the two margins agree. Every completion of length L: the
    normalised margin is h / L, so length-normalised DPO at beta equals sequence-sum DPO at
    beta / L (and IPO's target margin 1/(2 beta) becomes L/(2 beta) in h). A pair of equal
    completions has h_norm = 0 (DPO: log 2)."""
    logp, logp_ref, mask = _pairs(7, num_steps=5)
    one = np.zeros_like(mask)
    one[..., 0] = True
    np.testing.assert_allclose(obj.log_ratio_margin(logp, logp_ref, one, True),
                               obj.log_ratio_margin(logp, logp_ref, one), rtol=1e-6)
    full = np.ones_like(mask)
    dpo_norm = obj.dpo_loss(logp, logp_ref, full, obj.DPOConfig(0.5, length_normalised=True))
    np.testing.assert_allclose(dpo_norm, obj.dpo_loss(logp, logp_ref, full, obj.DPOConfig(0.1)),
                               rtol=1e-5)
    ipo_norm = obj.ipo_loss(logp, logp_ref, full, obj.IPOConfig(0.5, length_normalised=True))
    h = _margin_numpy(logp, logp_ref, full)
    np.testing.assert_allclose(ipo_norm, (h / 5 - 1) ** 2, rtol=1e-5, atol=1e-6)
    same = lambda x: np.repeat(x[:, :1], 2, axis=1)
    np.testing.assert_allclose(
        obj.dpo_loss(same(logp), same(logp_ref), same(mask),
                     obj.DPOConfig(0.3, length_normalised=True)), np.log(2.0), rtol=1e-6)


def test_length_normalised_margin_is_invariant_to_repeating_a_completion():
    """Repeating each token of a completion k times (log-ratio k times larger, length k times
    longer) leaves the length-normalised margin unchanged; the sequence sum grows k-fold."""
    logp, logp_ref, _ = _pairs(8, num_steps=3)
    mask = np.ones_like(logp, bool)
    twice = lambda x: np.repeat(x, 2, axis=-1)
    mask2 = np.ones_like(twice(logp), bool)
    np.testing.assert_allclose(obj.log_ratio_margin(twice(logp), twice(logp_ref), mask2, True),
                               obj.log_ratio_margin(logp, logp_ref, mask, True), rtol=1e-5)
    np.testing.assert_allclose(obj.log_ratio_margin(twice(logp), twice(logp_ref), mask2),
                               2 * obj.log_ratio_margin(logp, logp_ref, mask), rtol=1e-5)


def test_bonbon_keeps_the_sequence_sum():
    """BoNBoN's beta*_n is derived for sequence sums: its loss at alpha = 0 is the sequence-sum
    IPO, never the length-normalised one (BoNBoNConfig has no such field)."""
    logp, logp_ref, mask = _pairs(9)
    bonbon = obj.bonbon_loss(logp, logp_ref, mask, obj.BoNBoNConfig(n=4, alpha=0.0))
    beta = obj.bonbon_beta(4)
    np.testing.assert_allclose(bonbon, obj.ipo_loss(logp, logp_ref, mask, obj.IPOConfig(beta)),
                               rtol=1e-6)
    assert "length_normalised" not in {f.name for f in dataclasses.fields(obj.BoNBoNConfig)}


def test_pair_shape_errors():
    z = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"pairs on axis 1.*\(2, 3, 4\)"):
        obj.ipo_loss(z, z, np.ones((2, 3, 4)), obj.IPOConfig())
    with pytest.raises(ValueError, match=r"must have 3 axes, got shape \(2, 4\)"):
        obj.bonbon_loss(z[:, 0], z[:, 0], np.ones((2, 4)), obj.BoNBoNConfig())


def test_best_worst_pair_selection_and_ties():
    reward = np.array([[0.1, 0.9, -0.3, 0.9], [0.5, 0.5, 0.5, 0.5], [2.0, -1.0, -1.0, 0.0]])
    x = np.arange(3 * 4 * 2).reshape(3, 4, 2)
    pair = obj.best_worst_pair(x, reward)
    np.testing.assert_array_equal(pair[0], x[0, [1, 2]])
    np.testing.assert_array_equal(pair[1], x[1, [0, 0]])
    np.testing.assert_array_equal(pair[2], x[2, [0, 1]])
    with pytest.raises(ValueError, match=r"reward_BxN \(3, 3\)"):
        obj.best_worst_pair(x, reward[:, :3])


def test_best_worst_pair_follows_the_bon_rule_for_nan():
    """NaN ranks lowest (bonjax.bon): with [1, NaN, 2, 0.5] the pair is (draw 2, draw 1), as
    bon.select_best_and_worst picks, not the NaN as both (plain argmax/argmin)."""
    reward_1x4 = np.array([[1.0, np.nan, 2.0, 0.5]], np.float32)
    x_1x4x3 = np.arange(12).reshape(1, 4, 3)
    for select in (obj.best_worst_pair, jax.jit(obj.best_worst_pair)):
        np.testing.assert_array_equal(select(x_1x4x3, reward_1x4), x_1x4x3[:, [2, 1]])
    best_B, worst_B = bon.select_best_and_worst(reward_1x4)
    np.testing.assert_array_equal([best_B[0], worst_B[0]], [2, 1])
