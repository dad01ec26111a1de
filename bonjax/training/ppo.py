"""PPO with a value head and GAE: the vBoN paper's optimiser, for vBoN and the KL-RL baseline.

Per rollout (Schulman et al. 2017, arXiv 1707.06347; the RLHF form of Ziegler et al. 2019):

    r_t   = -beta (log pi_old(y_t) - log pi_ref(y_t)) + [t = last] w R(y)     (per-token reward)
    V_t   = v^T h_t + b                  (value head on the policy's final hidden state h_t)
    A_t   = GAE(r, V_old; gamma, lambda),   G_t = A_t + V_old_t                (value target)
    L     = sum_t -min(rho_t A_t, clip(rho_t, 1 +- eps) A_t)
            + c_v sum_t 1/2 max((V_t - G_t)^2, (V_old_t + clip(V_t - V_old_t, +- eps_v) - G_t)^2)

with ``rho_t = pi_theta(y_t) / pi_old(y_t)``. vBoN sets ``R = log F_hat(r)`` (``R_exact`` for
the exact variant, :func:`bonjax.objectives.vbon_reward`) and
``beta = 1 / (N - 1)`` (``w = 1``); the baseline sets ``R = r`` and its own ``beta``. ``gamma = 1``
and ``lambda = 0.95`` are the paper's. ``h_t`` is the hidden state the logits of token ``t`` are
computed from, so ``V_t`` values the state before ``y_t`` is emitted.

The value head is the method's trainable extra (``init_extras``: ``TrainState.extra
["value_head"]``, covered by the same optimiser) and shares the policy's trunk: the value loss
also shapes the trainable blocks. Collecting costs one forward pass of the policy over the
samples beyond what the critic-free :class:`~bonjax.training.algorithms.PolicyGradient` needs (the
values ``V_old``, from the scorer's hidden states); every gradient step's forward pass gives both
``log pi_theta`` and ``V``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import struct

from bonjax import ecdf
from bonjax import objectives as obj
from bonjax.checks import check_positive, check_unit_interval
from bonjax.training.protocol import Batch, base_fields
from bonjax.training.rollout import policy_samples, rows

__all__ = ["PPO", "PPOBatch", "ValueHead", "init_value_head", "value_head_apply", "whiten"]


@struct.dataclass
class ValueHead:
    """A linear map of the final hidden state to a scalar value: ``V = w_D . h + b``."""

    w_D: jax.Array
    b: jax.Array


def init_value_head(d_model: int) -> ValueHead:
    """Zeros: the first values are 0 and GAE starts as a plain (discounted) return."""
    return ValueHead(w_D=jnp.zeros((d_model,), jnp.float32), b=jnp.zeros((), jnp.float32))


def value_head_apply(head: ValueHead, hidden_xD: jax.Array) -> jax.Array:
    """Float32 values ``[...]`` of hidden states ``[..., D]``."""
    return jnp.einsum("...d,d->...", hidden_xD.astype(jnp.float32), head.w_D) + head.b


def _masked_moments(x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of ``x`` over the masked entries of the whole batch."""
    count = jnp.maximum(mask.sum(), 1)
    mean = jnp.where(mask, x, 0.0).sum() / count
    return mean, jnp.where(mask, jnp.square(x - mean), 0.0).sum() / count


def whiten(x: jax.Array, mask: jax.Array, eps: float = 1e-8) -> jax.Array:
    """``(x - mean) / std`` over the masked entries of the whole batch, 0 elsewhere."""
    mask = mask.astype(jnp.bool_)
    mean, var = _masked_moments(x, mask)
    return jnp.where(mask, (x - mean) * jax.lax.rsqrt(var + eps), 0.0)


