"""GPT-NeoX (Black et al. 2022) and Pythia (Biderman et al. 2023), the EleutherAI decoders.

Pre-LayerNorm (with bias) blocks whose attention and MLP read the same input and add to the
residual together (``use_parallel_residual``; the sequential form when it is off), a fused QKV
projection with biases, rotary embeddings on the first ``rotary_pct`` of each head's dimensions
only, a GELU MLP, and an output embedding ``embed_out`` separate from the input one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from bonjax.models import attention, matmul
from bonjax.models.gpt2 import LayerNorm
from bonjax.models.kv_cache import KVCache
from bonjax.models.output import ModelOutput
from bonjax.models.params import param
from bonjax.models.policy import ComputePolicy
from bonjax.models.stack import run_blocks, tied_logits

__all__ = ["GPTNeoXConfig", "GPTNeoX"]

# Hugging Face ``hidden_act`` -> whether jax.nn.gelu uses its tanh approximation.
_GELU_APPROXIMATE = {"gelu": False, "gelu_new": True, "gelu_fast": True,
                     "gelu_pytorch_tanh": True}


@dataclasses.dataclass(frozen=True)
class GPTNeoXConfig(ComputePolicy):
    """Static GPT-NeoX hyperparameters; defaults are Pythia-70M's."""

    vocab_size: int = 50304
    max_positions: int = 2048
    num_layers: int = 6
    num_heads: int = 8
    d_model: int = 512
    mlp_dim: int = 2048
    rotary_pct: float = 0.25  # fraction of each head's dimensions that are rotated
    rope_base: float = 10_000.0
    use_parallel_residual: bool = True  # x + attn(ln1(x)) + mlp(ln2(x)); else sequential
    gelu_approximate: bool = False  # Pythia's "gelu" is the exact (erf) GELU
    layer_norm_eps: float = 1e-5
    bos_id: int = 0
    eos_id: int = 0
    pad_id: int = 0
    # The ``model_type`` of its Hugging Face ``config.json``.
    hf_model_type: ClassVar[str] = "gpt_neox"

    @classmethod
    def from_hf(cls, hf: Mapping, **overrides) -> GPTNeoXConfig:
        """The config of a Hugging Face GPT-NeoX ``config.json`` dict: transformers 5 writes
        ``rope_parameters`` (``partial_rotary_factor``, ``rope_theta``), older files
        ``rotary_pct`` and ``rotary_emb_base``. ``overrides`` replace any field read from it."""
        rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise ValueError(f"GPT-NeoX rope_type {rope_type!r} is not supported (default only)")
        act = hf.get("hidden_act", "gelu")
        if act not in _GELU_APPROXIMATE:
            raise ValueError(f"GPT-NeoX hidden_act {act!r} is not supported "
                             f"({', '.join(sorted(_GELU_APPROXIMATE))})")
        if hf.get("tie_word_embeddings", False):
            raise ValueError("GPT-NeoX with tie_word_embeddings is not supported (embed_out is "
                             "its own matrix)")
        if not hf.get("attention_bias", True):
            raise ValueError("GPT-NeoX without attention biases is not supported")
        eos = hf.get("eos_token_id", 0)
        eos = eos[0] if isinstance(eos, list | tuple) else eos
        pad = hf.get("pad_token_id")
        kw = dict(
            vocab_size=hf["vocab_size"], max_positions=hf.get("max_position_embeddings", 2048),
            num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
            d_model=hf["hidden_size"], mlp_dim=hf["intermediate_size"],
            rotary_pct=rope.get("partial_rotary_factor", hf.get("rotary_pct", 0.25)),
            rope_base=rope.get("rope_theta", hf.get("rotary_emb_base", 10_000.0)),
            use_parallel_residual=hf.get("use_parallel_residual", True),
            gelu_approximate=_GELU_APPROXIMATE[act],
            layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
            bos_id=hf.get("bos_token_id", 0), eos_id=eos,
            pad_id=eos if pad is None else pad)
        return cls(**{**kw, **overrides})

    def to_hf(self) -> dict:
        """The Hugging Face ``config.json`` dict of this config (:meth:`from_hf` reads it back)."""
        return dict(
            model_type=self.hf_model_type, architectures=["GPTNeoXForCausalLM"],
            vocab_size=self.vocab_size, max_position_embeddings=self.max_positions,
            num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            hidden_size=self.d_model, intermediate_size=self.mlp_dim,
            hidden_act="gelu_new" if self.gelu_approximate else "gelu",
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_base,
                             "partial_rotary_factor": self.rotary_pct},
            use_parallel_residual=self.use_parallel_residual,
            layer_norm_eps=self.layer_norm_eps, attention_bias=True,
            bos_token_id=self.bos_id, eos_token_id=self.eos_id, pad_token_id=self.pad_id,
            tie_word_embeddings=False)

    @property
    def num_kv_heads(self) -> int:
        return self.num_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def rotary_dim(self) -> int:
        """The leading dimensions of each head that are rotated (as transformers truncates)."""
        return int(self.head_dim * self.rotary_pct)

    def __post_init__(self):
        super().__post_init__()
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by num_heads "
                             f"{self.num_heads}")
        if self.rotary_dim % 2:
            raise ValueError(f"rotary_pct {self.rotary_pct} of head dim {self.head_dim} gives "
                             f"an odd number of rotary dimensions ({self.rotary_dim})")

    def make(self, rngs: nnx.Rngs) -> GPTNeoX:
        return GPTNeoX(self, rngs=rngs)

    @classmethod
    def pythia_70m(cls, **overrides) -> GPTNeoXConfig:
        return cls(**overrides)

    @classmethod
    def pythia_160m(cls, **overrides) -> GPTNeoXConfig:
        kw = dict(num_layers=12, num_heads=12, d_model=768, mlp_dim=3072)
        return cls(**{**kw, **overrides})

    @classmethod
    def pythia_2_8b(cls, **overrides) -> GPTNeoXConfig:
        """Pythia-2.8B's shapes (``EleutherAI/pythia-2.8b``'s config.json: 32 layers of width
        2560, 32 heads, MLP 10240), e.g. for compiling its programs without the weights."""
        kw = dict(num_layers=32, num_heads=32, d_model=2560, mlp_dim=10240)
        return cls(**{**kw, **overrides})

    @classmethod
    def tiny(cls, **overrides) -> GPTNeoXConfig:
        """A small config for tests (random weights): head dim 8, 4 of it rotated."""
        kw = dict(vocab_size=97, max_positions=64, num_layers=2, num_heads=4, d_model=32,
                  mlp_dim=64, rotary_pct=0.5, bos_id=0, eos_id=1, pad_id=0)
        return cls(**{**kw, **overrides})


