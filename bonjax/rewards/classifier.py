"""Sequence-classifier rewards: one class's logit, log-odds or probability, on device."""

from __future__ import annotations

import enum

import jax
import jax.numpy as jnp
from flax import nnx, struct

from bonjax.models.encoder import EncoderClassifier

__all__ = ["ClassifierOutput", "ClassifierScorer"]


class ClassifierOutput(enum.Enum):
    """Which function of the classifier's logits ``z`` is the reward (``c`` = positive class)."""

    LOGIT = "logit"  # z_c (the vBoN paper's reward: distilbert-imdb's POSITIVE logit)
    LOG_ODDS = "log_odds"  # z_c - logsumexp_{k != c} z_k = log p_c - log(1 - p_c)
    PROBABILITY = "probability"  # p_c = softmax(z)_c


class ClassifierScorer(struct.PyTreeNode):
    """``(ids [B, L], mask [B, L]) -> r [B]`` with an encoder classifier; pure JAX.

    A pytree: ``params`` are leaves (traced arguments under ``jax.jit``, never baked-in
    constants), the model and settings are static.
    """

    model: EncoderClassifier = struct.field(pytree_node=False)
    params: nnx.State
    positive_class: int = struct.field(pytree_node=False, default=1)
    output: ClassifierOutput = struct.field(pytree_node=False, default=ClassifierOutput.LOGIT)

    def __post_init__(self):
        if not 0 <= self.positive_class < self.model.config.num_classes:
            raise ValueError(f"positive_class {self.positive_class} is not a class of a "
                             f"{self.model.config.num_classes}-class model")
        if not isinstance(self.output, ClassifierOutput):
            raise ValueError(f"output must be a ClassifierOutput, got {self.output!r}")

    def logits(self, ids_BxL: jax.Array, mask_BxL: jax.Array) -> jax.Array:
        return self.model.forward(self.params, ids_BxL, mask_BxL).logits_BxC

    def __call__(self, ids_BxL: jax.Array, mask_BxL: jax.Array) -> jax.Array:
        z_BxC = self.logits(ids_BxL, mask_BxL).astype(jnp.float32)
        c = self.positive_class
        if self.output is ClassifierOutput.LOGIT:
            return z_BxC[:, c]
        logp_BxC = jax.nn.log_softmax(z_BxC, axis=-1)
        if self.output is ClassifierOutput.PROBABILITY:
            return jnp.exp(logp_BxC[:, c])
        others_BxC = jnp.where(jnp.arange(z_BxC.shape[-1]) == c, -jnp.inf, z_BxC)
        return z_BxC[:, c] - jax.nn.logsumexp(others_BxC, axis=-1)
