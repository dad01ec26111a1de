"""Gemma 3 (Gemma Team 2025), text decoder.

Grouped-query attention with RMS-normalised queries and keys, pre- and post-norms around both
attention and MLP, a GELU (tanh) gated MLP, a pattern of local sliding-window and global layers
with their own RoPE bases, and a token embedding scaled by sqrt(d_model) and tied to the output.
RMSNorm computes ``x * rsqrt(mean(x^2) + eps) * (1 + w)`` in float32. Gemma 3 has no attention
logit soft-cap (QK-norm replaced it); the final-logit soft-cap is kept for configs that set it.

The norm, the block and the model are written once for Gemma 2 and 3 (``bonjax.models.gemma2``
builds them without q/k norms and with the attention-logit soft-cap).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from bonjax.models import attention, matmul
from bonjax.models.kv_cache import KVCache
from bonjax.models.output import ModelOutput
from bonjax.models.params import param
from bonjax.models.policy import ComputePolicy
from bonjax.models.stack import run_blocks, tied_logits

__all__ = ["Gemma3Config", "Gemma3", "GemmaDecoder", "GemmaBlock", "RMSNorm",
           "hf_layer_types", "hf_number", "sliding_window_pattern"]


@dataclasses.dataclass(frozen=True)
class Gemma3Config(ComputePolicy):
    """Static Gemma 3 hyperparameters; defaults are Gemma-3-270M's."""

    vocab_size: int = 262144
    max_positions: int = 32768
    num_layers: int = 18
    num_heads: int = 4
    num_kv_heads: int = 1
    head_dim: int = 256
    d_model: int = 640
    mlp_dim: int = 2048
    sliding_window: int = 512
    sliding_window_pattern: int = 6  # every 6th layer is global, the others local
    rope_local_base: float = 10_000.0
    rope_global_base: float = 1_000_000.0
    rope_global_scale: float = 1.0  # linear scaling of global-layer positions (8 for 4B+)
    query_pre_attn_scalar: float = 256.0
    rms_norm_eps: float = 1e-6
    final_logit_softcap: float | None = None
    bos_id: int = 2
    eos_id: int = 1
    pad_id: int = 0
    # The ``model_type`` of its Hugging Face ``config.json``.
    hf_model_type: ClassVar[str] = "gemma3_text"

    @classmethod
    def from_hf(cls, hf: Mapping, **overrides) -> Gemma3Config:
        """The config of a Hugging Face Gemma 3 text ``config.json`` dict; ``overrides`` replace
        any field read from it."""
        pattern = sliding_window_pattern(hf.get("layer_types"),
                                         hf.get("sliding_window_pattern", 6), "Gemma 3")
        rope = hf.get("rope_parameters") or {}
        full = rope.get("full_attention", {}) if isinstance(rope, dict) else {}
        local = rope.get("sliding_attention", {}) if isinstance(rope, dict) else {}
        scaling = hf.get("rope_scaling") or full
        scale = float(scaling.get("factor", 1.0)) if scaling.get("rope_type") == "linear" else 1.0
        eos = hf.get("eos_token_id", 1)
        kw = dict(
            vocab_size=hf["vocab_size"], max_positions=hf.get("max_position_embeddings", 32768),
            num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
            num_kv_heads=hf["num_key_value_heads"], head_dim=hf["head_dim"],
            d_model=hf["hidden_size"], mlp_dim=hf["intermediate_size"],
            sliding_window=hf["sliding_window"], sliding_window_pattern=pattern,
            rope_local_base=local.get("rope_theta", hf.get("rope_local_base_freq", 10_000.0)),
            rope_global_base=full.get("rope_theta", hf.get("rope_theta", 1_000_000.0)),
            rope_global_scale=scale,
            query_pre_attn_scalar=hf.get("query_pre_attn_scalar", hf["head_dim"]),
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            final_logit_softcap=hf.get("final_logit_softcapping"),
            bos_id=hf.get("bos_token_id", 2), eos_id=eos[0] if isinstance(eos, list | tuple)
            else eos, pad_id=hf.get("pad_token_id", 0))
        return cls(**{**kw, **overrides})

    def to_hf(self) -> dict:
        """The Hugging Face ``config.json`` dict of this config (:meth:`from_hf` reads it back)."""
        full = {"rope_type": "default", "rope_theta": self.rope_global_base}
        if self.rope_global_scale != 1.0:
            full.update(rope_type="linear", factor=self.rope_global_scale)
        return dict(
            model_type=self.hf_model_type, architectures=["Gemma3ForCausalLM"],
            vocab_size=self.vocab_size, max_position_embeddings=self.max_positions,
            num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads, head_dim=self.head_dim,
            hidden_size=self.d_model, intermediate_size=self.mlp_dim,
            hidden_activation="gelu_pytorch_tanh", sliding_window=self.sliding_window,
            layer_types=hf_layer_types(self),
            rope_parameters={"sliding_attention": {"rope_type": "default",
                                                   "rope_theta": self.rope_local_base},
                             "full_attention": full},
            query_pre_attn_scalar=hf_number(self.query_pre_attn_scalar),
            rms_norm_eps=self.rms_norm_eps,
            attn_logit_softcapping=None, final_logit_softcapping=self.final_logit_softcap,
            attention_bias=False, use_bidirectional_attention=False,
            bos_token_id=self.bos_id, eos_token_id=self.eos_id, pad_token_id=self.pad_id,
            tie_word_embeddings=True)

    def __post_init__(self):
        super().__post_init__()
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads "
                             f"{self.num_kv_heads}")

    def is_global(self, layer: int) -> bool:
        return (layer + 1) % self.sliding_window_pattern == 0

    def window(self, layer: int) -> int | None:
        return None if self.is_global(layer) else self.sliding_window

    def rope(self, layer: int) -> tuple[float, float]:
        """The RoPE base and linear position scale of ``layer``."""
        if self.is_global(layer):
            return self.rope_global_base, self.rope_global_scale
        return self.rope_local_base, 1.0

    def make(self, rngs: nnx.Rngs) -> Gemma3:
        return Gemma3(self, rngs=rngs)

    @classmethod
    def gemma3_270m(cls, **overrides) -> Gemma3Config:
        return cls(**overrides)

    @classmethod
    def gemma3_1b(cls, **overrides) -> Gemma3Config:
        kw = dict(num_layers=26, num_heads=4, num_kv_heads=1, head_dim=256, d_model=1152,
                  mlp_dim=6912, max_positions=32768)
        return cls(**{**kw, **overrides})

    @classmethod
    def gemma3_4b(cls, **overrides) -> Gemma3Config:
        """Gemma-3-4B's text decoder (google/gemma-3-4b-pt config.json)."""
        kw = dict(vocab_size=262208, num_layers=34, num_heads=8, num_kv_heads=4, head_dim=256,
                  d_model=2560, mlp_dim=10240, sliding_window=1024, max_positions=131072,
                  rope_global_scale=8.0)
        return cls(**{**kw, **overrides})

    @classmethod
    def tiny(cls, **overrides) -> Gemma3Config:
        """A small config for tests (random weights): 2 local + 1 global layer, window 4."""
        kw = dict(vocab_size=101, max_positions=128, num_layers=3, num_heads=4, num_kv_heads=2,
                  head_dim=8, d_model=32, mlp_dim=64, sliding_window=4,
                  sliding_window_pattern=3, query_pre_attn_scalar=8.0)
        return cls(**{**kw, **overrides})