def _partial_rope(x_BxTxNxH, positions_BxT, rotary_dim: int, base: float):
    """Rotary embedding of the first ``rotary_dim`` dimensions; the rest pass through."""
    rotated = attention.apply_rope(x_BxTxNxH[..., :rotary_dim], positions_BxT, base)
    return jnp.concatenate([rotated, x_BxTxNxH[..., rotary_dim:]], axis=-1)


class _Block(nnx.Module):
    def __init__(self, cfg: GPTNeoXConfig, rngs: nnx.Rngs):
        D, N, H, F = cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
        pd = jnp.dtype(cfg.param_dtype)
        self.attn_norm = LayerNorm(D, cfg.layer_norm_eps, pd)
        # q, k and v as GPT-2 lays them out; the checkpoint's per-head [q_n, k_n, v_n] rows
        # are reordered on import (bonjax.models.weights).
        self.qkv = param(rngs, (D, 3, N, H), ("embed", None, "q_heads", "head_dim"), pd)
        self.qkv_bias = param(rngs, (3, N, H), (None, "q_heads", "head_dim"), pd, "zeros")
        self.out = param(rngs, (N, H, D), ("q_heads", "head_dim", "embed"), pd)
        self.out_bias = param(rngs, (D,), ("embed",), pd, "zeros")
        self.mlp_norm = LayerNorm(D, cfg.layer_norm_eps, pd)
        self.fc = param(rngs, (D, F), ("embed", "mlp"), pd)
        self.fc_bias = param(rngs, (F,), ("mlp",), pd, "zeros")
        self.proj = param(rngs, (F, D), ("mlp", "embed"), pd)
        self.proj_bias = param(rngs, (D,), ("embed",), pd, "zeros")
        self.parallel = cfg.use_parallel_residual
        self.gelu_approximate = cfg.gelu_approximate
        self.rotary_dim, self.rope_base = cfg.rotary_dim, cfg.rope_base
        self.scale = H ** -0.5
        self.dtype = jnp.dtype(cfg.dtype)

    def _mlp(self, x_BxTxD):
        dt = self.dtype
        h = self.mlp_norm(x_BxTxD)
        h = (matmul.einsum("btd,df->btf", h, self.fc.value.astype(dt))
             + self.fc_bias.value.astype(dt))
        h = jax.nn.gelu(h, approximate=self.gelu_approximate)
        h = matmul.einsum("btf,fd->btd", h, self.proj.value.astype(dt))
        return h + self.proj_bias.value.astype(dt)

    def __call__(self, x_BxTxD, positions_BxT, masks, layer_k, layer_v, write_index, prefix_kv):
        dt = self.dtype
        h = self.attn_norm(x_BxTxD)
        qkv_BxTx3xNxH = attention.project_in(h, self.qkv.value.astype(dt))
        qkv_BxTx3xNxH = qkv_BxTx3xNxH + self.qkv_bias.value.astype(dt)
        q, k, v = (qkv_BxTx3xNxH[:, :, i] for i in range(3))
        q = _partial_rope(q, positions_BxT, self.rotary_dim, self.rope_base)
        k = _partial_rope(k, positions_BxT, self.rotary_dim, self.rope_base)
        if layer_k is not None:
            k = attention.write_cache(layer_k, k, write_index)
            v = attention.write_cache(layer_v, v, write_index)
        pk, pv = prefix_kv
        a_BxTxNxH = attention.attend(
            q, k, v, masks.own[None], scale=self.scale, prefix_k=pk, prefix_v=pv,
            prefix_mask_BxTxP=None if masks.prefix is None else masks.prefix[None])
        attn_BxTxD = (attention.project_out(a_BxTxNxH, self.out.value.astype(dt))
                      + self.out_bias.value.astype(dt))
        if self.parallel:
            x_BxTxD = x_BxTxD + attn_BxTxD + self._mlp(x_BxTxD)
        else:
            x_BxTxD = x_BxTxD + attn_BxTxD
            x_BxTxD = x_BxTxD + self._mlp(x_BxTxD)
        return x_BxTxD, k, v


