"""InfAlign-CTRL as a training method: KL-regularised RL on the transformed calibrated reward
``Phi(C)`` (:mod:`bonjax.objectives.infalign`), K policy samples per prompt, RLOO advantages,
the clipped surrogate. ``C`` comes from the cached reference rewards of the prompts
(``Context.ref_rewards``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from bonjax import objectives as obj
from bonjax.training.advantage import (
    AdvantageBatch,
    clipped_advantage_loss,
    scored_policy_samples,
)
from bonjax.training.rollout import rows

__all__ = ["InfAlignCTRL"]


@dataclasses.dataclass(frozen=True)
class InfAlignCTRL:
    """Maximises ``E[Phi(C)] - beta KL(pi || pi_ref)``; optimum ``pi_ref exp(Phi(C) / beta)``.

    Attributes:
      objective: the transform and beta.
      samples_per_prompt: K >= 2 (the leave-one-out baseline needs two).
      clip_eps: the PPO clipping range of the probability ratio.
    """

    objective: obj.CTRLConfig
    samples_per_prompt: int = 4
    clip_eps: float = 0.2

    uses_anchor = False
    anchor_eta = 0.0

    def __post_init__(self):
        if not isinstance(self.objective, obj.CTRLConfig):
            raise ValueError(f"InfAlignCTRL takes a CTRLConfig, got {self.objective!r}")
        if self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt must be >= 2 for the leave-one-out baseline, "
                             f"got {self.samples_per_prompt}")

    def init_extras(self, lm, key) -> dict[str, Any]:
        return {}

    def collect(self, ctx, policy, extras, anchor, prompt_tokens_BxP, prompt_mask_BxP,
                prompt_index_B, key):
        if ctx.ref_rewards is None:
            raise ValueError("InfAlign-CTRL needs reference rewards (Context.ref_rewards) to "
                             "calibrate the reward")
        out, logp_ref, reward_BxK, metrics = scored_policy_samples(
            ctx, policy, prompt_tokens_BxP, prompt_mask_BxP, key, self.samples_per_prompt)
        refs = ctx.ref_rewards(prompt_index_B)
        # Floor at half a reference's weight so that Phi = log stays finite.
        c_BxK = jnp.maximum(obj.calibrated_reward(refs, reward_BxK), 0.5 / refs.num_refs)
        transformed_BxK = self.objective.transform(c_BxK)
        return_BxK = obj.kl_regularised_return(
            transformed_BxK.reshape(-1), *rows(out.logp_BxNxT, logp_ref, out.mask_BxNxT),
            kl_coef=self.objective.beta).reshape(reward_BxK.shape)
        batch = AdvantageBatch(prompt_tokens_BxP, prompt_mask_BxP, out.tokens_BxNxT,
                               out.mask_BxNxT, out.logp_BxNxT, logp_ref,
                               advantage_BxS=obj.rloo_advantages(return_BxK))
        return batch, {**metrics, "calibrated_reward": c_BxK.mean(),
                       "return": return_BxK.mean()}

    def loss(self, scores, batch, extras):
        return clipped_advantage_loss(scores.logp_BxNxT, batch, self.clip_eps), {}