def hf_layer_types(config) -> list[str]:
    """A Gemma config's Hugging Face ``layer_types`` (what :func:`sliding_window_pattern` reads)."""
    return ["full_attention" if config.is_global(i) else "sliding_attention"
            for i in range(config.num_layers)]


def hf_number(x: float) -> int | float:
    """``x`` as transformers' typed config fields take it: an int when whole (its
    ``query_pre_attn_scalar`` is declared ``int`` and a float is refused)."""
    return int(x) if float(x).is_integer() else float(x)


def sliding_window_pattern(layer_types, default: int, family: str) -> int:
    """``p`` such that every ``p``-th layer is global and the others local, read from a Hugging
    Face ``layer_types`` list (``default`` without one); raises on any other arrangement."""
    if not layer_types:
        return default
    globals_ = [i for i, t in enumerate(layer_types) if t == "full_attention"]
    pattern = globals_[0] + 1 if globals_ else len(layer_types) + 1
    expected = [i for i in range(len(layer_types)) if (i + 1) % pattern == 0]
    if globals_ != expected:
        raise ValueError(f"unsupported {family} layer_types pattern: global layers "
                         f"{globals_}, expected every {pattern}th")
    return pattern


class RMSNorm(nnx.Module):
    """Gemma's RMSNorm, ``x * rsqrt(mean(x^2) + eps) * (1 + w)`` in float32."""

    def __init__(self, dim: int, eps: float, dtype, axis_name: str):
        self.scale = nnx.Param(jnp.zeros((dim,), dtype), axes=(axis_name,))
        self.eps = eps

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (y * (1.0 + self.scale.value.astype(jnp.float32))).astype(x.dtype)


