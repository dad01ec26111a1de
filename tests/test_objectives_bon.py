"""vBoN, BOND and J-BOND on tabular toys with exact expectations (no sampling)."""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bonjax import objectives as obj

T = 3  # completions are one token long; the two padded steps carry garbage


def fixed_order_toy(num_outcomes, seed):
    """``pi_ref`` over outcomes with distinct rewards (a random strict order) and ``F(y)``, the
    reference mass strictly below ``y`` in that order."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(num_outcomes))
    rank = rng.permutation(num_outcomes)
    below = rank[None, :] < rank[:, None]
    return p, below @ p, rank


def bon_pmf(p, F, n):
    """``pi_BoN(y) = (F(y) + pi_ref(y))^n - F(y)^n`` (ties broken by a fixed order)."""
    return (F + p) ** n - F**n


def kl(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sum(np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0) / b), 0.0)))


def _padded(log_pi_O, garbage=7.0):
    """Per-token arrays ``[O, T]``: the outcome's log-prob at t = 0, garbage after it."""
    logp_OxT = jnp.full((log_pi_O.shape[0], T), garbage, jnp.float32)
    return logp_OxT.at[:, 0].set(log_pi_O)


MASK = lambda o: np.arange(T)[None, :] < np.ones((o, 1), int)


def expected_return(theta_O, log_F_O, p, config):
    """``J(pi_theta) = sum_y pi_theta(y) return(y)``: the vBoN objective, exactly, with the
    return the training computes (``vbon_reward`` then ``policy_return``)."""
    log_pi_O = jax.nn.log_softmax(theta_O)
    logp_ref_OxT, mask_OxT = _padded(jnp.log(p), -3.0), MASK(len(p))
    reward_O = obj.vbon_reward(log_F_O, logp_ref_OxT, mask_OxT, config)
    ret_O = obj.policy_return(reward_O, _padded(log_pi_O), logp_ref_OxT, mask_OxT, config)
    return jnp.sum(jnp.exp(log_pi_O) * ret_O)


def test_bon_oracle_matches_enumeration():
    p, F, rank = fixed_order_toy(5, seed=0)
    n = 3
    counts = np.zeros(5)
    for draw in itertools.product(range(5), repeat=n):
        counts[max(draw, key=lambda y: rank[y])] += np.prod(p[list(draw)])
    np.testing.assert_allclose(bon_pmf(p, F, n), counts, rtol=1e-12)


def test_vbon_config():
    assert obj.VBoNConfig(n=5).beta == 0.25
    assert obj.VBoNConfig(n=5, exact=True).beta == 0.2
    n1 = obj.VBoNConfig(n=1)
    assert math.isinf(n1.beta) and (n1.kl_coef, n1.reward_weight) == (1.0, 0.0)
    with pytest.raises(ValueError, match="VBoNConfig.n must be an integer >= 1, got 2.5"):
        obj.VBoNConfig(n=2.5)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_vbon_lower_bound_optimum_is_pi_ref_times_F_to_the_n_minus_1(n):
    """The maximiser of ``E_pi[log F] - KL(pi || pi_ref)/(N-1)`` is ``pi* ∝ pi_ref F^(N-1)``,
    with the Gibbs identity ``J(pi) = J(pi*) - beta KL(pi || pi*)`` for every ``pi``. F is the
    mid-rank CDF ``F(y) + pi_ref(y)/2`` (never 0, like the smoothed ``F_hat``)."""
    p, F, _ = fixed_order_toy(32, seed=n)
    F_mid = F + p / 2
    config = obj.VBoNConfig(n=n)
    log_F = jnp.asarray(np.log(F_mid), jnp.float32)
    star = p * F_mid ** (n - 1)
    star /= star.sum()
    theta_star = jnp.asarray(np.log(star), jnp.float32)
    grad = jax.grad(expected_return)(theta_star, log_F, p, config)
    np.testing.assert_allclose(grad, 0.0, atol=2e-6)
    j_star = expected_return(theta_star, log_F, p, config)
    rng = np.random.default_rng(10 + n)
    for _ in range(3):
        theta = jnp.asarray(rng.normal(size=32), jnp.float32)
        pi = np.asarray(jax.nn.softmax(theta), np.float64)
        gap = j_star - expected_return(theta, log_F, p, config)
        np.testing.assert_allclose(gap, config.beta * kl(pi, star), rtol=2e-3, atol=1e-6)


