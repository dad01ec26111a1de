"""The pieces of a policy-gradient method on per-sample advantages: K policy samples per prompt,
scored under the reference, and the clipped surrogate on their advantages (used by the
InfAlign-CTRL and max@k methods)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from bonjax import objectives as obj
from bonjax.training.protocol import Batch, Context
from bonjax.training.rollout import kl_metrics

__all__ = ["AdvantageBatch", "clipped_advantage_loss", "scored_policy_samples"]


@struct.dataclass
class AdvantageBatch(Batch):
    """K policy samples per prompt and their advantages ``advantage_BxS`` (not differentiated)."""

    advantage_BxS: jax.Array


def scored_policy_samples(ctx: Context, policy, prompt_tokens_BxP, prompt_mask_BxP, key,
                          k: int):
    """``(samples, logp_ref_BxKxT, reward_BxK, metrics)`` of K policy samples per prompt."""
    out = ctx.sampler.sample(policy, prompt_tokens_BxP, prompt_mask_BxP, key, k)
    logp_ref = ctx.score(ctx.ref_params, prompt_tokens_BxP, prompt_mask_BxP, out.tokens_BxNxT,
                         out.mask_BxNxT).logp_BxNxT
    reward_BxK = ctx.reward(prompt_tokens_BxP, prompt_mask_BxP, out.tokens_BxNxT,
                            out.mask_BxNxT)
    metrics = {"reward": reward_BxK.mean(), **kl_metrics(out.logp_BxNxT, logp_ref,
                                                         out.mask_BxNxT)}
    return out, logp_ref, reward_BxK, metrics


def clipped_advantage_loss(logp_BxSxT, batch: AdvantageBatch, clip_eps: float) -> jax.Array:
    """Per-prompt PPO clipped surrogate summed over tokens, averaged over the S samples."""
    advantage_BxSxT = jnp.broadcast_to(batch.advantage_BxS[..., None], logp_BxSxT.shape)
    per_token = obj.ppo_clipped_surrogate(logp_BxSxT, batch.logp_old_BxSxT, advantage_BxSxT,
                                          batch.mask_BxSxT, clip_eps)
    return per_token.sum(-1).mean(-1)
