"""The rollout the policy-gradient methods share (RLOO and PPO, for vBoN and KL-RL): K policy
samples per prompt, scored under the reference, with the sequence reward their objective
maximises."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from bonjax import ecdf
from bonjax import objectives as obj
from bonjax.training.protocol import Context

__all__ = ["PolicySamples", "kl_metrics", "policy_samples", "rows"]


def rows(*arrays_BxKxT: jax.Array) -> tuple[jax.Array, ...]:
    """``[B, K, T] -> [B * K, T]`` for the per-sequence objective functions."""
    return tuple(a.reshape((-1, a.shape[-1])) for a in arrays_BxKxT)


def kl_metrics(logp_BxKxT, logp_ref_BxKxT, mask_BxKxT) -> dict[str, jax.Array]:
    """KL estimates to the reference (k1, k3), entropy and length of policy samples."""
    return {"kl_k1": obj.kl_k1(logp_BxKxT, logp_ref_BxKxT, mask_BxKxT).mean(),
            "kl_k3": obj.kl_k3(logp_BxKxT, logp_ref_BxKxT, mask_BxKxT).mean(),
            "entropy": -obj.masked_sum(logp_BxKxT, mask_BxKxT).mean(),
            "completion_tokens": mask_BxKxT.sum(-1).astype(jnp.float32).mean()}


class PolicySamples(NamedTuple):
    """K policy samples per prompt, scored, with the sequence reward their objective maximises.

    ``return_reward_BxK`` is ``R(y)`` of the return ``w R(y) - beta KL``: the raw reward for
    KL-RL, :func:`bonjax.objectives.vbon_reward` of ``log F_hat(r)`` for vBoN.
    """

    tokens_BxKxT: jax.Array
    mask_BxKxT: jax.Array
    logp_BxKxT: jax.Array
    logp_ref_BxKxT: jax.Array
    return_reward_BxK: jax.Array
    metrics: dict


def policy_samples(objective: obj.VBoNConfig | obj.KLRLConfig, estimator: ecdf.ECDFEstimator,
                   K: int, ctx: Context, policy, prompt_tokens_BxP, prompt_mask_BxP,
                   prompt_index_B, key) -> PolicySamples:
    """The rollout shared by the policy-gradient methods (RLOO and PPO) of vBoN and KL-RL."""
    out = ctx.sampler.sample(policy, prompt_tokens_BxP, prompt_mask_BxP, key, K)
    tokens, mask, logp = out.tokens_BxNxT, out.mask_BxNxT, out.logp_BxNxT
    logp_ref = ctx.score(ctx.ref_params, prompt_tokens_BxP, prompt_mask_BxP, tokens,
                         mask).logp_BxNxT
    reward_BxK = ctx.reward(prompt_tokens_BxP, prompt_mask_BxP, tokens, mask)
    metrics = {"reward": reward_BxK.mean(), **kl_metrics(logp, logp_ref, mask)}
    if isinstance(objective, obj.VBoNConfig):
        if ctx.ref_rewards is None:
            raise ValueError("vBoN needs reference rewards (Context.ref_rewards) for F_hat")
        log_F_BxK = ecdf.log_ecdf(ctx.ref_rewards(prompt_index_B), reward_BxK, estimator)
        metrics["log_F"] = log_F_BxK.mean()
        R_BxK = obj.vbon_reward(log_F_BxK.reshape(-1), *rows(logp_ref, mask),
                                objective).reshape(reward_BxK.shape)
    else:
        R_BxK = reward_BxK
    return PolicySamples(tokens, mask, logp, logp_ref, R_BxK, metrics)
