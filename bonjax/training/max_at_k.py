"""max@k policy optimisation (PKPO) as a training method: n policy samples per prompt, the
unbiased max@k gradient weights of :mod:`bonjax.objectives.max_at_k` as advantages, plus a KL
penalty to the reference with RLOO advantages, under the clipped surrogate."""

from __future__ import annotations

import dataclasses
from typing import Any

from bonjax import objectives as obj
from bonjax.objectives.max_at_k import check_k
from bonjax.training.advantage import (
    AdvantageBatch,
    clipped_advantage_loss,
    scored_policy_samples,
)
from bonjax.training.rollout import rows

__all__ = ["MaxAtK"]


@dataclasses.dataclass(frozen=True)
class MaxAtK:
    """Maximises ``maxg@k(pi) - beta KL(pi || pi_ref)`` from n samples per prompt.

    The advantage of sample i is ``n s_i`` (so that the mean over samples of ``A_i grad log
    pi(y_i)`` is the unbiased gradient of maxg@k) plus the RLOO advantage of ``-beta KL_i``.

    Attributes:
      objective: k, beta and the leave-one-out choice.
      samples_per_prompt: n >= max(k, 2).
      clip_eps: the PPO clipping range of the probability ratio.
    """

    objective: obj.MaxAtKConfig
    samples_per_prompt: int = 4
    clip_eps: float = 0.2

    uses_anchor = False
    anchor_eta = 0.0

    def __post_init__(self):
        if not isinstance(self.objective, obj.MaxAtKConfig):
            raise ValueError(f"MaxAtK takes a MaxAtKConfig, got {self.objective!r}")
        if self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt must be >= 2, got {self.samples_per_prompt}")
        check_k(self.objective.k, self.samples_per_prompt)

    def init_extras(self, lm, key) -> dict[str, Any]:
        return {}

    def collect(self, ctx, policy, extras, anchor, prompt_tokens_BxP, prompt_mask_BxP,
                prompt_index_B, key):
        n, o = self.samples_per_prompt, self.objective
        out, logp_ref, reward_BxN, metrics = scored_policy_samples(
            ctx, policy, prompt_tokens_BxP, prompt_mask_BxP, key, n)
        weight_BxN = obj.max_at_k_weights(reward_BxN, o.k, o.leave_one_out)
        penalty_BxN = obj.kl_regularised_return(
            0.0 * reward_BxN.reshape(-1), *rows(out.logp_BxNxT, logp_ref, out.mask_BxNxT),
            kl_coef=o.beta).reshape(reward_BxN.shape)
        advantage_BxN = n * weight_BxN + obj.rloo_advantages(penalty_BxN)
        batch = AdvantageBatch(prompt_tokens_BxP, prompt_mask_BxP, out.tokens_BxNxT,
                               out.mask_BxNxT, out.logp_BxNxT, logp_ref,
                               advantage_BxS=advantage_BxN)
        return batch, {**metrics, "max_at_k": obj.max_at_k_estimate(reward_BxN, o.k).mean()}

    def loss(self, scores, batch, extras):
        return clipped_advantage_loss(scores.logp_BxNxT, batch, self.clip_eps), {}