class GPTNeoX(nnx.Module):
    """GPT-NeoX language model: ``(tokens, positions, mask, cache, prefix) -> ModelOutput``."""

    def __init__(self, cfg: GPTNeoXConfig, *, rngs: nnx.Rngs):
        pd = jnp.dtype(cfg.param_dtype)
        self.cfg = cfg
        self.embed_in = param(rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), pd)
        self.blocks = nnx.List([_Block(cfg, rngs) for _ in range(cfg.num_layers)])
        self.final_norm = LayerNorm(cfg.d_model, cfg.layer_norm_eps, pd)
        self.embed_out = param(rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), pd)

    def __call__(self, tokens_BxT, positions_BxT, input_mask_BxT, cache: KVCache | None = None,
                 prefix: KVCache | None = None, *, last_only: bool = False) -> ModelOutput:
        """``last_only`` computes the logits (and keeps the hidden states) of the last position
        only, ``[B, 1, V]``, as a prefill needs."""
        dt = jnp.dtype(self.cfg.dtype)
        masks, key_valid_BxS, write_index = attention.build_masks(input_mask_BxT, cache, prefix,
                                                                  {None})
        x_BxTxD = self.embed_in.value[tokens_BxT].astype(dt)
        x_BxTxD, cache = run_blocks(self.blocks, self.cfg.remat, x_BxTxD, positions_BxT, masks,
                                    cache, prefix, write_index, key_valid_BxS)
        logits_BxTxV, x_BxTxD = tied_logits(self.final_norm(x_BxTxD), self.embed_out.value, dt,
                                            last_only=last_only)
        return ModelOutput(logits_BxTxV, cache, x_BxTxD)
