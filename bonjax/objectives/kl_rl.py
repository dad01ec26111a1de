"""KL-regularised RL: the baseline objective and the policy-gradient plumbing of vBoN and BOND.

Every RL-style objective in bonjax maximises, per prompt ``x``,

    J(pi_theta) = E_{y ~ pi_theta}[ w * R(x, y) ]  -  beta * KL(pi_theta || pi_ref)

with a sequence reward ``R``, a reward weight ``w`` (1 except in the limit beta -> inf, see
:class:`bonjax.objectives.VBoNConfig`) and a KL coefficient ``beta``. The per-sequence
KL-regularised return is ``w R(y) - beta sum_t (log pi_theta(y_t|.) - log pi_ref(y_t|.))``.

The baseline of the vBoN paper (Amini et al., arXiv 2407.06057) is this objective on the raw
reward, ``R = r``, optimised with PPO (Ziegler et al., arXiv 1909.08593).

Per-token convention for PPO (the standard RLHF one): every completion token ``t`` gets the
reward ``-beta (log pi_theta(y_t|.) - log pi_ref(y_t|.))`` and the last completion token also
gets ``w R(y)``; summed over the completion this is exactly the sequence return above.

KL estimators (Schulman, "Approximating KL divergence", 2020), per sequence, ``d_t = log pi_ref -
log pi_theta``:  k1 = sum_t -d_t,  k3 = sum_t (exp(d_t) - 1 - d_t)  (non-negative, lower
variance). Returns use k1: its score-function gradient is unbiased for the gradient of the KL;
k3 is for monitoring.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from bonjax.checks import check_positive, check_unit_interval, is_concrete
from bonjax.objectives._logprob import (
    as_float,
    as_mask,
    check_inputs,
    masked_sum,
)

__all__ = [
    "KLEstimator",
    "KLRLConfig",
    "kl_k1",
    "kl_k3",
    "kl_regularised_return",
    "policy_return",
    "per_token_rewards",
    "reinforce_loss",
    "rloo_advantages",
    "rloo_loss",
    "ppo_clipped_surrogate",
    "GAEResult",
    "gae",
]

KLEstimator = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
"""``(logp_BxT, logp_ref_BxT, mask_BxT) -> kl_B``: a per-sequence KL estimator."""


def _check_kl(logp_BxT, logp_ref_BxT, mask_BxT, sequences=None):
    check_inputs(
        {"logp_BxT": logp_BxT, "logp_ref_BxT": logp_ref_BxT, "mask_BxT": mask_BxT},
        sequences,
        mask_name="mask_BxT",
    )


def _log_ratio(logp_BxT, logp_ref_BxT, mask_BxT):
    """``log pi_theta - log pi_ref`` per token, 0 on padding (masked before subtracting)."""
    mask_BxT = as_mask(mask_BxT)
    logp_BxT = jnp.where(mask_BxT, as_float(logp_BxT), 0.0)
    logp_ref_BxT = jnp.where(mask_BxT, as_float(logp_ref_BxT), 0.0)
    return logp_BxT - logp_ref_BxT


def _weighted(reward_B, reward_weight):
    """``w * R``, exactly 0 when ``w`` is the constant 0 (so a reward of ``-inf`` is ignored)."""
    reward_B = as_float(reward_B)
    if is_concrete(reward_weight) and float(reward_weight) == 0.0:
        return jnp.zeros_like(reward_B)
    return reward_weight * reward_B


def kl_k1(logp_BxT: jax.Array, logp_ref_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    """k1 estimate of ``KL(pi_theta || pi_ref)`` from one sample: ``sum_t (logp - logp_ref)``.

    Unbiased when ``y ~ pi_theta``; can be negative for a single sample. Shape ``[B]``.
    """
    _check_kl(logp_BxT, logp_ref_BxT, mask_BxT)
    return _log_ratio(logp_BxT, logp_ref_BxT, mask_BxT).sum(axis=-1)


def kl_k3(logp_BxT: jax.Array, logp_ref_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    """k3 estimate ``sum_t (exp(d_t) - 1 - d_t)``, ``d_t = logp_ref - logp`` (masked), ``[B]``.

    Unbiased per token for the token-level KL when ``y_t ~ pi_theta``, and never negative.
    """
    _check_kl(logp_BxT, logp_ref_BxT, mask_BxT)
    d_BxT = -_log_ratio(logp_BxT, logp_ref_BxT, mask_BxT)
    return (jnp.expm1(d_BxT) - d_BxT).sum(axis=-1)


def kl_regularised_return(
    reward_B: jax.Array,
    logp_BxT: jax.Array,
    logp_ref_BxT: jax.Array,
    mask_BxT: jax.Array,
    *,
    kl_coef: float,
    reward_weight: float = 1.0,
) -> jax.Array:
    """Per-sequence return ``w R(y) - beta sum_t (log pi_theta(y_t) - log pi_ref(y_t))``.

    ``kl_coef`` is ``beta`` (finite, >= 0) and ``reward_weight`` is ``w``. Leading axes are free
    (``[B]`` or ``[B, K]`` with per-token inputs ``[B, T]`` or ``[B, K, T]``).
    """
    _check_kl(logp_BxT, logp_ref_BxT, mask_BxT, {"reward_B": reward_B})
    check_positive("kl_coef", kl_coef, allow_zero=True)
    kl_B = _log_ratio(logp_BxT, logp_ref_BxT, mask_BxT).sum(axis=-1)
    return _weighted(reward_B, reward_weight) - kl_coef * kl_B


def per_token_rewards(
    reward_B: jax.Array,
    logp_BxT: jax.Array,
    logp_ref_BxT: jax.Array,
    mask_BxT: jax.Array,
    *,
    kl_coef: float,
    reward_weight: float = 1.0,
) -> jax.Array:
    """Per-token PPO rewards: ``-beta (logp_t - logp_ref_t)`` on each completion token, plus
    ``w R(y)`` on the last completion token; 0 on padding. Shape of ``logp_BxT``.

    Their sum over ``t`` equals :func:`kl_regularised_return`. The last completion token is the
    last position where the mask is set (the EOS token, or the final token of a truncated
    completion).
    """
    _check_kl(logp_BxT, logp_ref_BxT, mask_BxT, {"reward_B": reward_B})
    check_positive("kl_coef", kl_coef, allow_zero=True)
    mask_BxT = as_mask(mask_BxT)
    num_steps = mask_BxT.shape[-1]
    last_B = num_steps - 1 - jnp.argmax(jnp.flip(mask_BxT, axis=-1), axis=-1)
    is_last_BxT = (jnp.arange(num_steps) == last_B[..., None]) & mask_BxT
    reward_BxT = jnp.where(is_last_BxT, _weighted(reward_B, reward_weight)[..., None], 0.0)
    return reward_BxT - kl_coef * _log_ratio(logp_BxT, logp_ref_BxT, mask_BxT)


@dataclasses.dataclass(frozen=True)
class KLRLConfig:
    """KL-regularised RL on the raw reward: maximise ``E[r(y)] - beta KL(pi_theta || pi_ref)``.

    Attributes:
      beta: the KL coefficient (finite, >= 0).
    """

    beta: float = 0.05

    def __post_init__(self):
        check_positive("KLRLConfig.beta", self.beta, allow_zero=True)

    @property
    def kl_coef(self) -> float:
        """The KL coefficient of the per-sequence return."""
        return float(self.beta)

    @property
    def reward_weight(self) -> float:
        """The weight of the reward in the per-sequence return."""
        return 1.0


def policy_return(
    reward_B: jax.Array,
    logp_BxT: jax.Array,
    logp_ref_BxT: jax.Array,
    mask_BxT: jax.Array,
    config: Any,
) -> jax.Array:
    """The per-sequence return ``w R(y) - beta sum_t (logp - logp_ref)`` that the policy-gradient
    methods maximise, with ``beta = config.kl_coef`` and ``w = config.reward_weight``.

    For :class:`KLRLConfig` (the KL-regularised baseline of vBoN, Amini et al., arXiv
    2407.06057, Sec. 5) ``R`` is the raw reward; for ``VBoNConfig`` it is
    :func:`bonjax.objectives.vbon_reward` of ``log F_hat(r)``.
    """
    return kl_regularised_return(
        reward_B,
        logp_BxT,
        logp_ref_BxT,
        mask_BxT,
        kl_coef=config.kl_coef,
        reward_weight=config.reward_weight,
    )


def reinforce_loss(logp_BxT: jax.Array, mask_BxT: jax.Array, advantage_B: jax.Array) -> jax.Array:
    """Score-function surrogate ``-sg(A(y)) * log pi_theta(y)`` per sequence.

    Its gradient is ``-A(y) grad log pi_theta(y)``, a single-sample estimate of ``-grad E[A]``
    when ``A`` does not depend on ``y``'s own score (REINFORCE; Williams 1992). The advantage is
    not differentiated. Shape of ``advantage_B``.
    """
    check_inputs(
        {"logp_BxT": logp_BxT, "mask_BxT": mask_BxT},
        {"advantage_B": advantage_B},
        mask_name="mask_BxT",
    )
    return -jax.lax.stop_gradient(as_float(advantage_B)) * masked_sum(logp_BxT, mask_BxT)


def rloo_advantages(return_BxK: jax.Array) -> jax.Array:
    """Leave-one-out advantages ``A_i = R_i - (1/(K-1)) sum_{j != i} R_j`` over the K samples of a
    prompt (RLOO; Kool et al. 2019, Ahmadian et al., arXiv 2402.14740). Not differentiated.
    """
    return_BxK = jax.lax.stop_gradient(as_float(return_BxK))
    if return_BxK.ndim != 2 or return_BxK.shape[0] == 0:
        raise ValueError(f"return_BxK must have shape [B, K] with B > 0, got {return_BxK.shape}")
    k = return_BxK.shape[1]
    if k < 2:
        raise ValueError(f"RLOO needs K >= 2 samples per prompt, got return_BxK {return_BxK.shape}")
    total_B = return_BxK.sum(axis=1, keepdims=True)
    return return_BxK - (total_B - return_BxK) / (k - 1)


def rloo_loss(logp_BxKxT: jax.Array, mask_BxKxT: jax.Array, return_BxK: jax.Array) -> jax.Array:
    """Per-prompt RLOO loss ``-(1/K) sum_i sg(A_i) log pi_theta(y_i)`` with leave-one-out ``A_i``.

    With ``y_1..y_K ~ pi_theta(.|x)`` i.i.d., the expected gradient is ``-grad E_{pi_theta}[R]``
    exactly (the baseline of sample i does not depend on sample i). When ``R`` is the
    KL-regularised return (k1 with the current log-probs, not differentiated), it is
    ``-grad (E[w r] - beta KL(pi_theta || pi_ref))``, since ``E[grad log pi_theta] = 0``.
    Shape ``[B]``.
    """
    check_inputs(
        {"logp_BxKxT": logp_BxKxT, "mask_BxKxT": mask_BxKxT},
        {"return_BxK": return_BxK},
        mask_name="mask_BxKxT",
        sequence_ndim=2,
    )
    advantage_BxK = rloo_advantages(return_BxK)
    return reinforce_loss(logp_BxKxT, mask_BxKxT, advantage_BxK).mean(axis=1)


def ppo_clipped_surrogate(
    logp_BxT: jax.Array,
    logp_old_BxT: jax.Array,
    advantage_BxT: jax.Array,
    mask_BxT: jax.Array,
    clip_eps: float = 0.2,
) -> jax.Array:
    """Per-token PPO loss ``-min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)``, 0 on padding.

    ``rho_t = pi_theta(y_t|.) / pi_old(y_t|.)``; the old log-probs and the advantages are not
    differentiated (Schulman et al., arXiv 1707.06347, Eq. 7). The caller reduces over tokens
    (e.g. divides the sum by the number of completion tokens).
    """
    check_inputs(
        {
            "logp_BxT": logp_BxT,
            "logp_old_BxT": logp_old_BxT,
            "advantage_BxT": advantage_BxT,
            "mask_BxT": mask_BxT,
        },
        mask_name="mask_BxT",
    )
    check_positive("clip_eps", clip_eps)
    mask_BxT = as_mask(mask_BxT)
    logp_old_BxT = jax.lax.stop_gradient(logp_old_BxT)
    advantage_BxT = jnp.where(mask_BxT, jax.lax.stop_gradient(as_float(advantage_BxT)), 0.0)
    ratio_BxT = jnp.exp(_log_ratio(logp_BxT, logp_old_BxT, mask_BxT))
    unclipped_BxT = ratio_BxT * advantage_BxT
    clipped_BxT = jnp.clip(ratio_BxT, 1.0 - clip_eps, 1.0 + clip_eps) * advantage_BxT
    return jnp.where(mask_BxT, -jnp.minimum(unclipped_BxT, clipped_BxT), 0.0)


class GAEResult(NamedTuple):
    """Generalised advantage estimates and value targets, shape ``[B, T]``, 0 on padding."""

    advantage_BxT: jax.Array
    return_BxT: jax.Array


def gae(
    reward_BxT: jax.Array,
    value_BxT: jax.Array,
    mask_BxT: jax.Array,
    *,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> GAEResult:
    """Generalised advantage estimation (Schulman et al., arXiv 1506.02438) over completion tokens.

        delta_t = r_t + gamma V_{t+1} - V_t,     A_t = delta_t + gamma lambda A_{t+1},
        V_{t+1} = A_{t+1} = 0 after the last completion token (the episode ends there),

    computed by a reverse ``lax.scan`` over time; ``return_t = A_t + V_t`` is the value target.
    Padding positions have ``A_t = return_t = 0`` and act as terminal. Inputs are targets: no
    gradient flows through them. Defaults are the vBoN paper's (gamma = 1, lambda = 0.95).
    """
    check_inputs(
        {"reward_BxT": reward_BxT, "value_BxT": value_BxT, "mask_BxT": mask_BxT},
        mask_name="mask_BxT",
    )
    check_unit_interval("gamma", gamma)
    check_unit_interval("lam", lam)
    mask_BxT = as_mask(mask_BxT)
    reward_BxT = jnp.where(mask_BxT, jax.lax.stop_gradient(as_float(reward_BxT)), 0.0)
    value_BxT = jnp.where(mask_BxT, jax.lax.stop_gradient(as_float(value_BxT)), 0.0)

    def step(carry, inputs):
        next_value_B, next_advantage_B = carry
        reward_B, value_B, mask_B = inputs
        delta_B = reward_B + gamma * next_value_B - value_B
        advantage_B = jnp.where(mask_B, delta_B + gamma * lam * next_advantage_B, 0.0)
        return (value_B, advantage_B), advantage_B

    time_major = [jnp.moveaxis(x, -1, 0) for x in (reward_BxT, value_BxT, mask_BxT)]
    zeros_B = jnp.zeros(reward_BxT.shape[:-1], reward_BxT.dtype)
    _, advantage_TxB = jax.lax.scan(step, (zeros_B, zeros_B), time_major, reverse=True)
    advantage_BxT = jnp.moveaxis(advantage_TxB, 0, -1)
    return GAEResult(advantage_BxT, jnp.where(mask_BxT, advantage_BxT + value_BxT, 0.0))
