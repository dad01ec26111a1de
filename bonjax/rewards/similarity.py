"""Sentence embeddings of completions for similarity-regularised selection (MBR-BoN): the
packaged all-MiniLM-L6-v2 encoder, mean-pooled (as sentence-transformers), fed the decoded text
of the policy's tokens."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bonjax.models.encoder import EncoderClassifier, Pooling
from bonjax.models.encoder_tokenizer import minilm_tokenizer
from bonjax.models.encoder_weights import load_minilm
from bonjax.rewards.interface import decode_texts

__all__ = ["SentenceEmbedder", "load_minilm_embedder"]


@functools.partial(jax.jit, static_argnums=0)
def _pooled(model: EncoderClassifier, params, ids_BxL, mask_BxL):
    return model.forward(params, ids_BxL, mask_BxL).pooled_BxD


@dataclasses.dataclass(frozen=True, eq=False)
class SentenceEmbedder:
    """``embed(prompt_BxP, prompt_mask_BxP, tokens_BxNxT, mask_BxNxT) -> [B, N, D]`` (host path:
    decode, re-tokenise, encode on device).

    Attributes:
      model, params: a mean-pooling encoder.
      tokenizer: its tokenizer (``texts -> (ids, mask)``).
      policy_tokenizer: decodes the policy's tokens (see :func:`bonjax.rewards.decode_texts`).
      include_prompt: embed ``prompt + completion`` instead of the completion alone.
    """

    model: EncoderClassifier
    params: Any
    tokenizer: Any
    policy_tokenizer: Any
    include_prompt: bool = False

    def __post_init__(self):
        if self.model.config.pooling is not Pooling.MEAN:
            raise ValueError(f"sentence embeddings need mean pooling, got "
                             f"{self.model.config.pooling}")

    def embed_texts(self, texts) -> np.ndarray:
        """Mean-pooled embeddings ``[len(texts), D]`` of texts."""
        ids, mask = self.tokenizer(list(texts))
        return np.asarray(_pooled(self.model, self.params, jnp.asarray(ids), jnp.asarray(mask)))

    def __call__(self, prompt_BxP, prompt_mask_BxP, tokens_BxNxT, mask_BxNxT) -> jax.Array:
        B, N = tokens_BxNxT.shape[:2]
        texts = decode_texts(self.policy_tokenizer, prompt_BxP, prompt_mask_BxP, tokens_BxNxT,
                             mask_BxNxT, include_prompt=self.include_prompt)
        return jnp.asarray(self.embed_texts(texts).reshape(B, N, -1))


def load_minilm_embedder(policy_tokenizer, max_length: int = 128,
                         include_prompt: bool = False) -> SentenceEmbedder:
    """all-MiniLM-L6-v2 from its package, mean-pooled (its classifier head is unused)."""
    model, params = load_minilm()
    return SentenceEmbedder(model, params, minilm_tokenizer(max_length, pad_multiple=16),
                            policy_tokenizer, include_prompt)
