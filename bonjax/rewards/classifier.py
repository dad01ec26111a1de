"""Sequence-classifier rewards: one class's logit, log-odds or probability, on device.

A classifier is an encoder (:class:`~bonjax.models.encoder.EncoderClassifier`: BERT,
DistilBERT, DeBERTa-v2/v3) or a decoder reward model
(:class:`~bonjax.models.decoder_classifier.DecoderClassifier`); both have ``num_classes`` and
``forward(params, ids, mask).logits_BxC``. :class:`ClassifierScorer` turns one into ``(ids, mask)
-> r``; :func:`token_reward` scores the policy's own tokens with it when the classifier shares the
policy's tokenizer (on device, no host round trip), and
:class:`~bonjax.rewards.interface.RetokenizedReward` feeds it re-tokenised text otherwise.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import nnx, struct

from bonjax.rewards.interface import TokenReward

__all__ = ["ClassifierOutput", "ClassifierScorer", "SequenceClassifier", "token_reward"]


class SequenceClassifier(Protocol):
    """What a scorer needs of a classifier model (static, hashable)."""

    @property
    def num_classes(self) -> int: ...

    def forward(self, params: Any, ids_BxL: jax.Array, mask_BxL: jax.Array) -> Any:
        """An output with ``logits_BxC``."""


class ClassifierOutput(enum.Enum):
    """Which function of the classifier's logits ``z`` is the reward (``c`` = positive class)."""

    LOGIT = "logit"  # z_c (the vBoN paper's reward: distilbert-imdb's POSITIVE logit)
    LOG_ODDS = "log_odds"  # z_c - logsumexp_{k != c} z_k = log p_c - log(1 - p_c)
    PROBABILITY = "probability"  # p_c = softmax(z)_c


class ClassifierScorer(struct.PyTreeNode):
    """``(ids [B, L], mask [B, L]) -> r [B]`` with a sequence classifier; pure JAX.

    A scalar reward model (one class) takes ``positive_class=0`` and the ``LOGIT`` output.

    A pytree: ``params`` are leaves (traced arguments under ``jax.jit``, never baked-in
    constants), the model and settings are static.
    """

    model: SequenceClassifier = struct.field(pytree_node=False)
    params: nnx.State
    positive_class: int = struct.field(pytree_node=False, default=1)
    output: ClassifierOutput = struct.field(pytree_node=False, default=ClassifierOutput.LOGIT)

    def __post_init__(self):
        if not 0 <= self.positive_class < self.model.num_classes:
            raise ValueError(f"positive_class {self.positive_class} is not a class of a "
                             f"{self.model.num_classes}-class model")
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


def _scorer_on_tokens(scorer: ClassifierScorer, tokens_RxS: jax.Array,
                      mask_RxS: jax.Array) -> jax.Array:
    return scorer(tokens_RxS, mask_RxS)


def token_reward(scorer: ClassifierScorer, include_prompt: bool = True) -> TokenReward:
    """The reward of a classifier that shares the policy's tokenizer, on the policy's tokens.

    Each completion row is scored as ``[left-padded prompt | right-padded completion]`` (the
    completion alone without ``include_prompt``) with its mask; a decoder reward model reads its
    score at the completion's last real token. Traceable: the scorer's parameters are leaves of
    the returned pytree, and nothing goes back to the host.
    """
    return TokenReward(fn=_scorer_on_tokens, params=scorer, include_prompt=include_prompt)
