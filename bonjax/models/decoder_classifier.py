"""Decoder reward models: a causal LM body with a linear ``score`` head read at the last token.

The architecture of Hugging Face's ``*ForSequenceClassification`` decoders (GPT-2, GPT-NeoX,
Gemma 2, Gemma 3, and any family of :data:`bonjax.models.weights.HF_FAMILIES`): the final-norm
hidden states ``h_BxTxD`` of the language model, a bias-free linear map to ``C`` scores, and the
scores of each row's last real token::

    s_BxC = h[b, t_b] @ W_DxC,   t_b = max{t : mask[b, t] and tokens[b, t] != pad_id}

``t_b`` is transformers' rule (the rightmost token that is not ``pad_token_id``; 0 when there is
none) restricted to the mask, so left- and right-padded rows, and ``[left-padded prompt |
right-padded completion]`` rows, all read their last real token. Positions count real tokens
from 0 (:func:`~bonjax.models.decoder.positions_from_mask`): a padded row scores as the same row
unpadded. (transformers numbers positions ``0..T-1`` whatever the padding unless given
``position_ids``; for GPT-2's absolute positions that changes a left-padded row's score.)

``DecoderClassifier`` holds the static part (the body's :class:`DecoderLM`, the number of
classes, the pad id) and is hashable; parameters are an ``nnx.State``
``{"body": <the LM's parameters>, "score": [D, C]}`` whose leaves carry logical axes::

    model, params = load_hf_decoder_classifier("path/to/GPT2ForSequenceClassification")
    out = model.forward(params, tokens_BxT, mask_BxT)      # out.logits_BxC, out.pooled_BxD

A checkpoint of a family with an untied output embedding (GPT-NeoX's ``embed_out``) has none in
its classifier: that parameter is left out of ``params`` (``absent``) and stands in as zeros
inside the jitted forward, where the unused vocabulary logits and the zeros are compiled away.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from bonjax import sharding as shd
from bonjax.models.decoder import DecoderConfig, DecoderLM, positions_from_mask
from bonjax.models.encoder import EncoderOutput
from bonjax.models.weights import (
    HF_FAMILIES,
    CheckpointError,
    hf_decoder_config,
    place_state,
    read_safetensors,
)

__all__ = ["DecoderClassifier", "last_token_index", "load_hf_decoder_classifier"]

_SCORE_AXES = ("embed", "classes")


def last_token_index(tokens_BxT: jax.Array, mask_BxT: jax.Array,
                     pad_id: int | None) -> jax.Array:
    """The index of each row's last real token: the rightmost ``t`` with ``mask`` set and, when
    ``pad_id`` is not None, ``tokens[t] != pad_id`` (transformers' rule); 0 for a row with none."""
    real_BxT = mask_BxT.astype(bool)
    if pad_id is not None:
        real_BxT = real_BxT & (tokens_BxT != pad_id)
    t_T = jnp.arange(tokens_BxT.shape[1], dtype=jnp.int32)
    return jnp.argmax(t_T * real_BxT.astype(jnp.int32), axis=-1)


def _name(path) -> str:
    return ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


@functools.lru_cache(maxsize=16)
def _absent_shapes(config: DecoderConfig, absent: tuple[str, ...]) -> nnx.State:
    """The abstract (shape and dtype) state of the body parameters named in ``absent``."""
    _, abstract = DecoderLM.abstract(config)
    state, _ = nnx.split_state(abstract, lambda path, _: _name(path) in absent, ...)
    return state


@dataclasses.dataclass(frozen=True)
class DecoderClassifier:
    """A decoder LM body and a bias-free ``score`` head: static part, functional forward.

    Attributes:
      lm: the body (its config and graph definition).
      num_classes: the number of scores ``C`` (1 for a scalar reward model).
      pad_id: the ``pad_token_id`` of the checkpoint's config (transformers' last-token rule),
        or None to read the last token of the mask alone.
      absent: body parameters the checkpoint lacks and the score never reads (an untied output
        embedding); zeros inside the forward, never stored.
    """

    lm: DecoderLM
    num_classes: int
    pad_id: int | None = None
    absent: tuple[str, ...] = ()

    def __post_init__(self):
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")

    @property
    def config(self) -> DecoderConfig:
        return self.lm.config

    @classmethod
    def init(cls, config: DecoderConfig, num_classes: int, key: jax.Array,
             pad_id: int | None = None, mesh: Mesh | None = None,
             rules: shd.ShardingRules = shd.ShardingRules()
             ) -> tuple[DecoderClassifier, nnx.State]:
        """Random initialisation: the body as :meth:`DecoderLM.init`, the head normal(0.02)."""
        k_body, k_score = jax.random.split(key)
        lm, body = DecoderLM.init(config, k_body, mesh, rules)
        D = jax.eval_shape(lambda p: lm.forward(p, *(jnp.zeros((1, 1), jnp.int32),) * 3),
                           body).hidden_BxTxD.shape[-1]
        score = 0.02 * jax.random.normal(k_score, (D, num_classes), jnp.dtype(config.param_dtype))
        if mesh is not None:
            score = jax.device_put(score, rules.sharding(_SCORE_AXES, score.shape, mesh))
        params = nnx.State({"body": body, "score": nnx.Param(score, axes=_SCORE_AXES)})
        return cls(lm, num_classes, pad_id), params

    def forward(self, params: nnx.State, tokens_BxT: jax.Array,
                mask_BxT: jax.Array) -> EncoderOutput:
        """The final-norm hidden states ``[B, T, D]``, those of each row's last real token
        ``[B, D]`` (float32) and their scores ``[B, C]`` (float32). Jitted (inlined when called
        under an outer ``jit``)."""
        if tokens_BxT.ndim != 2 or mask_BxT.shape != tokens_BxT.shape:
            raise ValueError(f"tokens {tokens_BxT.shape} and mask {mask_BxT.shape} must both be "
                             "[batch, time]")
        return _forward(self, params, tokens_BxT, mask_BxT)


@functools.partial(jax.jit, static_argnums=0)
def _forward(model: DecoderClassifier, params: nnx.State, tokens_BxT: jax.Array,
             mask_BxT: jax.Array) -> EncoderOutput:
    body = params["body"]
    if model.absent:
        zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                             _absent_shapes(model.config, model.absent))
        body = nnx.merge_state(body, zeros)
    mask_BxT = mask_BxT.astype(bool)
    out = model.lm.forward(body, tokens_BxT, positions_from_mask(mask_BxT), mask_BxT)
    hidden_BxTxD = out.hidden_BxTxD  # the vocabulary logits are unused: compiled away
    last_B = last_token_index(tokens_BxT, mask_BxT, model.pad_id)
    pooled_BxD = jnp.take_along_axis(hidden_BxTxD, last_B[:, None, None], axis=1)[:, 0]
    pooled_BxD = pooled_BxD.astype(jnp.float32)
    logits_BxC = jnp.einsum("bd,dc->bc", pooled_BxD, params["score"][...].astype(jnp.float32))
    return EncoderOutput(hidden_BxTxD=hidden_BxTxD, pooled_BxD=pooled_BxD, logits_BxC=logits_BxC)


