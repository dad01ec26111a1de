"""Gemma 2 (Gemma Team 2024), text decoder.

Gemma 3's layer (``bonjax.models.gemma3``: pre- and post-RMSNorms, grouped-query attention, a GELU
(tanh) gated MLP, an embedding scaled by sqrt(d_model) and tied to the output) without q/k norms
and with soft-capped logits, ``tanh(z / cap) * cap``: attention logits (``attn_logit_softcap``,
50) and final logits (``final_logit_softcap``, 30). Layers alternate local (sliding window) and
global attention, local first, with one RoPE base; queries are scaled by
``query_pre_attn_scalar ** -0.5``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

from flax import nnx

from bonjax.models.gemma3 import (
    GemmaDecoder,
    hf_layer_types,
    hf_number,
    sliding_window_pattern,
)
from bonjax.models.policy import ComputePolicy

__all__ = ["Gemma2Config", "Gemma2"]


@dataclasses.dataclass(frozen=True)
class Gemma2Config(ComputePolicy):
    """Static Gemma 2 hyperparameters; defaults are Gemma-2-2B's."""

    vocab_size: int = 256000
    max_positions: int = 8192
    num_layers: int = 26
    num_heads: int = 8
    num_kv_heads: int = 4
    head_dim: int = 256
    d_model: int = 2304
    mlp_dim: int = 9216
    sliding_window: int = 4096
    sliding_window_pattern: int = 2  # every 2nd layer is global, the others local
    rope_base: float = 10_000.0
    query_pre_attn_scalar: float = 256.0
    attn_logit_softcap: float | None = 50.0
    final_logit_softcap: float | None = 30.0
    rms_norm_eps: float = 1e-6
    bos_id: int = 2
    eos_id: int = 1
    pad_id: int = 0
    # The ``model_type`` of its Hugging Face ``config.json``.
    hf_model_type: ClassVar[str] = "gemma2"

    @classmethod
    def from_hf(cls, hf: Mapping, **overrides) -> Gemma2Config:
        """The config of a Hugging Face Gemma 2 ``config.json`` dict; ``overrides`` replace any
        field read from it."""
        rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise ValueError(f"Gemma 2 rope_type {rope_type!r} is not supported (default only)")
        act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
        if act not in ("gelu_pytorch_tanh", "gelu_new", "gelu_fast"):
            raise ValueError(f"Gemma 2 hidden_activation {act!r} is not supported (tanh GELU)")
        if hf.get("attention_bias", False):
            raise ValueError("Gemma 2 with attention biases is not supported")
        if hf.get("use_bidirectional_attention"):
            raise ValueError("Gemma 2 with bidirectional attention is not a causal decoder")
        eos = hf.get("eos_token_id", 1)
        kw = dict(
            vocab_size=hf["vocab_size"], max_positions=hf.get("max_position_embeddings", 8192),
            num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
            num_kv_heads=hf["num_key_value_heads"], head_dim=hf["head_dim"],
            d_model=hf["hidden_size"], mlp_dim=hf["intermediate_size"],
            sliding_window=hf["sliding_window"],
            sliding_window_pattern=sliding_window_pattern(hf.get("layer_types"), 2, "Gemma 2"),
            rope_base=rope.get("rope_theta", hf.get("rope_theta", 10_000.0)),
            query_pre_attn_scalar=hf.get("query_pre_attn_scalar", hf["head_dim"]),
            attn_logit_softcap=hf.get("attn_logit_softcapping"),
            final_logit_softcap=hf.get("final_logit_softcapping"),
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            bos_id=hf.get("bos_token_id", 2), eos_id=eos[0] if isinstance(eos, list | tuple)
            else eos, pad_id=hf.get("pad_token_id", 0))
        return cls(**{**kw, **overrides})

    def to_hf(self) -> dict:
        """The Hugging Face ``config.json`` dict of this config (:meth:`from_hf` reads it back)."""
        return dict(
            model_type=self.hf_model_type, architectures=["Gemma2ForCausalLM"],
            vocab_size=self.vocab_size, max_position_embeddings=self.max_positions,
            num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads, head_dim=self.head_dim,
            hidden_size=self.d_model, intermediate_size=self.mlp_dim,
            hidden_activation="gelu_pytorch_tanh", sliding_window=self.sliding_window,
            layer_types=hf_layer_types(self),
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_base},
            query_pre_attn_scalar=hf_number(self.query_pre_attn_scalar),
            attn_logit_softcapping=self.attn_logit_softcap,
            final_logit_softcapping=self.final_logit_softcap, rms_norm_eps=self.rms_norm_eps,
            attention_bias=False, bos_token_id=self.bos_id, eos_token_id=self.eos_id,
            pad_token_id=self.pad_id, tie_word_embeddings=True)

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
        """The RoPE base and linear position scale of ``layer`` (one base for every layer)."""
        del layer
        return self.rope_base, 1.0

    def make(self, rngs: nnx.Rngs) -> Gemma2:
        return Gemma2(self, rngs=rngs)

    @classmethod
    def gemma2_2b(cls, **overrides) -> Gemma2Config:
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> Gemma2Config:
        """A small config for tests (random weights): local, global, local layers, window 4, and
        soft-caps small enough to bind at random-weight logit scales."""
        kw = dict(vocab_size=101, max_positions=128, num_layers=3, num_heads=4, num_kv_heads=2,
                  head_dim=8, d_model=32, mlp_dim=64, sliding_window=4,
                  query_pre_attn_scalar=8.0, attn_logit_softcap=2.0, final_logit_softcap=3.0)
        return cls(**{**kw, **overrides})


class Gemma2(GemmaDecoder):
    """Gemma 2 language model: attention-logit soft-cap, no q/k norms."""

    def __init__(self, cfg: Gemma2Config, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs, qk_norm=False, attn_softcap=cfg.attn_logit_softcap)
