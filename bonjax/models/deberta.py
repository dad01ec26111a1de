"""DeBERTa-v2 / v3 sequence classifiers (He et al. 2021), e.g. OpenAssistant's
``reward-model-deberta-v3-large-v2``.

A post-LayerNorm encoder (as BERT, :mod:`bonjax.models.encoder`) whose attention adds
*disentangled* relative-position terms to the content score. With ``r = bucket(i - j)`` and
``P`` the (LayerNorm-ed) relative embeddings ``[2k, D]``, ``k`` the attention span::

    s_ij = [ q_i.k_j  +  q_i.Pk[c(r)]  +  k_j.Pq[c(-bucket(j - i))] ] / sqrt(H * (1 + #terms))
           content      content->position      position->content
    c(x) = clip(x + k, 0, 2k - 1)

``Pk = P Wk + bk`` and ``Pq = P Wq + bq`` reuse the content projections with ``share_att_key``
(DeBERTa-v3), else their own. ``bucket`` is the identity below ``position_buckets / 2`` and
logarithmic beyond, up to ``max_relative_positions``. DeBERTa-v3 has no absolute position
embedding (``position_biased_input`` false) and no token types; the pooler is
``act(W h_[CLS] + b)`` (``pooler_hidden_act``, GELU), then a linear classifier. Dropout is not
modelled. The first layer's convolution of DeBERTa-v2-xlarge (``conv_kernel_size``) is not
implemented and raises.

The model is an :class:`~bonjax.models.encoder.EncoderClassifier` (the config builds
:class:`DebertaV2`), so scorers, sharding and staged fine-tuning treat it as BERT::

    model, params = load_hf_deberta("path/to/DebertaV2ForSequenceClassification")
    out = model.forward(params, ids_BxT, mask_BxT)          # right-padded, as its tokenizer pads
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from bonjax import sharding as shd
from bonjax.models.encoder import EncoderClassifier, EncoderOutput, LayerNorm
from bonjax.models.params import param
from bonjax.models.weights import CheckpointError, place_state, read_safetensors, tensor_getter

__all__ = ["DebertaV2", "DebertaV2Config", "load_hf_deberta", "relative_positions"]

# Hugging Face activation names -> functions (exact GELU for "gelu", as torch's default).
_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
}
_POS_ATT_TYPES = ("c2p", "p2c")


@dataclasses.dataclass(frozen=True)
class DebertaV2Config:
    """Static DeBERTa-v2/v3 hyperparameters; the defaults are deberta-v3-large with one label
    (OpenAssistant/reward-model-deberta-v3-large-v2)."""

    vocab_size: int = 128100
    max_positions: int = 512  # max_position_embeddings (the absolute table, when there is one)
    num_layers: int = 24
    num_heads: int = 16
    d_model: int = 1024
    mlp_dim: int = 4096
    embedding_size: int | None = None  # word embedding width when it differs from d_model
    type_vocab_size: int = 0
    position_biased_input: bool = False  # add absolute position embeddings to the input
    relative_attention: bool = True
    max_relative_positions: int = -1  # -1: max_positions
    position_buckets: int = 256  # <= 0: no log bucketing
    pos_att_type: tuple[str, ...] = ("p2c", "c2p")
    share_att_key: bool = True
    norm_rel_ebd: bool = True  # LayerNorm on the relative embeddings ("layer_norm")
    hidden_act: str = "gelu"
    pooler_hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-7
    num_classes: int = 1
    pad_id: int = 0
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        for name in ("vocab_size", "max_positions", "num_layers", "num_heads", "mlp_dim",
                     "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by num_heads "
                             f"{self.num_heads}")
        unknown = set(self.pos_att_type) - set(_POS_ATT_TYPES)
        if unknown:
            raise ValueError(f"pos_att_type {sorted(unknown)} is not supported "
                             f"({', '.join(_POS_ATT_TYPES)})")
        for name in ("hidden_act", "pooler_hidden_act"):
            if getattr(self, name) not in _ACTIVATIONS:
                raise ValueError(f"{name} {getattr(self, name)!r} is not supported "
                                 f"({', '.join(sorted(_ACTIVATIONS))})")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def embed_dim(self) -> int:
        return self.embedding_size or self.d_model

    @property
    def relative_span(self) -> int:
        """The attention span ``k``: ``2k`` relative embeddings are read."""
        if self.position_buckets > 0:
            return self.position_buckets
        return self.max_relative_positions if self.max_relative_positions > 0 \
            else self.max_positions

    @property
    def bucket_max_position(self) -> int:
        return self.max_relative_positions if self.max_relative_positions > 0 \
            else self.max_positions

    def make(self, rngs: nnx.Rngs) -> DebertaV2:
        return DebertaV2(self, rngs=rngs)

    @classmethod
    def tiny(cls, **overrides) -> DebertaV2Config:
        """A small config for tests (random weights): 8 buckets, so distances past 4 are
        log-bucketed."""
        kw = dict(vocab_size=101, max_positions=64, num_layers=2, num_heads=4, d_model=32,
                  mlp_dim=64, position_buckets=8, max_relative_positions=32, num_classes=2)
        return cls(**{**kw, **overrides})

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any], **overrides) -> DebertaV2Config:
        """The config of a Hugging Face ``config.json`` (``model_type`` deberta-v2); settings
        the module does not implement raise ``ValueError``."""
        if hf.get("conv_kernel_size", 0) > 0:
            raise ValueError("DeBERTa with conv_kernel_size > 0 (the first layer's convolution) "
                             "is not supported")
        heads = hf["num_attention_heads"]
        if hf.get("attention_head_size", hf["hidden_size"] // heads) != hf["hidden_size"] // heads:
            raise ValueError("DeBERTa with attention_head_size != hidden_size / heads is not "
                             "supported")
        if hf.get("pooler_hidden_size", hf["hidden_size"]) != hf["hidden_size"]:
            raise ValueError("DeBERTa with pooler_hidden_size != hidden_size is not supported")
        norm = [x.strip() for x in str(hf.get("norm_rel_ebd", "none")).lower().split("|")]
        pos_att = hf.get("pos_att_type") or ()
        if isinstance(pos_att, str):
            pos_att = [x.strip() for x in pos_att.lower().split("|")]
        num_classes = len(hf["id2label"]) if hf.get("id2label") else hf.get("num_labels", 2)
        embedding = hf.get("embedding_size", hf["hidden_size"])
        kw = dict(
            vocab_size=hf["vocab_size"], max_positions=hf.get("max_position_embeddings", 512),
            num_layers=hf["num_hidden_layers"], num_heads=heads, d_model=hf["hidden_size"],
            mlp_dim=hf["intermediate_size"],
            embedding_size=None if embedding == hf["hidden_size"] else embedding,
            type_vocab_size=hf.get("type_vocab_size", 0),
            position_biased_input=hf.get("position_biased_input", True),
            relative_attention=hf.get("relative_attention", False),
            max_relative_positions=hf.get("max_relative_positions", -1),
            position_buckets=hf.get("position_buckets", -1),
            pos_att_type=tuple(pos_att), share_att_key=hf.get("share_att_key", False),
            norm_rel_ebd="layer_norm" in norm, hidden_act=hf.get("hidden_act", "gelu"),
            pooler_hidden_act=hf.get("pooler_hidden_act", "gelu"),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-7), num_classes=num_classes,
            pad_id=hf.get("pad_token_id") or 0)
        return cls(**{**kw, **overrides})


def relative_positions(T: int, buckets: int, max_position: int) -> np.ndarray:
    """``bucket(i - j)`` for query ``i`` and key ``j`` in ``0..T-1`` (``[T, T]`` int32), in
    float32 as transformers computes it: exact below ``buckets / 2``, then
    ``ceil(log(|x| / m) / log((max_position - 1) / m) * (m - 1)) + m`` with ``m = buckets / 2``."""
    rel = np.arange(T)[:, None] - np.arange(T)[None, :]
    if buckets <= 0 or max_position <= 0:
        return rel.astype(np.int32)
    mid = buckets // 2
    abs_pos = np.where((rel < mid) & (rel > -mid), mid - 1, np.abs(rel)).astype(np.float32)
    ratio = np.log(abs_pos / np.float32(mid)) / np.log(np.float32((max_position - 1) / mid))
    log_pos = np.ceil(ratio * np.float32(mid - 1)) + np.float32(mid)
    return np.where(abs_pos <= mid, rel, log_pos * np.sign(rel)).astype(np.int32)


class _Layer(nnx.Module):
    """Disentangled self-attention, then the post-LN GELU MLP."""

    def __init__(self, cfg: DebertaV2Config, rngs: nnx.Rngs):
        D, N, H, F = cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
        pd = jnp.dtype(cfg.param_dtype)
        projections = ["q", "k", "v"]
        if cfg.relative_attention and not cfg.share_att_key:
            projections += [name for name, term in (("pos_k", "c2p"), ("pos_q", "p2c"))
                            if term in cfg.pos_att_type]
        for name in projections:
            setattr(self, name, param(rngs, (D, N, H), ("embed", "heads", "head_dim"), pd))
            setattr(self, name + "_bias", param(rngs, (N, H), ("heads", "head_dim"), pd, "zeros"))
        self.out = param(rngs, (N, H, D), ("heads", "head_dim", "embed"), pd)
        self.out_bias = param(rngs, (D,), ("embed",), pd, "zeros")
        self.attn_ln = LayerNorm(D, cfg.layer_norm_eps, pd, rngs)
        self.fc = param(rngs, (D, F), ("embed", "mlp"), pd)
        self.fc_bias = param(rngs, (F,), ("mlp",), pd, "zeros")
        self.proj = param(rngs, (F, D), ("mlp", "embed"), pd)
        self.proj_bias = param(rngs, (D,), ("embed",), pd, "zeros")
        self.mlp_ln = LayerNorm(D, cfg.layer_norm_eps, pd, rngs)
        self.cfg = cfg

    def _project(self, name: str, x_BxTxD: jax.Array) -> jax.Array:
        dt = x_BxTxD.dtype
        y = jnp.einsum("...d,dnh->...nh", x_BxTxD, getattr(self, name)[...].astype(dt))
        return y + getattr(self, name + "_bias")[...].astype(dt)

    def __call__(self, x_BxTxD: jax.Array, mask_BxTxS: jax.Array, rel_RxD: jax.Array | None,
                 rel_TxS: np.ndarray | None) -> jax.Array:
        cfg, dt = self.cfg, x_BxTxD.dtype
        q_BxTxNxH, k_BxSxNxH, v_BxSxNxH = (self._project(n, x_BxTxD) for n in ("q", "k", "v"))
        terms = [t for t in _POS_ATT_TYPES if t in cfg.pos_att_type] if cfg.relative_attention \
            else []
        scale = float(np.sqrt(np.float32(cfg.head_dim * (1 + len(terms)))))
        s_BxNxTxS = jnp.einsum("btnh,bsnh->bnts", q_BxTxNxH, k_BxSxNxH,
                               preferred_element_type=jnp.float32)
        span = cfg.relative_span
        if "c2p" in terms:
            pos_k_RxNxH = self._project("k" if cfg.share_att_key else "pos_k", rel_RxD)
            c2p_BxNxTxR = jnp.einsum("btnh,rnh->bntr", q_BxTxNxH, pos_k_RxNxH,
                                     preferred_element_type=jnp.float32)
            index_TxS = np.clip(rel_TxS + span, 0, 2 * span - 1)
            s_BxNxTxS += jnp.take_along_axis(c2p_BxNxTxR, index_TxS[None, None], axis=-1)
        if "p2c" in terms:
            pos_q_RxNxH = self._project("q" if cfg.share_att_key else "pos_q", rel_RxD)
            p2c_BxNxSxR = jnp.einsum("bsnh,rnh->bnsr", k_BxSxNxH, pos_q_RxNxH,
                                     preferred_element_type=jnp.float32)
            index_SxT = np.clip(-rel_TxS + span, 0, 2 * span - 1)  # [key j, query i]
            p2c_BxNxSxT = jnp.take_along_axis(p2c_BxNxSxR, index_SxT[None, None], axis=-1)
            s_BxNxTxS += p2c_BxNxSxT.swapaxes(-1, -2)
        s_BxNxTxS = jnp.where(mask_BxTxS[:, None], s_BxNxTxS / scale,
                              jnp.finfo(jnp.float32).min)
        p_BxNxTxS = jax.nn.softmax(s_BxNxTxS, axis=-1).astype(dt)
        a_BxTxNxH = jnp.einsum("bnts,bsnh->btnh", p_BxNxTxS, v_BxSxNxH)
        attn_BxTxD = jnp.einsum("btnh,nhd->btd", a_BxTxNxH, self.out[...].astype(dt))
        x_BxTxD = self.attn_ln(x_BxTxD + attn_BxTxD + self.out_bias[...].astype(dt))
        h_BxTxF = jnp.einsum("btd,df->btf", x_BxTxD, self.fc[...].astype(dt))
        h_BxTxF = _ACTIVATIONS[cfg.hidden_act](h_BxTxF + self.fc_bias[...].astype(dt))
        h_BxTxD = jnp.einsum("btf,fd->btd", h_BxTxF, self.proj[...].astype(dt))
        return self.mlp_ln(x_BxTxD + h_BxTxD + self.proj_bias[...].astype(dt))


class DebertaV2(nnx.Module):
    """DeBERTa-v2/v3 + sentence head: ``(tokens, mask, positions) -> EncoderOutput``, in the
    stages of :class:`~bonjax.models.encoder.Encoder` (``embed``, ``encode``, ``pool``,
    ``classify``)."""

    def __init__(self, cfg: DebertaV2Config, *, rngs: nnx.Rngs):
        D, E, C = cfg.d_model, cfg.embed_dim, cfg.num_classes
        pd = jnp.dtype(cfg.param_dtype)
        self.cfg = cfg
        self.word = param(rngs, (cfg.vocab_size, E), ("vocab", "embed"), pd)
        if cfg.position_biased_input:
            self.position = param(rngs, (cfg.max_positions, E), ("position", "embed"), pd)
        if cfg.type_vocab_size:
            self.token_type = param(rngs, (cfg.type_vocab_size, E), (None, "embed"), pd)
        if E != D:
            self.embed_proj = param(rngs, (E, D), (None, "embed"), pd)
        self.embed_ln = LayerNorm(D, cfg.layer_norm_eps, pd, rngs)
        if cfg.relative_attention:
            self.rel_embeddings = param(rngs, (2 * cfg.relative_span, D), (None, "embed"), pd)
            if cfg.norm_rel_ebd:
                self.rel_ln = LayerNorm(D, cfg.layer_norm_eps, pd, rngs)
        self.layers = nnx.List([_Layer(cfg, rngs) for _ in range(cfg.num_layers)])
        self.pooler = param(rngs, (D, D), (None, "embed"), pd)
        self.pooler_bias = param(rngs, (D,), ("embed",), pd, "zeros")
        self.classifier = param(rngs, (D, C), ("embed", "classes"), pd)
        self.classifier_bias = param(rngs, (C,), ("classes",), pd, "zeros")

    def embed(self, tokens_BxT: jax.Array, positions_BxT: jax.Array,
              mask_BxT: jax.Array) -> jax.Array:
        dt = jnp.dtype(self.cfg.dtype)
        x_BxTxE = self.word[...][tokens_BxT]
        if self.cfg.position_biased_input:
            x_BxTxE = x_BxTxE + self.position[...][positions_BxT]
        if self.cfg.type_vocab_size:
            x_BxTxE = x_BxTxE + self.token_type[...][0]
        x_BxTxD = x_BxTxE.astype(dt)
        if hasattr(self, "embed_proj"):
            x_BxTxD = jnp.einsum("bte,ed->btd", x_BxTxD, self.embed_proj[...].astype(dt))
        return self.embed_ln(x_BxTxD) * mask_BxT[..., None].astype(dt)

    def encode(self, x_BxTxD: jax.Array, mask_BxT: jax.Array, start: int = 0,
               stop: int | None = None) -> jax.Array:
        """Layers ``start..stop-1`` of the stack (all of them by default)."""
        cfg, mask_BxT = self.cfg, mask_BxT.astype(bool)
        # As transformers: a padded query attends uniformly to every key; real ones never see it.
        mask_BxTxS = mask_BxT[:, :, None] & mask_BxT[:, None, :]
        rel_RxD = rel_TxS = None
        if cfg.relative_attention:
            rel_RxD = self.rel_embeddings[...]
            if cfg.norm_rel_ebd:
                rel_RxD = self.rel_ln(rel_RxD)
            rel_RxD = rel_RxD.astype(x_BxTxD.dtype)
            rel_TxS = relative_positions(x_BxTxD.shape[1], cfg.position_buckets,
                                         cfg.bucket_max_position)
        for layer in self.layers[start:stop]:
            x_BxTxD = layer(x_BxTxD, mask_BxTxS, rel_RxD, rel_TxS)
        return x_BxTxD

    def pool(self, x_BxTxD: jax.Array, mask_BxT: jax.Array) -> jax.Array:
        dt = x_BxTxD.dtype
        h_BxD = jnp.einsum("bd,de->be", x_BxTxD[:, 0], self.pooler[...].astype(dt))
        h_BxD = _ACTIVATIONS[self.cfg.pooler_hidden_act](h_BxD + self.pooler_bias[...].astype(dt))
        return h_BxD.astype(jnp.float32)

    def classify(self, pooled_BxD: jax.Array) -> jax.Array:
        logits_BxC = jnp.einsum("bd,dc->bc", pooled_BxD,
                                self.classifier[...].astype(pooled_BxD.dtype))
        return logits_BxC + self.classifier_bias[...].astype(pooled_BxD.dtype)

    def __call__(self, tokens_BxT: jax.Array, mask_BxT: jax.Array,
                 positions_BxT: jax.Array) -> EncoderOutput:
        mask_BxT = mask_BxT.astype(bool)
        hidden_BxTxD = self.encode(self.embed(tokens_BxT, positions_BxT, mask_BxT), mask_BxT)
        pooled_BxD = self.pool(hidden_BxTxD, mask_BxT)
        return EncoderOutput(hidden_BxTxD=hidden_BxTxD, pooled_BxD=pooled_BxD,
                             logits_BxC=self.classify(pooled_BxD))


# ---------------------------------------------------------------------------------------------
# Weight import (Hugging Face safetensors, no torch)


def _tensors(cfg: DebertaV2Config, raw: dict[str, np.ndarray],
             source: str) -> dict[str, np.ndarray]:
    """The checkpoint's tensors in bonjax's names and layouts."""
    N, H, D = cfg.num_heads, cfg.head_dim, cfg.d_model
    get = tensor_getter(raw, source)

    e, enc = "deberta.embeddings.", "deberta.encoder."
    out = {"word": get(e + "word_embeddings.weight"),
           "embed_ln.scale": get(e + "LayerNorm.weight"),
           "embed_ln.bias": get(e + "LayerNorm.bias")}
    if cfg.position_biased_input:
        out["position"] = get(e + "position_embeddings.weight")
    if cfg.type_vocab_size:
        out["token_type"] = get(e + "token_type_embeddings.weight")
    if cfg.embed_dim != D:
        out["embed_proj"] = get(e + "embed_proj.weight").T
    if cfg.relative_attention:
        out["rel_embeddings"] = get(enc + "rel_embeddings.weight")
        if cfg.norm_rel_ebd:
            out["rel_ln.scale"] = get(enc + "LayerNorm.weight")
            out["rel_ln.bias"] = get(enc + "LayerNorm.bias")
    names = {"q": "query_proj", "k": "key_proj", "v": "value_proj", "pos_k": "pos_key_proj",
             "pos_q": "pos_query_proj"}
    for i in range(cfg.num_layers):
        src, b = f"{enc}layer.{i}.", f"layers.{i}."
        for ours, theirs in names.items():
            w = src + f"attention.self.{theirs}."
            if ours.startswith("pos_") and w + "weight" not in raw:
                continue  # only the projections the config uses (checked by place_state)
            out[b + ours] = get(w + "weight").T.reshape(D, N, H)
            out[b + ours + "_bias"] = get(w + "bias").reshape(N, H)
        out[b + "out"] = get(src + "attention.output.dense.weight").T.reshape(N, H, D)
        out[b + "out_bias"] = get(src + "attention.output.dense.bias")
        out[b + "attn_ln.scale"] = get(src + "attention.output.LayerNorm.weight")
        out[b + "attn_ln.bias"] = get(src + "attention.output.LayerNorm.bias")
        out[b + "fc"] = get(src + "intermediate.dense.weight").T
        out[b + "fc_bias"] = get(src + "intermediate.dense.bias")
        out[b + "proj"] = get(src + "output.dense.weight").T
        out[b + "proj_bias"] = get(src + "output.dense.bias")
        out[b + "mlp_ln.scale"] = get(src + "output.LayerNorm.weight")
        out[b + "mlp_ln.bias"] = get(src + "output.LayerNorm.bias")
    if "classifier.weight" not in raw:
        raise CheckpointError(f"{source}: no classification head: the checkpoint has no "
                              "'classifier.weight' (a DebertaV2Model or masked-LM checkpoint, "
                              "not DebertaV2ForSequenceClassification)")
    out["pooler"] = get("pooler.dense.weight").T
    out["pooler_bias"] = get("pooler.dense.bias")
    out["classifier"] = get("classifier.weight").T
    out["classifier_bias"] = get("classifier.bias")
    # v3 files may carry an absolute position table the model does not read (transformers
    # ignores it too); buffers are not parameters.
    ignored = ("deberta.embeddings.position_embeddings.weight", "deberta.embeddings.position_ids")
    out.update({k: v for k, v in raw.items() if k not in get.used and k not in ignored})
    return out


def load_hf_deberta(path: str | os.PathLike, mesh: Mesh | None = None,
                    rules: shd.ShardingRules = shd.ShardingRules(),
                    **overrides) -> tuple[EncoderClassifier, nnx.State]:
    """Model and parameters of a ``DebertaV2ForSequenceClassification`` directory
    (``config.json`` + safetensors, float32 or bfloat16). ``overrides`` replace config fields
    (e.g. ``dtype``). Raises :class:`CheckpointError` naming a missing, unused or misshapen
    tensor, or the missing classification head."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no config.json (not a Hugging Face checkpoint directory)")
    cfg = DebertaV2Config.from_hf(json.loads(config_file.read_text()), **overrides)
    tensors = _tensors(cfg, read_safetensors(path), str(path))
    model, abstract = EncoderClassifier.abstract(cfg)
    return model, place_state(abstract, tensors, str(path), mesh, rules)