def test_maximising_the_vbon_bound_approaches_pi_bon():
    """Gradient ascent on the library's vBoN objective from ``pi_ref`` ends near ``pi_BoN``: its
    KL to ``pi_BoN`` is a small fraction of ``KL(pi_ref || pi_BoN)``."""
    n, steps = 4, 800
    p, F, _ = fixed_order_toy(32, seed=20)
    F_mid = F + p / 2
    config = obj.VBoNConfig(n=n)
    log_F = jnp.asarray(np.log(F_mid), jnp.float32)
    tx = optax.adam(optax.cosine_decay_schedule(0.1, steps))

    @jax.jit
    def ascend(theta):
        def step(_, carry):
            theta, state = carry
            grad = jax.grad(expected_return)(theta, log_F, p, config)
            update, state = tx.update(-grad, state, theta)
            return optax.apply_updates(theta, update), state

        return jax.lax.fori_loop(0, steps, step, (theta, tx.init(theta)))[0]

    pi = np.asarray(jax.nn.softmax(ascend(jnp.asarray(np.log(p), jnp.float32))), np.float64)
    star = p * F_mid ** (n - 1)
    star /= star.sum()
    pi_bon = bon_pmf(p, F, n)
    assert kl(pi, star) < 5e-3 * kl(p, star)
    assert kl(pi, pi_bon) < 0.01 * kl(p, pi_bon)
    # The closed form with the strict F is close too (coarser on 32 outcomes).
    strict = p * F ** (n - 1)
    assert kl(strict / strict.sum(), pi_bon) < 0.05 * kl(p, pi_bon)


@pytest.mark.parametrize("n", [2, 3, 6])
def test_vbon_exact_reward_optimum_is_pi_bon(n):
    """With ``R_exact`` and ``beta = 1/N`` the optimum is ``pi_BoN`` itself; the lowest outcome
    has ``log F = -inf``."""
    p, F, _ = fixed_order_toy(12, seed=30 + n)
    pi_bon = bon_pmf(p, F, n)
    config = obj.VBoNConfig(n=n, exact=True)
    with np.errstate(divide="ignore"):
        log_F = jnp.asarray(np.log(F), jnp.float32)
    assert np.isneginf(np.asarray(log_F)).sum() == 1
    reward = obj.vbon_reward(log_F, _padded(jnp.log(p), -3.0), MASK(12), config)
    np.testing.assert_allclose(reward, np.log(pi_bon / p) / n, rtol=1e-5, atol=1e-6)
    theta_bon = jnp.asarray(np.log(pi_bon), jnp.float32)
    np.testing.assert_allclose(
        jax.grad(expected_return)(theta_bon, log_F, p, config), 0.0, atol=2e-6
    )
    theta = jnp.asarray(np.random.default_rng(n).normal(size=12), jnp.float32)
    pi = np.asarray(jax.nn.softmax(theta), np.float64)
    gap = expected_return(theta_bon, log_F, p, config) - expected_return(theta, log_F, p, config)
    np.testing.assert_allclose(gap, kl(pi, pi_bon) / n, rtol=2e-3)


