"""KL-regularised RL plumbing: KL estimators, returns, per-token rewards, RLOO, PPO, GAE."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bonjax import objectives as obj

EOS = 0
VOCAB = 3


def _mask(lengths, num_steps):
    return np.arange(num_steps) < np.asarray(lengths)[..., None]


def tabular_sequences():
    """All completions of a two-step tabular policy over a vocabulary of 3 with EOS = 0.

    Returns first tokens, second tokens and masks of the 7 completions: ``(0)`` (EOS, length 1)
    and ``(a, b)`` for ``a`` in {1, 2} (length 2; ``(a, 0)`` ends with EOS, the others are
    truncated at the length limit).
    """
    first, second = [EOS], [EOS]
    for a, b in itertools.product([1, 2], range(VOCAB)):
        first.append(a)
        second.append(b)
    first, second = np.array(first), np.array(second)
    mask_OxT = np.stack([np.ones(7, bool), first != EOS], axis=1)
    return first, second, mask_OxT


def tabular_logp(theta, first, second):
    """Per-token log-probs ``[O, 2]`` of the completions under logits ``theta = (l1, l2)``."""
    l1_V, l2_VxV = theta
    logp1 = jax.nn.log_softmax(l1_V)[first]
    logp2 = jax.nn.log_softmax(l2_VxV, axis=-1)[first, second]
    return jnp.stack([logp1, logp2], axis=1)


def _random_theta(rng):
    return (
        jnp.asarray(rng.normal(size=VOCAB), jnp.float32),
        jnp.asarray(rng.normal(size=(VOCAB, VOCAB)), jnp.float32),
    )


def test_tabular_sequences_are_a_distribution():
    first, second, mask = tabular_sequences()
    logp = tabular_logp(_random_theta(np.random.default_rng(0)), first, second)
    np.testing.assert_allclose(jnp.exp(obj.masked_sum(logp, mask)).sum(), 1.0, rtol=1e-6)


def test_kl_estimators_match_numpy_and_are_unbiased_in_expectation():
    rng = np.random.default_rng(1)
    first, second, mask = tabular_sequences()
    logp = tabular_logp(_random_theta(rng), first, second)
    logp_ref = tabular_logp(_random_theta(rng), first, second)
    k1, k3 = obj.kl_k1(logp, logp_ref, mask), obj.kl_k3(logp, logp_ref, mask)
    d = np.where(mask, np.asarray(logp_ref) - np.asarray(logp), 0.0)
    np.testing.assert_allclose(k1, (-d).sum(1), rtol=1e-6)
    np.testing.assert_allclose(k3, (np.exp(d) - 1 - d).sum(1), rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(k3) >= 0)
    pi = np.exp(np.asarray(obj.masked_sum(logp, mask), np.float64))
    pi_ref = np.exp(np.asarray(obj.masked_sum(logp_ref, mask), np.float64))
    exact_kl = np.sum(pi * np.log(pi / pi_ref))
    np.testing.assert_allclose(np.sum(pi * k1), exact_kl, rtol=1e-5)
    # k3 is unbiased token by token: E[k3] is the sum of the per-step KLs, which for this
    # autoregressive policy equals the sequence KL.
    np.testing.assert_allclose(np.sum(pi * k3), exact_kl, rtol=1e-5)


def test_returns_and_per_token_rewards():
    rng = np.random.default_rng(2)
    lengths = np.array([6, 1, 4])
    mask = _mask(lengths, 6)
    logp = np.log(rng.uniform(0.1, 1, (3, 6))).astype(np.float32)
    logp_ref = np.log(rng.uniform(0.1, 1, (3, 6))).astype(np.float32)
    reward = np.array([1.5, -0.5, 2.0], np.float32)
    k1 = np.where(mask, logp - logp_ref, 0).sum(1)
    np.testing.assert_allclose(
        obj.policy_return(reward, logp, logp_ref, mask, obj.KLRLConfig(beta=0.3)),
        reward - 0.3 * k1,
        rtol=1e-6,
    )
    per_token = np.asarray(
        obj.per_token_rewards(reward, logp, logp_ref, mask, kl_coef=0.3, reward_weight=2.0)
    )
    np.testing.assert_allclose(
        per_token.sum(1),
        obj.kl_regularised_return(reward, logp, logp_ref, mask, kl_coef=0.3, reward_weight=2.0),
        rtol=1e-5,
    )
    expected = np.where(mask, -0.3 * (logp - logp_ref), 0.0)
    expected[np.arange(3), lengths - 1] += 2.0 * reward
    np.testing.assert_allclose(per_token, expected, rtol=1e-6, atol=1e-7)


def gae_reference(reward, value, mask, gamma, lam):
    """GAE by a plain Python loop over each completion (contiguous masks from position 0)."""
    advantage = np.zeros_like(reward, dtype=np.float64)
    for b in range(reward.shape[0]):
        length = int(mask[b].sum())
        running = 0.0
        for t in reversed(range(length)):
            next_value = value[b, t + 1] if t + 1 < length else 0.0
            delta = reward[b, t] + gamma * next_value - value[b, t]
            running = delta + gamma * lam * running
            advantage[b, t] = running
    return advantage, np.where(mask, advantage + value, 0.0)


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.5, 0.0)])
def test_gae_matches_python_loop(gamma, lam):
    rng = np.random.default_rng(3)
    lengths = np.array([7, 1, 4, 6, 3])
    mask = _mask(lengths, 7)
    reward = rng.normal(size=(5, 7))
    value = rng.normal(size=(5, 7))
    result = obj.gae(
        np.where(mask, reward, 9.0).astype(np.float32),
        np.where(mask, value, -9.0).astype(np.float32),
        mask,
        gamma=gamma,
        lam=lam,
    )
    want_advantage, want_return = gae_reference(reward, value, mask, gamma, lam)
    np.testing.assert_allclose(result.advantage_BxT, want_advantage, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.return_BxT, want_return, rtol=1e-5, atol=1e-5)
    if gamma == lam == 1.0:
        reward_to_go = np.flip(np.cumsum(np.flip(np.where(mask, reward, 0), 1), 1), 1)
        np.testing.assert_allclose(result.return_BxT, np.where(mask, reward_to_go, 0), atol=1e-5)


def test_gae_rejects_bad_gamma():
    z = np.zeros((1, 2), np.float32)
    with pytest.raises(ValueError, match="gamma must lie in \\[0, 1\\], got 1.5"):
        obj.gae(z, z, np.ones((1, 2)), gamma=1.5)


def test_ppo_clipped_surrogate_matches_definition_and_clips_gradients():
    log_rho = np.log(np.array([[0.5, 0.9, 1.1, 1.5, 1.5, 0.5]], np.float32))
    advantage = np.array([[1.0, -2.0, 0.5, 1.0, -1.0, -1.0]], np.float32)
    mask = _mask([6], 6)
    logp_old = np.full((1, 6), -1.0, np.float32)
    loss = lambda lp: obj.ppo_clipped_surrogate(lp, logp_old, advantage, mask, clip_eps=0.2)
    rho = np.exp(log_rho)
    want = -np.minimum(rho * advantage, np.clip(rho, 0.8, 1.2) * advantage)
    np.testing.assert_allclose(loss(logp_old + log_rho), want, rtol=1e-6)
    grad = jax.grad(lambda lp: loss(lp).sum())(logp_old + log_rho)
    # The min picks the clipped branch (zero gradient) for rho = 1.5 with A > 0 and for rho = 0.5
    # with A < 0; elsewhere the gradient is -rho A.
    active = np.array([[True, True, True, False, True, False]])
    np.testing.assert_allclose(grad, np.where(active, -rho * advantage, 0.0), rtol=1e-6)


def test_rloo_advantages():
    returns = np.array([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]], np.float32)
    want = returns - (returns.sum(1, keepdims=True) - returns) / 2
    np.testing.assert_allclose(obj.rloo_advantages(returns), want)
    np.testing.assert_allclose(obj.rloo_advantages(returns).sum(1), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match=r"K >= 2.*\(2, 1\)"):
        obj.rloo_advantages(returns[:, :1])


@pytest.mark.parametrize("k,kl_coef", [(2, 0.0), (3, 0.0), (2, 0.7), (3, 0.7)])
def test_expected_rloo_gradient_is_the_exact_policy_gradient(k, kl_coef):
    """Average the RLOO gradient over every K-tuple of completions weighted by its probability
    (exact enumeration, no sampling) and compare with the gradient of the exact objective
    ``sum_y pi(y) r(y) - beta KL(pi || pi_ref)``."""
    rng = np.random.default_rng(4 + k)
    first, second, mask_OxT = tabular_sequences()
    theta = _random_theta(rng)
    logp_ref_OxT = tabular_logp(_random_theta(rng), first, second)
    reward_O = jnp.asarray(rng.normal(size=7), jnp.float32)

    def exact_objective(theta):
        logp_OxT = tabular_logp(theta, first, second)
        log_pi_O = obj.masked_sum(logp_OxT, mask_OxT)
        log_pi_ref_O = obj.masked_sum(logp_ref_OxT, mask_OxT)
        pi_O = jnp.exp(log_pi_O)
        return jnp.sum(pi_O * reward_O) - kl_coef * jnp.sum(pi_O * (log_pi_O - log_pi_ref_O))

    tuples_BxK = np.array(list(itertools.product(range(7), repeat=k)))

    def expected_rloo_loss(theta):
        logp_OxT = tabular_logp(theta, first, second)
        logp_BxKxT = logp_OxT[tuples_BxK]
        mask_BxKxT = mask_OxT[tuples_BxK]
        return_BxK = obj.kl_regularised_return(
            reward_O[tuples_BxK],
            logp_BxKxT,
            logp_ref_OxT[tuples_BxK],
            mask_BxKxT,
            kl_coef=kl_coef,
        )
        loss_B = obj.rloo_loss(logp_BxKxT, mask_BxKxT, return_BxK)
        weight_B = jnp.exp(obj.masked_sum(logp_BxKxT, mask_BxKxT).sum(1))
        return jnp.sum(jax.lax.stop_gradient(weight_B) * loss_B)

    want = jax.grad(exact_objective)(theta)
    got = jax.grad(expected_rloo_loss)(theta)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(-np.asarray(g), w, rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(want[1]).max()) > 1e-2  # the check is not vacuous


def test_reinforce_loss_gradient_is_advantage_times_score():
    rng = np.random.default_rng(5)
    mask = _mask([3, 2], 3)
    logp = np.log(rng.uniform(0.1, 1, (2, 3))).astype(np.float32)
    advantage = np.array([2.0, -0.5], np.float32)
    grad = jax.grad(lambda lp: obj.reinforce_loss(lp, mask, advantage).sum())(logp)
    np.testing.assert_allclose(grad, np.where(mask, -advantage[:, None], 0.0))