class GemmaBlock(nnx.Module):
    """One Gemma layer: pre- and post-norms around grouped-query attention and a GELU (tanh)
    gated MLP; RMS-normalised queries and keys with ``qk_norm`` (Gemma 3), attention logits
    soft-capped as ``tanh(z / cap) * cap`` with ``attn_softcap`` (Gemma 2).

    ``cfg`` is a Gemma 2 or 3 config: the block reads its sizes, ``window(layer)``,
    ``rope(layer)``, ``query_pre_attn_scalar`` and the dtype policy.
    """

    def __init__(self, cfg, layer: int, rngs: nnx.Rngs, *, qk_norm: bool,
                 attn_softcap: float | None):
        D, N, K, H, F = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
        pd = jnp.dtype(cfg.param_dtype)
        eps = cfg.rms_norm_eps
        self.pre_attn_norm = RMSNorm(D, eps, pd, "embed")
        self.q = param(rngs, (D, N, H), ("embed", "q_heads", "head_dim"), pd)
        self.k = param(rngs, (D, K, H), ("embed", "kv_heads", "head_dim"), pd)
        self.v = param(rngs, (D, K, H), ("embed", "kv_heads", "head_dim"), pd)
        self.o = param(rngs, (N, H, D), ("q_heads", "head_dim", "embed"), pd)
        self.q_norm = RMSNorm(H, eps, pd, "head_dim") if qk_norm else None
        self.k_norm = RMSNorm(H, eps, pd, "head_dim") if qk_norm else None
        self.post_attn_norm = RMSNorm(D, eps, pd, "embed")
        self.pre_mlp_norm = RMSNorm(D, eps, pd, "embed")
        self.gate = param(rngs, (D, F), ("embed", "mlp"), pd)
        self.up = param(rngs, (D, F), ("embed", "mlp"), pd)
        self.down = param(rngs, (F, D), ("mlp", "embed"), pd)
        self.post_mlp_norm = RMSNorm(D, eps, pd, "embed")
        self.window = cfg.window(layer)
        self.rope_base, self.rope_scale = cfg.rope(layer)
        self.attn_softcap = attn_softcap
        self.scale = cfg.query_pre_attn_scalar ** -0.5
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, x_BxTxD, positions_BxT, masks, layer_k, layer_v, write_index, prefix_kv):
        dt = self.dtype
        h = self.pre_attn_norm(x_BxTxD)
        q_BxTxNxH = attention.project_in(h, self.q.value.astype(dt))
        k_BxTxKxH = attention.project_in(h, self.k.value.astype(dt))
        if self.q_norm is not None:
            q_BxTxNxH, k_BxTxKxH = self.q_norm(q_BxTxNxH), self.k_norm(k_BxTxKxH)
        v_BxTxKxH = attention.project_in(h, self.v.value.astype(dt))
        q_BxTxNxH = attention.apply_rope(q_BxTxNxH, positions_BxT, self.rope_base, self.rope_scale)
        k_BxTxKxH = attention.apply_rope(k_BxTxKxH, positions_BxT, self.rope_base, self.rope_scale)
        if layer_k is not None:
            k_BxTxKxH = attention.write_cache(layer_k, k_BxTxKxH, write_index)
            v_BxTxKxH = attention.write_cache(layer_v, v_BxTxKxH, write_index)
        pk, pv = prefix_kv
        a_BxTxNxH = attention.attend(
            q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, masks.own[self.window], scale=self.scale,
            softcap=self.attn_softcap, prefix_k=pk, prefix_v=pv,
            prefix_mask_BxTxP=None if masks.prefix is None else masks.prefix[self.window])
        h = attention.project_out(a_BxTxNxH, self.o.value.astype(dt))
        x_BxTxD = x_BxTxD + self.post_attn_norm(h)
        h = self.pre_mlp_norm(x_BxTxD)
        gate_BxTxF = jax.nn.gelu(matmul.einsum("btd,df->btf", h, self.gate.value.astype(dt)),
                                 approximate=True)
        up_BxTxF = matmul.einsum("btd,df->btf", h, self.up.value.astype(dt))
        h = matmul.einsum("btf,fd->btd", gate_BxTxF * up_BxTxF, self.down.value.astype(dt))
        x_BxTxD = x_BxTxD + self.post_mlp_norm(h)
        return x_BxTxD, k_BxTxKxH, v_BxTxKxH