@pytest.mark.parametrize("exact", [False, True])
def test_vbon_n1_is_pure_kl_to_pi_ref(exact):
    """BoN of one sample is ``pi_ref``: the objective is ``-KL(pi || pi_ref)``, maximised at
    ``pi_ref`` and a gradient step from elsewhere moves towards it (``log F = -inf`` is ignored)."""
    p, F, _ = fixed_order_toy(8, seed=40)
    config = obj.VBoNConfig(n=1, exact=exact)
    with np.errstate(divide="ignore"):
        log_F = jnp.asarray(np.log(F), jnp.float32)
    theta_ref = jnp.asarray(np.log(p), jnp.float32)
    np.testing.assert_allclose(jax.grad(expected_return)(theta_ref, log_F, p, config), 0, atol=1e-6)
    np.testing.assert_allclose(expected_return(theta_ref, log_F, p, config), 0.0, atol=1e-6)
    theta = jnp.asarray(np.random.default_rng(41).normal(size=8), jnp.float32)
    pi = np.asarray(jax.nn.softmax(theta), np.float64)
    np.testing.assert_allclose(expected_return(theta, log_F, p, config), -kl(pi, p), rtol=1e-4)
    stepped = theta + 0.5 * jax.grad(expected_return)(theta, log_F, p, config)
    assert kl(np.asarray(jax.nn.softmax(stepped), np.float64), p) < kl(pi, p)


def _bond_inputs(seed, b=3, k=2, num_steps=4):
    rng = np.random.default_rng(seed)
    lp = lambda *s: np.log(rng.uniform(0.1, 1, s)).astype(np.float32)
    mask_bon = np.arange(num_steps) < rng.integers(1, num_steps + 1, (b, 1))
    mask = np.arange(num_steps) < rng.integers(1, num_steps + 1, (b, k, 1))
    log_p_le = np.log(rng.uniform(0.1, 1, (b, k))).astype(np.float32)
    return lp(b, num_steps), mask_bon, lp(b, k, num_steps), lp(b, k, num_steps), mask, log_p_le


def test_bond_limits_and_gradient_decomposition():
    logp_bon, mask_bon, logp, logp_anchor, mask, log_p_le = _bond_inputs(0)
    loss = lambda jb, lp_bon, lp: obj.bond_loss(
        lp_bon, mask_bon, lp, logp_anchor, mask, log_p_le, obj.BONDConfig(n=4, jeffreys_b=jb)
    )
    sft = obj.sft_loss(logp_bon, mask_bon)
    ret = obj.bond_backward_return(log_p_le, logp, logp_anchor, mask, obj.BONDConfig(n=4))
    np.testing.assert_allclose(ret, log_p_le - obj.kl_k1(logp, logp_anchor, mask) / 3, rtol=1e-6)
    backward = lambda lp: obj.rloo_loss(lp, mask, ret)
    np.testing.assert_array_equal(loss(0.0, logp_bon, logp), sft)
    np.testing.assert_array_equal(loss(1.0, logp_bon, logp), backward(logp))
    for jb in (0.0, 0.3, 1.0):
        total = lambda a, c, jb=jb: loss(jb, a, c).sum()
        g_bon, g = jax.grad(total, argnums=(0, 1))(logp_bon, logp)
        np.testing.assert_allclose(
            g_bon, (1 - jb) * jax.grad(lambda a: obj.sft_loss(a, mask_bon).sum())(logp_bon)
        )
        np.testing.assert_allclose(g, jb * jax.grad(lambda c: backward(c).sum())(logp), rtol=1e-6)
    with pytest.raises(ValueError, match="jeffreys_b must lie in \\[0, 1\\], got 1.5"):
        obj.BONDConfig(n=4, jeffreys_b=1.5)


