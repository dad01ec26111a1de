"""The seam between the trainer and an alignment method: the ``Method`` protocol and what it
exchanges with the trainer (the ``Context`` it collects with, the ``Batch`` it collects).

The trainer owns what every method shares: the policy's parameters (``{"params": ...,
**extras}`` is the one trainable tree, the optimiser covers all of it), the teacher-forced
scorer, the jitted and sharded gradient step, the EMA anchor. A method owns the rest: what it
samples, its trainable extras (a value head) and their initialisation, and its loss. The trainer
never asks which method it runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import jax
from flax import nnx, struct

from bonjax import ecdf
from bonjax.models.decoder import DecoderLM
from bonjax.sampling.sampler import Sampler
from bonjax.sampling.scorer import CompletionScores

__all__ = ["Batch", "Context", "Method", "RewardFn", "base_fields", "fixed_data"]

RewardFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
"""``reward(prompt_tokens_BxP, prompt_mask_BxP, tokens_BxSxT, mask_BxSxT) -> reward_BxS``."""


@struct.dataclass
class Batch:
    """Completions of B prompts, ``S`` per prompt: what the trainer scores the policy on.

    Each method family extends it with the arrays its loss needs (advantages, ``log p_le``,
    value targets), every one with leading axis B, so the trainer can lay any batch out over
    the mesh's batch axes without knowing its fields.

    Attributes:
      prompt_tokens_BxP, prompt_mask_BxP: the left-padded prompts.
      tokens_BxSxT, mask_BxSxT: the completions the policy is scored on.
      logp_old_BxSxT: behaviour log-probs of policy samples (reference/anchor log-probs for
        completions the policy did not sample); the clipped ratio's denominator.
      logp_ref_BxSxT: reference (or anchor) log-probs of the completions.
    """

    prompt_tokens_BxP: jax.Array
    prompt_mask_BxP: jax.Array
    tokens_BxSxT: jax.Array
    mask_BxSxT: jax.Array
    logp_old_BxSxT: jax.Array
    logp_ref_BxSxT: jax.Array


def base_fields(batch: Batch) -> dict[str, jax.Array]:
    """The :class:`Batch` fields of ``batch`` by name, to build an extended batch from it."""
    return {f.name: getattr(batch, f.name) for f in dataclasses.fields(Batch)}


@dataclasses.dataclass(frozen=True)
class Context:
    """What ``collect`` may use: the sampler, the scorer, the reference policy, the reward.

    Attributes:
      sampler: samples from any parameters (temperature 1 for on-policy log-probs).
      score: ``score(params, prompt_tokens_BxP, prompt_mask_BxP, tokens_BxSxT, mask_BxSxT)
        -> CompletionScores`` (log-probs and hidden states), teacher-forced; one object per
        trainer, so it may be a static argument of ``jax.jit``.
      ref_params: the reference policy's parameters.
      reward: the reward function (see :data:`RewardFn`).
      ref_rewards: ``ref_rewards(prompt_index_B) -> ReferenceRewards`` of the cached reference
        samples of those prompts (vBoN's ``F_hat``), or None.
      data: ``data(prompt_index_B)`` -> those prompts' rows of a fixed data set that a method
        trains on instead of sampling (best-and-worst pairs, SFT responses), or None. A pytree
        of arrays, like ``ref_rewards``, so a compiled rollout takes it as an argument.
    """

    sampler: Sampler
    score: Callable[..., CompletionScores]
    ref_params: nnx.State
    reward: RewardFn
    ref_rewards: Callable[[jax.Array], ecdf.ReferenceRewards] | None = None
    data: Callable[[jax.Array], Any] | None = None


def fixed_data(ctx: Context, kind: type, method: str):
    """``ctx.data``, the fixed data set a method trains on, or a ``ValueError`` naming what the
    method needs when it is missing or of another kind."""
    if not isinstance(ctx.data, kind):
        raise ValueError(f"{method} trains on a fixed data set: pass a {kind.__name__} as "
                         f"Trainer(data=...), got {type(ctx.data).__name__}")
    return ctx.data


class Method(Protocol):
    """An alignment method (see :mod:`bonjax.training.algorithms` for the table of them).

    Attributes:
      uses_anchor: the method samples from an anchor policy that the trainer keeps (an
        untrained copy of the trainable parameters, BOND and J-BOND).
      anchor_eta: after every training step the anchor moves ``anchor_eta`` of the way to the
        policy (EMA); 0 keeps it fixed.
    """

    uses_anchor: bool
    anchor_eta: float

    def init_extras(self, lm: DecoderLM, key: jax.Array) -> dict[str, Any]:
        """The method's trainable arrays besides the policy's parameters (e.g. a value head),
        by name; they train with the policy under the same optimiser. Empty for most methods."""
        ...

    def collect(self, ctx: Context, policy: nnx.State, extras: dict[str, Any],
                anchor: nnx.State | None, prompt_tokens_BxP: jax.Array,
                prompt_mask_BxP: jax.Array, prompt_index_B: jax.Array,
                key: jax.Array) -> tuple[Batch, dict]:
        """A rollout: the batch the loss is minimised on, and metrics of the rollout. Host
        orchestration of jitted pieces, or traced whole when the trainer compiles it."""
        ...

    def loss(self, scores: CompletionScores, batch: Batch,
             extras: dict[str, Any]) -> tuple[jax.Array, dict]:
        """Per-prompt loss ``[B]`` and metrics, from the policy's scores of the batch's
        completions (log-probs and hidden states, one forward pass) and the current extras;
        traced inside the jitted gradient step, differentiated through ``scores`` and
        ``extras``."""
        ...