class GemmaDecoder(nnx.Module):
    """A Gemma language model, ``(tokens, positions, mask, cache, prefix) -> ModelOutput``: the
    embedding scaled by sqrt(d_model), :class:`GemmaBlock` layers, the final norm and the tied
    output embedding with the config's final-logit soft-cap."""

    def __init__(self, cfg, *, rngs: nnx.Rngs, qk_norm: bool, attn_softcap: float | None):
        pd = jnp.dtype(cfg.param_dtype)
        self.cfg = cfg
        self.embed = param(rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), pd)
        self.blocks = nnx.List([GemmaBlock(cfg, i, rngs, qk_norm=qk_norm,
                                           attn_softcap=attn_softcap)
                                for i in range(cfg.num_layers)])
        self.final_norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps, pd, "embed")

    def __call__(self, tokens_BxT, positions_BxT, input_mask_BxT, cache: KVCache | None = None,
                 prefix: KVCache | None = None, *, last_only: bool = False) -> ModelOutput:
        """``last_only`` computes the logits (and keeps the hidden states) of the last position
        only, ``[B, 1, V]``, as a prefill needs: the unembedding of the other positions is never
        computed."""
        cfg = self.cfg
        dt = jnp.dtype(cfg.dtype)
        windows = {cfg.window(i) for i in range(cfg.num_layers)}
        masks, key_valid_BxS, write_index = attention.build_masks(input_mask_BxT, cache, prefix,
                                                                  windows)
        embed_VxD = self.embed.value
        normalizer = jnp.asarray(cfg.d_model ** 0.5, dt)
        x_BxTxD = embed_VxD[tokens_BxT].astype(dt) * normalizer
        x_BxTxD, cache = run_blocks(self.blocks, cfg.remat, x_BxTxD, positions_BxT, masks, cache,
                                    prefix, write_index, key_valid_BxS)
        logits_BxTxV, x_BxTxD = tied_logits(self.final_norm(x_BxTxD), embed_VxD, dt,
                                            last_only=last_only,
                                            softcap=cfg.final_logit_softcap)
        return ModelOutput(logits_BxTxV, cache, x_BxTxD)


class Gemma3(GemmaDecoder):
    """Gemma 3 language model: q/k RMSNorm, no attention-logit soft-cap."""

    def __init__(self, cfg: Gemma3Config, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs, qk_norm=True, attn_softcap=None)