@struct.dataclass
class PPOBatch(Batch):
    """K policy samples per prompt with their per-token rewards, values and GAE targets.

    Attributes:
      reward_BxSxT: per-token rewards ``r_t`` (KL penalty, sequence reward on the last token).
      value_old_BxSxT: the value head's ``V_old`` at collection, 0 on padding.
      advantage_BxSxT: GAE advantages (whitened over the batch if the method says so).
      value_target_BxSxT: ``G_t = A_t + V_old_t`` (before whitening).
    """

    reward_BxSxT: jax.Array
    value_old_BxSxT: jax.Array
    advantage_BxSxT: jax.Array
    value_target_BxSxT: jax.Array


@dataclasses.dataclass(frozen=True)
class PPO:
    """vBoN or the KL-RL baseline, optimised by PPO with a value head, GAE and clipping.

    Attributes:
      objective: ``VBoNConfig`` or ``KLRLConfig`` (see the module equations).
      samples_per_prompt: K >= 1 policy samples per prompt (the critic needs no second sample).
      clip_eps: the clipping range of the probability ratio.
      value_clip_eps: the clipping range of the value update around ``V_old``.
      value_coef: ``c_v``, the weight of the value loss.
      gamma, lam: GAE's discount and trace decay (paper: 1 and 0.95).
      whiten_advantages: normalise the advantages over the batch's completion tokens.
      estimator: the ECDF variant for vBoN's ``log F_hat``.
    """

    objective: obj.VBoNConfig | obj.KLRLConfig
    samples_per_prompt: int = 1
    clip_eps: float = 0.2
    value_clip_eps: float = 0.2
    value_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    whiten_advantages: bool = True
    estimator: ecdf.ECDFEstimator = ecdf.SMOOTHED_LT

    uses_anchor = False
    anchor_eta = 0.0

    def __post_init__(self):
        if not isinstance(self.objective, obj.VBoNConfig | obj.KLRLConfig):
            raise ValueError(f"PPO takes VBoNConfig or KLRLConfig, got {self.objective!r}")
        if not isinstance(self.samples_per_prompt, int) or self.samples_per_prompt < 1:
            raise ValueError(f"samples_per_prompt must be an integer >= 1, got "
                             f"{self.samples_per_prompt!r}")
        for name in ("clip_eps", "value_clip_eps", "value_coef"):
            check_positive(name, getattr(self, name))
        check_unit_interval("gamma", self.gamma)
        check_unit_interval("lam", self.lam)

    def init_extras(self, lm, key) -> dict:
        """The value head on the final hidden states (zeros, see :func:`init_value_head`)."""
        return {"value_head": init_value_head(lm.config.d_model)}

    def collect(self, ctx, policy, extras, anchor, prompt_tokens_BxP, prompt_mask_BxP,
                prompt_index_B, key) -> tuple[PPOBatch, dict]:
        """K policy samples with per-token rewards, the value head's ``V_old`` and GAE."""
        s = policy_samples(self.objective, self.estimator, self.samples_per_prompt, ctx, policy,
                           prompt_tokens_BxP, prompt_mask_BxP, prompt_index_B, key)
        reward_RxT = obj.per_token_rewards(
            s.return_reward_BxK.reshape(-1), *rows(s.logp_BxKxT, s.logp_ref_BxKxT, s.mask_BxKxT),
            kl_coef=self.objective.kl_coef, reward_weight=self.objective.reward_weight)
        reward_BxKxT = reward_RxT.reshape(s.tokens_BxKxT.shape)
        batch = Batch(prompt_tokens_BxP, prompt_mask_BxP, s.tokens_BxKxT, s.mask_BxKxT,
                      s.logp_BxKxT, s.logp_ref_BxKxT)
        batch, value_metrics = _with_old_values(self, ctx.score, extras["value_head"], policy,
                                                batch, reward_BxKxT)
        return batch, {**s.metrics, "return": reward_BxKxT.sum(-1).mean(), **value_metrics}

    def with_values(self, batch: Batch, reward_BxSxT: jax.Array,
                    value_BxSxT: jax.Array) -> tuple[PPOBatch, dict]:
        """GAE advantages and value targets from the per-token rewards and the values
        ``V_old`` at collection."""
        mask = batch.mask_BxSxT
        value_BxSxT = jnp.where(mask, value_BxSxT, 0.0)
        advantage, target = obj.gae(reward_BxSxT, value_BxSxT, mask, gamma=self.gamma,
                                    lam=self.lam)
        if self.whiten_advantages:
            advantage = whiten(advantage, mask)
        out = PPOBatch(**base_fields(batch), reward_BxSxT=reward_BxSxT,
                       value_old_BxSxT=value_BxSxT, advantage_BxSxT=advantage,
                       value_target_BxSxT=target)
        metrics = {"value": _masked_moments(value_BxSxT, mask)[0],
                   "value_explained_variance": _explained_variance(value_BxSxT, target, mask)}
        return out, metrics

    def loss(self, scores, batch: PPOBatch, extras) -> tuple[jax.Array, dict]:
        """Per-prompt clipped surrogate plus ``c_v`` times the clipped value loss; the values
        come from the same forward pass as the log-probs (the scores' hidden states)."""
        logp_BxSxT = scores.logp_BxNxT
        value_BxSxT = value_head_apply(extras["value_head"], scores.hidden_BxNxTxD)
        return self.loss_from_values(logp_BxSxT, value_BxSxT, batch)

    def loss_from_values(self, logp_BxSxT: jax.Array, value_BxSxT: jax.Array,
                   batch: PPOBatch) -> tuple[jax.Array, dict]:
        """:meth:`loss` given the policy's log-probs and values of the batch."""
        mask = batch.mask_BxSxT
        policy_BxSxT = obj.ppo_clipped_surrogate(logp_BxSxT, batch.logp_old_BxSxT,
                                                 batch.advantage_BxSxT, mask, self.clip_eps)
        value_old, target = batch.value_old_BxSxT, batch.value_target_BxSxT
        clipped = value_old + jnp.clip(value_BxSxT - value_old, -self.value_clip_eps,
                                       self.value_clip_eps)
        value_loss_BxSxT = 0.5 * jnp.maximum(jnp.square(value_BxSxT - target),
                                             jnp.square(clipped - target))
        value_loss_BxSxT = jnp.where(mask, value_loss_BxSxT, 0.0)
        policy_B = policy_BxSxT.sum(-1).mean(-1)
        value_B = value_loss_BxSxT.sum(-1).mean(-1)
        tokens = jnp.maximum(mask.sum(), 1)
        metrics = {"policy_loss": policy_B.mean(), "value_loss": value_B.mean(),
                   "value_clip_fraction": jnp.where(
                       mask, jnp.abs(value_BxSxT - value_old) > self.value_clip_eps,
                       False).sum() / tokens}
        return policy_B + self.value_coef * value_B, metrics


@functools.partial(jax.jit, static_argnums=(0, 1))
def _with_old_values(method: PPO, score, value_head: ValueHead, policy, batch: Batch,
                     reward_BxSxT: jax.Array) -> tuple[PPOBatch, dict]:
    """``V_old`` of the collected samples from the policy's hidden states, then GAE: one
    compiled program (``score`` is the trainer's scorer, one object per trainer)."""
    hidden_BxSxTxD = score(policy, batch.prompt_tokens_BxP, batch.prompt_mask_BxP,
                           batch.tokens_BxSxT, batch.mask_BxSxT).hidden_BxNxTxD
    return method.with_values(batch, reward_BxSxT, value_head_apply(value_head, hidden_BxSxTxD))


def _explained_variance(value, target, mask):
    """``1 - Var(G - V) / Var(G)`` over the completion tokens (1: the critic is exact)."""
    mask = mask.astype(jnp.bool_)
    return 1.0 - _masked_moments(target - value, mask)[1] / jnp.maximum(
        _masked_moments(target, mask)[1], 1e-12)