def _text_config(hf: dict) -> dict:
    return hf.get("text_config") or hf


def load_hf_decoder_classifier(directory: str | os.PathLike, mesh: Mesh | None = None,
                               rules: shd.ShardingRules = shd.ShardingRules(),
                               **config_overrides) -> tuple[DecoderClassifier, nnx.State]:
    """Model and parameters of a Hugging Face ``*ForSequenceClassification`` decoder directory
    (config.json + safetensors, float32 or bfloat16) of a family of ``HF_FAMILIES``.

    The body is read by the family's own weight map (the body tensors keep their prefix,
    ``transformer.`` / ``model.`` / ``gpt_neox.``, as in the causal LM); ``score.weight``
    ``[C, D]`` becomes the head. Raises :class:`CheckpointError` when there is no
    ``score.weight`` (a causal LM or a base model, not a classifier).
    """
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise CheckpointError(f"{directory}: no config.json (not a Hugging Face checkpoint "
                              "directory)")
    hf = json.loads(config_path.read_text())
    cfg = hf_decoder_config(hf, **config_overrides)
    raw = read_safetensors(directory)
    if "score.weight" not in raw:
        raise CheckpointError(
            f"{directory}: no classification head: the checkpoint has no 'score.weight' "
            f"(config.json architectures {hf.get('architectures')}, model_type "
            f"{hf.get('model_type')!r}); a decoder reward model is a *ForSequenceClassification "
            "checkpoint")
    score_CxD = raw.pop("score.weight")
    C, D = score_CxD.shape
    labels = len(hf["id2label"]) if hf.get("id2label") else hf.get("num_labels", C)
    if labels != C:
        raise CheckpointError(f"{directory}: score.weight has {C} rows but config.json names "
                              f"{labels} labels")
    # The classifier has no output embedding; an untied family's weight map still asks for one.
    placeholder = np.broadcast_to(np.zeros((), np.float32), (cfg.vocab_size, D))
    if "lm_head.weight" not in raw:
        raw["lm_head.weight"] = placeholder
    try:
        tensors = HF_FAMILIES[cfg.hf_model_type].weights(cfg, raw)
    except CheckpointError as e:
        raise CheckpointError(f"{directory}: {e}") from e

    lm, abstract = DecoderLM.abstract(cfg)
    names = {_name(p) for p, _ in nnx.to_flat_state(abstract)}
    from_placeholder = {k for k, v in tensors.items()
                        if isinstance(v, np.ndarray) and np.shares_memory(v, placeholder)}
    absent = tuple(sorted(from_placeholder & names))
    tensors = {f"body.{k}": v for k, v in tensors.items() if k not in from_placeholder}
    tensors["score"] = score_CxD.T
    _, present = nnx.split_state(abstract, lambda path, _: _name(path) in absent, ...)
    score = jax.ShapeDtypeStruct((D, C), jnp.dtype(cfg.param_dtype))
    target = nnx.State({"body": present, "score": nnx.Param(score, axes=_SCORE_AXES)})
    params = place_state(target, tensors, str(directory), mesh, rules)
    pad_id = _text_config(hf).get("pad_token_id", hf.get("pad_token_id"))
    return DecoderClassifier(lm, C, pad_id, absent), params
