"""QRPO as a training method: offline pointwise regression on reference completions
(:mod:`bonjax.objectives.qrpo`). Each step samples S completions per prompt from pi_ref (the
offline data; their temperature-1 log-probs are the reference log-probs), ranks their rewards
against the prompt's cached reference rewards (``Context.ref_rewards``) for ``q_hat``, and
regresses ``beta log(pi_theta / pi_ref)`` onto ``f(q_hat) - beta log Z_f``. No policy sample is
drawn: the policy's own parameters only enter the loss."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from flax import struct

from bonjax import ecdf
from bonjax import objectives as obj
from bonjax.training.protocol import Batch

__all__ = ["QRPO", "QRPOBatch"]


@struct.dataclass
class QRPOBatch(Batch):
    """S reference completions per prompt and their reference quantiles ``q_BxS``."""

    q_BxS: jax.Array


@dataclasses.dataclass(frozen=True)
class QRPO:
    """QRPO's regression on ``samples_per_prompt`` reference completions per prompt.

    Attributes:
      objective: beta and the quantile transform f.
      samples_per_prompt: S >= 1 completions of pi_ref per prompt and step.
    """

    objective: obj.QRPOConfig
    samples_per_prompt: int = 4

    uses_anchor = False
    anchor_eta = 0.0

    def __post_init__(self):
        if not isinstance(self.objective, obj.QRPOConfig):
            raise ValueError(f"QRPO takes a QRPOConfig, got {self.objective!r}")
        if self.samples_per_prompt < 1:
            raise ValueError(f"samples_per_prompt must be >= 1, got {self.samples_per_prompt}")

    def init_extras(self, lm, key) -> dict[str, Any]:
        return {}

    def collect(self, ctx, policy, extras, anchor, prompt_tokens_BxP, prompt_mask_BxP,
                prompt_index_B, key):
        if ctx.ref_rewards is None:
            raise ValueError("QRPO needs reference rewards (Context.ref_rewards) for q_hat")
        out = ctx.sampler.sample(ctx.ref_params, prompt_tokens_BxP, prompt_mask_BxP, key,
                                 self.samples_per_prompt)
        reward_BxS = ctx.reward(prompt_tokens_BxP, prompt_mask_BxP, out.tokens_BxNxT,
                                out.mask_BxNxT)
        refs = ctx.ref_rewards(prompt_index_B)
        count_BxS = ecdf.count_below(refs, reward_BxS, ecdf.Inequality.LESS_EQUAL)
        q_BxS = obj.reference_quantiles(count_BxS, refs.num_refs, self.objective)
        batch = QRPOBatch(prompt_tokens_BxP, prompt_mask_BxP, out.tokens_BxNxT, out.mask_BxNxT,
                          out.logp_BxNxT, out.logp_BxNxT, q_BxS=q_BxS)
        return batch, {"reward": reward_BxS.mean(), "quantile": q_BxS.mean()}

    def loss(self, scores, batch, extras):
        loss_BxS = obj.qrpo_loss(scores.logp_BxNxT, batch.logp_ref_BxSxT, batch.mask_BxSxT,
                                 batch.q_BxS, self.objective)
        return loss_BxS.mean(-1), {}