def test_expected_bond_gradient_is_the_jeffreys_gradient():
    """Exact expectation over BoN samples (forward) and K-tuples of policy samples (backward):
    ``grad [(1-b) KL(pi_BoN || pi) + b (KL(pi || pi_ref)/(N-1) - E_pi log p_le)]``."""
    n, jb, k, o = 4, 0.4, 2, 6
    p, F, _ = fixed_order_toy(o, seed=50)
    pi_bon, log_p_le = bon_pmf(p, F, n), np.log(F + p)
    config = obj.BONDConfig(n=n, jeffreys_b=jb)
    theta = jnp.asarray(np.random.default_rng(51).normal(size=o), jnp.float32)
    tuples = np.array(list(itertools.product(range(o), repeat=k)))
    logp_ref_OxT = _padded(jnp.log(p), -3.0)

    def expected_loss(theta):
        logp_OxT = _padded(jax.nn.log_softmax(theta))
        # Batch = (BoN outcome, policy K-tuple) pairs, weighted by their probabilities.
        bon_idx, tup_idx = np.meshgrid(np.arange(o), np.arange(len(tuples)), indexing="ij")
        bon_idx, tup_idx = bon_idx.ravel(), tup_idx.ravel()
        samples = tuples[tup_idx]
        loss_B = obj.bond_loss(
            logp_OxT[bon_idx],
            MASK(o)[bon_idx],
            logp_OxT[samples],
            logp_ref_OxT[samples],
            MASK(o)[samples],
            jnp.asarray(log_p_le, jnp.float32)[samples],
            config,
        )
        log_pi_samples_B = obj.masked_sum(logp_OxT[samples], MASK(o)[samples]).sum(-1)
        weight_B = pi_bon[bon_idx] * jnp.exp(log_pi_samples_B)
        return jnp.sum(jax.lax.stop_gradient(weight_B) * loss_B)

    def jeffreys(theta):
        log_pi = jax.nn.log_softmax(theta)
        pi = jnp.exp(log_pi)
        forward = -jnp.sum(pi_bon * log_pi)
        backward = jnp.sum(pi * (log_pi - np.log(p))) / (n - 1) - jnp.sum(pi * log_p_le)
        return (1 - jb) * forward + jb * backward

    np.testing.assert_allclose(
        jax.grad(expected_loss)(theta), jax.grad(jeffreys)(theta), rtol=1e-4, atol=1e-6
    )


def test_jbond_reward_is_minus_log_16_only_below_both_anchors():
    reward = np.array([0.0, 0.5, 1.0, 2.0, 0.5], np.float32)
    anchors = np.array([[1.0, 2.0], [0.5, 1.0], [1.0, 0.0], [1.0, 1.5], [0.6, 0.6]], np.float32)
    want = [-math.log(16), 0.0, 0.0, 0.0, -math.log(16)]
    np.testing.assert_allclose(obj.jbond_reward(reward, anchors), want, rtol=1e-7)
    assert obj.JBOND_PENALTY == -math.log(16)
    with pytest.raises(ValueError, match=r"anchor_reward_Bx2 \(5, 3\)"):
        obj.jbond_reward(reward, np.zeros((5, 3)))


def test_jbond_loss_parts():
    rng = np.random.default_rng(60)
    lp = lambda *s: np.log(rng.uniform(0.1, 1, s)).astype(np.float32)
    logp_anchor_samples, mask_anchor_samples = lp(3, 2, 4), np.ones((3, 2, 4), bool)
    mask_anchor_samples[:, 1, 2:] = False
    anchor_reward = np.array([[0.2, 0.9], [0.7, 0.1], [0.4, 0.4]], np.float32)
    logp, logp_anchor, mask = lp(3, 4), lp(3, 4), np.ones((3, 4), bool)
    reward = np.array([0.0, 0.5, 0.4], np.float32)
    baseline = np.array([0.1, -0.2, 0.3], np.float32)

    def loss(jb, a, c, base=None):
        return obj.jbond_loss(
            a,
            mask_anchor_samples,
            anchor_reward,
            c,
            logp_anchor,
            mask,
            reward,
            obj.JBONDConfig(jeffreys_b=jb),
            baseline_B=base,
        )

    better = [1, 0, 0]  # the last pair ties: the first sample is taken
    sft = obj.sft_loss(logp_anchor_samples[np.arange(3), better], mask_anchor_samples[:, 0])
    sft_better = obj.sft_loss(
        logp_anchor_samples[np.arange(3), better], mask_anchor_samples[np.arange(3), better]
    )
    np.testing.assert_array_equal(loss(0.0, logp_anchor_samples, logp), sft_better)
    assert not np.allclose(sft, sft_better)
    ret = np.array([-math.log(16), 0.0, 0.0]) - obj.kl_k1(logp, logp_anchor, mask)
    np.testing.assert_allclose(
        loss(1.0, logp_anchor_samples, logp), -ret * obj.masked_sum(logp, mask), rtol=1e-6
    )
    g = jax.grad(lambda c: loss(0.5, logp_anchor_samples, c, baseline).sum())(logp)
    want = np.broadcast_to(-0.5 * (np.asarray(ret) - baseline)[:, None], (3, 4))
    np.testing.assert_allclose(g, want, rtol=1e-5)


