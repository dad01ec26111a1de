"""Properties every objective shares: gradients, padding, jit, fp32 log-probs, bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from bonjax import objectives as obj

B, K, T = 3, 3, 5



def _vbon_return(log_F_B, logp_BxT, logp_ref_BxT, mask_BxT, config):
    """The vBoN return as the policy-gradient methods compute it."""
    reward_B = obj.vbon_reward(log_F_B, logp_ref_BxT, mask_BxT, config)
    return obj.policy_return(reward_B, logp_BxT, logp_ref_BxT, mask_BxT, config)

def _mask(lengths, num_steps=T):
    return np.arange(num_steps) < np.asarray(lengths)[..., None]


def _logp(rng, shape):
    return np.log(rng.uniform(0.05, 0.95, size=shape)).astype(np.float32)


def _cases():
    """name -> (loss as a function of the policy log-probs, those log-probs, their masks)."""
    rng = np.random.default_rng(0)
    mask_BxT = _mask([5, 3, 1])
    mask_BxKxT = _mask([[5, 2, 4], [1, 3, 5], [2, 2, 3]])
    mask_Bx2xT = _mask([[5, 2], [3, 4], [1, 5]])
    logp_BxT, logp_ref_BxT = _logp(rng, (B, T)), _logp(rng, (B, T))
    logp_BxKxT, logp_ref_BxKxT = _logp(rng, (B, K, T)), _logp(rng, (B, K, T))
    logp_Bx2xT, logp_ref_Bx2xT = _logp(rng, (B, 2, T)), _logp(rng, (B, 2, T))
    log_F_B = np.log(rng.uniform(0.1, 1.0, size=B)).astype(np.float32)
    log_F_BxK = np.log(rng.uniform(0.1, 1.0, size=(B, K))).astype(np.float32)
    reward_B = rng.normal(size=B).astype(np.float32)
    fixed_return_BxK = rng.normal(size=(B, K)).astype(np.float32)
    # Ratios rho = exp(+-0.1) and exp(+-0.5) sit well away from the clip kinks at 0.8 and 1.2.
    log_rho_BxT = rng.choice([-0.5, -0.1, 0.1, 0.5], size=(B, T)).astype(np.float32)
    advantage_BxT = rng.normal(size=(B, T)).astype(np.float32)
    anchor_reward_Bx2 = np.array([[0.3, 0.9], [0.5, -0.2], [1.0, 1.0]], np.float32)
    vbon = obj.VBoNConfig(n=4)
    return {
        "sft": (lambda lp: obj.sft_loss(lp, mask_BxT), (logp_BxT,), (mask_BxT,)),
        "sft_token_mean": (
            lambda lp: obj.sft_token_mean_loss(lp, mask_BxT), (logp_BxT,), (mask_BxT,)
        ),
        "kl_k1": (lambda lp: obj.kl_k1(lp, logp_ref_BxT, mask_BxT), (logp_BxT,), (mask_BxT,)),
        "kl_k3": (lambda lp: obj.kl_k3(lp, logp_ref_BxT, mask_BxT), (logp_BxT,), (mask_BxT,)),
        "kl_rl_return": (
            lambda lp: obj.policy_return(reward_B, lp, logp_ref_BxT, mask_BxT, obj.KLRLConfig(0.1)),
            (logp_BxT,),
            (mask_BxT,),
        ),
        "per_token_rewards": (
            lambda lp: obj.per_token_rewards(
                reward_B, lp, logp_ref_BxT, mask_BxT, kl_coef=0.2, reward_weight=1.0
            ),
            (logp_BxT,),
            (mask_BxT,),
        ),
        "vbon_return": (
            lambda lp: _vbon_return(log_F_B, lp, logp_ref_BxT, mask_BxT, vbon),
            (logp_BxT,),
            (mask_BxT,),
        ),
        "vbon_return_exact": (
            lambda lp: _vbon_return(
                log_F_B, lp, logp_ref_BxT, mask_BxT, obj.VBoNConfig(n=4, exact=True)
            ),
            (logp_BxT,),
            (mask_BxT,),
        ),
        "vbon_return_n1": (
            lambda lp: _vbon_return(log_F_B, lp, logp_ref_BxT, mask_BxT, obj.VBoNConfig(n=1)),
            (logp_BxT,),
            (mask_BxT,),
        ),
        "rloo": (
            lambda lp: obj.rloo_loss(lp, mask_BxKxT, fixed_return_BxK),
            (logp_BxKxT,),
            (mask_BxKxT,),
        ),
        "ppo": (
            lambda lp: obj.ppo_clipped_surrogate(
                lp, logp_BxT - log_rho_BxT, advantage_BxT, mask_BxT, clip_eps=0.2
            ),
            (logp_BxT,),
            (mask_BxT,),
        ),
        "dpo": (
            lambda lp: obj.dpo_loss(lp, logp_ref_Bx2xT, mask_Bx2xT, obj.DPOConfig(0.3)),
            (logp_Bx2xT,),
            (mask_Bx2xT,),
        ),
        "ipo": (
            lambda lp: obj.ipo_loss(lp, logp_ref_Bx2xT, mask_Bx2xT, obj.IPOConfig(0.3)),
            (logp_Bx2xT,),
            (mask_Bx2xT,),
        ),
        "dpo_length_normalised": (
            lambda lp: obj.dpo_loss(
                lp, logp_ref_Bx2xT, mask_Bx2xT, obj.DPOConfig(0.3, length_normalised=True)
            ),
            (logp_Bx2xT,),
            (mask_Bx2xT,),
        ),
        "ipo_length_normalised": (
            lambda lp: obj.ipo_loss(
                lp, logp_ref_Bx2xT, mask_Bx2xT, obj.IPOConfig(0.3, length_normalised=True)
            ),
            (logp_Bx2xT,),
            (mask_Bx2xT,),
        ),
        "bonbon": (
            lambda lp: obj.bonbon_loss(
                lp, logp_ref_Bx2xT, mask_Bx2xT, obj.BoNBoNConfig(n=4, alpha=0.3)
            ),
            (logp_Bx2xT,),
            (mask_Bx2xT,),
        ),
        "bond": (
            lambda lp_bon, lp: obj.bond_loss(
                lp_bon, mask_BxT, lp, logp_ref_BxKxT, mask_BxKxT, log_F_BxK, obj.BONDConfig(n=4)
            ),
            (logp_BxT, logp_BxKxT),
            (mask_BxT, mask_BxKxT),
        ),
        "jbond": (
            lambda lp_anchor_samples, lp: obj.jbond_loss(
                lp_anchor_samples,
                mask_Bx2xT,
                anchor_reward_Bx2,
                lp,
                logp_ref_BxT,
                mask_BxT,
                reward_B,
                obj.JBONDConfig(),
            ),
            (logp_Bx2xT, logp_BxT),
            (mask_Bx2xT, mask_BxT),
        ),
    }


CASES = _cases()
# Surrogates whose gradient is an estimator (advantages from the same log-probs, not
# differentiated): their gradients are checked against their parts in test_objectives_bon.py.
SURROGATES = {"bond", "jbond"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_padding_changes_neither_value_nor_gradient(name):
    fn, args, masks = CASES[name]
    rng = np.random.default_rng(1)
    garbage = [
        np.where(m, a, rng.choice([1e6, -1e6, np.inf, -np.inf, np.nan], size=a.shape))
        for a, m in zip(args, masks, strict=True)
    ]
    garbage = [g.astype(np.float32) for g in garbage]
    np.testing.assert_array_equal(fn(*args), fn(*garbage))
    total = lambda *xs: jnp.sum(fn(*xs))
    grads = jax.grad(total, argnums=tuple(range(len(args))))(*garbage)
    for g, m in zip(grads, masks, strict=True):
        assert np.all(np.isfinite(g))
        np.testing.assert_array_equal(np.asarray(g)[~m], 0.0)


@pytest.mark.parametrize("name", sorted(set(CASES) - SURROGATES))
def test_check_grads_float64(name):
    fn, args, _ = CASES[name]
    with jax.enable_x64(True):
        args64 = tuple(jnp.asarray(np.asarray(a, np.float64)) for a in args)
        assert fn(*args64).dtype == jnp.float64
        check_grads(fn, args64, order=1, modes=["rev"], eps=1e-4, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(set(CASES) - SURROGATES))
def test_check_grads_float32(name):
    fn, args, _ = CASES[name]
    check_grads(fn, args, order=1, modes=["rev"], eps=1e-2, atol=2e-2, rtol=2e-2)


class JitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_and_eager_agree(self):
        for name, (fn, args, _) in sorted(CASES.items()):
            eager = fn(*args)
            traced = self.variant(fn)(*args)
            assert traced.dtype == jnp.float32, name
            np.testing.assert_allclose(traced, eager, rtol=1e-6, atol=1e-6, err_msg=name)

    @chex.variants(with_jit=True, without_jit=True)
    def test_gae_under_jit(self):
        rng = np.random.default_rng(2)
        reward, value = rng.normal(size=(2, B, T)).astype(np.float32)
        mask = _mask([5, 3, 1])
        want = obj.gae(reward, value, mask, gamma=0.9, lam=0.8)
        got = self.variant(lambda r, v, m: obj.gae(r, v, m, gamma=0.9, lam=0.8))(
            reward, value, mask
        )
        np.testing.assert_allclose(got.advantage_BxT, want.advantage_BxT, rtol=1e-6)
        np.testing.assert_allclose(got.return_BxT, want.return_BxT, rtol=1e-6)


def test_token_logprobs_is_fp32_log_softmax_gather():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 4, 7)).astype(np.float32) * 5
    tokens = rng.integers(0, 7, size=(2, 4))
    got = obj.token_logprobs(jnp.asarray(logits, jnp.bfloat16), tokens)
    assert got.dtype == jnp.float32
    lg = np.asarray(jnp.asarray(logits, jnp.bfloat16).astype(np.float32), np.float64)
    top = lg.max(-1, keepdims=True)
    want = lg - top - np.log(np.exp(lg - top).sum(-1, keepdims=True))
    want = np.take_along_axis(want, tokens[..., None], -1)[..., 0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(2, 4, 7\)"):
        obj.token_logprobs(logits, tokens[:, :3])


def test_sft_token_mean_is_the_mean_over_every_response_token():
    """``mean_b L_b`` is the batch's NLL per response token (not the mean of per-sequence
    means), and with equal lengths L it is the sequence-sum SFT loss divided by L."""
    rng = np.random.default_rng(4)
    logp_BxT, mask_BxT = _logp(rng, (B, T)), _mask([5, 3, 1])
    got_B = obj.sft_token_mean_loss(logp_BxT, mask_BxT)
    want = -np.where(mask_BxT, logp_BxT.astype(np.float64), 0).sum() / mask_BxT.sum()
    np.testing.assert_allclose(got_B.mean(), want, rtol=1e-6)
    per_sequence_means = -np.where(mask_BxT, logp_BxT, 0).sum(-1) / mask_BxT.sum(-1)
    assert abs(per_sequence_means.mean() - want) > 1e-3
    full = np.ones_like(mask_BxT)
    np.testing.assert_allclose(obj.sft_token_mean_loss(logp_BxT, full),
                               obj.sft_loss(logp_BxT, full) / T, rtol=1e-6)


def test_masked_sum_accepts_bool_and_01_masks():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for mask in (_mask([1, 3], 3), _mask([1, 3], 3).astype(np.int32)):
        np.testing.assert_array_equal(obj.masked_sum(x, mask), [0.0, 12.0])


def test_bf16_inputs_are_summed_in_fp32():
    logp = jnp.full((1, 4096), -0.01, jnp.bfloat16)
    total = obj.sequence_logprob(logp, np.ones((1, 4096), bool))
    assert total.dtype == jnp.float32
    np.testing.assert_allclose(total, 4096 * float(jnp.bfloat16(-0.01)), rtol=1e-6)


def test_mismatched_shapes_name_the_shapes():
    logp = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"logp_BxT \(2, 4\).*mask_BxT \(2, 5\)"):
        obj.sft_loss(logp, np.ones((2, 5), bool))
    with pytest.raises(ValueError, match=r"reward_B must have shape \(2,\).*got \(3,\)"):
        obj.policy_return(np.zeros(3), logp, logp, np.ones((2, 4)), obj.KLRLConfig(0.1))
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        obj.dpo_loss(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), np.ones((2, 3, 4)), obj.DPOConfig())


def test_empty_batch_raises():
    empty = np.zeros((0, 4), np.float32)
    with pytest.raises(ValueError, match=r"empty batch.*\(0, 4\)"):
        obj.sft_loss(empty, empty.astype(bool))
    with pytest.raises(ValueError, match=r"\[B, K\] with B > 0"):
        obj.rloo_advantages(np.zeros((0, 3)))


def test_sequence_without_completion_raises_outside_jit_and_is_zero_under_jit():
    logp = np.full((2, 3), -1.0, np.float32)
    mask = _mask([2, 0], 3)
    with pytest.raises(ValueError, match=r"mask_BxT: 1 sequence\(s\).*\[\(1,\)\]"):
        obj.sft_loss(logp, mask)
    with pytest.raises(ValueError, match="without any completion token"):
        obj.kl_k1(logp, logp, mask)
    np.testing.assert_array_equal(jax.jit(obj.sft_loss)(logp, mask), [2.0, 0.0])


def test_configs_reject_bad_values():
    with pytest.raises(ValueError, match="got 0"):
        obj.VBoNConfig(n=0)
    with pytest.raises(ValueError, match="got -0.1"):
        obj.KLRLConfig(beta=-0.1)
    with pytest.raises(ValueError, match="got 0.0"):
        obj.DPOConfig(beta=0.0)
    with pytest.raises(ValueError, match="got inf"):
        obj.IPOConfig(beta=float("inf"))
    with pytest.raises(ValueError, match="DPOConfig.length_normalised must be True or False, "
                                         "got 'yes'"):
        obj.DPOConfig(length_normalised="yes")
    with pytest.raises(ValueError, match="IPOConfig.length_normalised .* got 1"):
        obj.IPOConfig(length_normalised=1)
    with pytest.raises(ValueError, match="clip_eps.*got -0.2"):
        z = np.zeros((1, 2), np.float32)
        obj.ppo_clipped_surrogate(z, z, z, np.ones((1, 2)), clip_eps=-0.2)