def test_jbond_forward_term_never_distils_a_nan_anchor():
    """The better anchor follows bonjax.bon's rule: a NaN reward ranks below every reward."""
    rng = np.random.default_rng(61)
    logp_anchor_samples = np.log(rng.uniform(0.1, 1, (3, 2, 4))).astype(np.float32)
    mask_anchor_samples = np.ones((3, 2, 4), bool)
    anchor_reward = np.array([[np.nan, 1.0], [2.0, np.nan], [np.nan, np.nan]], np.float32)
    logp, mask = np.zeros((3, 4), np.float32), np.ones((3, 4), bool)
    got = obj.jbond_loss(logp_anchor_samples, mask_anchor_samples, anchor_reward, logp, logp,
                         mask, np.zeros(3, np.float32), obj.JBONDConfig(jeffreys_b=0.0))
    better = [1, 0, 0]  # all NaN: a tie, the first sample
    want = obj.sft_loss(logp_anchor_samples[np.arange(3), better], mask_anchor_samples[:, 0])
    np.testing.assert_array_equal(got, want)


class EmaTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_ema_update(self):
        anchor = {"w": jnp.ones((2, 3), jnp.bfloat16), "b": jnp.zeros(3)}
        params = {"w": jnp.full((2, 3), 3.0, jnp.bfloat16), "b": jnp.full(3, 2.0)}
        new = self.variant(obj.ema_update)(anchor, params, 0.25)
        assert new["w"].dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(new["w"], np.float32), 1.5)
        np.testing.assert_allclose(new["b"], 0.5)
        np.testing.assert_array_equal(self.variant(obj.ema_update)(anchor, params, 1.0)["b"], 2.0)
        np.testing.assert_array_equal(self.variant(obj.ema_update)(anchor, params, 0.0)["b"], 0.0)


def test_ema_update_rejects_bad_input():
    with pytest.raises(ValueError, match="eta must lie in \\[0, 1\\], got 1.2"):
        obj.ema_update({"a": jnp.ones(2)}, {"a": jnp.ones(2)}, 1.2)
    with pytest.raises(ValueError, match="differ in structure"):
        obj.ema_update({"a": jnp.ones(2)}, {"b": jnp.ones(2)}, 0.1)
    with pytest.raises(ValueError, match=r"\(2,\) and params leaf \(3,\)"):
        obj.ema_update({"a": jnp.ones(2)}, {"a": jnp.ones(3)}, 0.1)


@pytest.mark.parametrize("n,updates", [(2, 3), (3, 2), (4, 1), (2, 0)])
def test_iterated_bon_is_bon_of_n_to_the_m(n, updates):
    """BoN_n applied M times to ``pi_ref`` is BoN_{n^M} (fixed-order ties): the anchor after M
    hard updates of iterative BOND."""
    p, F, rank = fixed_order_toy(10, seed=70)
    below = rank[None, :] < rank[:, None]
    pi = p
    for _ in range(updates):
        pi = bon_pmf(pi, below @ pi, n)
    np.testing.assert_allclose(pi, bon_pmf(p, F, n**updates), rtol=1e-10, atol=1e-15)
