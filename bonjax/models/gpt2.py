"""GPT-2 (Radford et al. 2019), the architecture of the vBoN paper's policy (lvwerra/gpt2-imdb).

Pre-LayerNorm transformer with learned absolute positions, fused QKV projection, GELU (tanh)
MLP and a language-model head tied to the token embedding.
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

__all__ = ["GPT2Config", "GPT2"]


@dataclasses.dataclass(frozen=True)
class GPT2Config(ComputePolicy):
    """Static GPT-2 hyperparameters (names follow the paper's and Hugging Face's config)."""

    vocab_size: int = 50257
    max_positions: int = 1024
    num_layers: int = 12
    num_heads: int = 12
    d_model: int = 768
    mlp_dim: int = 3072
    layer_norm_eps: float = 1e-5
    bos_id: int = 50256
    eos_id: int = 50256
    pad_id: int = 50256
    # The module attribute of the final norm (``top_blocks_filter`` trains it with the top blocks).
    final_norm_name: ClassVar[str] = "ln_f"
    # The ``model_type`` of its Hugging Face ``config.json``.
    hf_model_type: ClassVar[str] = "gpt2"

    @classmethod
    def from_hf(cls, hf: Mapping, **overrides) -> GPT2Config:
        """The config of a Hugging Face GPT-2 ``config.json`` dict; ``overrides`` replace any
        field read from it."""
        eos, pad = hf.get("eos_token_id", 50256), hf.get("pad_token_id")
        kw = dict(
            vocab_size=hf["vocab_size"], max_positions=hf["n_positions"],
            num_layers=hf["n_layer"], num_heads=hf["n_head"], d_model=hf["n_embd"],
            mlp_dim=hf.get("n_inner") or 4 * hf["n_embd"],
            layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            bos_id=hf.get("bos_token_id", 50256), eos_id=eos,
            pad_id=eos if pad is None else pad)
        return cls(**{**kw, **overrides})

    def to_hf(self) -> dict:
        """The Hugging Face ``config.json`` dict of this config (:meth:`from_hf` reads it back)."""
        return dict(
            model_type=self.hf_model_type, architectures=["GPT2LMHeadModel"],
            vocab_size=self.vocab_size, n_positions=self.max_positions, n_layer=self.num_layers,
            n_head=self.num_heads, n_embd=self.d_model, n_inner=self.mlp_dim,
            activation_function="gelu_new", layer_norm_epsilon=self.layer_norm_eps,
            bos_token_id=self.bos_id, eos_token_id=self.eos_id, pad_token_id=self.pad_id,
            tie_word_embeddings=True)

    @property
    def num_kv_heads(self) -> int:
        return self.num_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def __post_init__(self):
        super().__post_init__()
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by num_heads "
                             f"{self.num_heads}")

    def make(self, rngs: nnx.Rngs) -> GPT2:
        return GPT2(self, rngs=rngs)

    @classmethod
    def gpt2_124m(cls, **overrides) -> GPT2Config:
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> GPT2Config:
        """A small config for tests (random weights)."""
        kw = dict(vocab_size=97, max_positions=64, num_layers=2, num_heads=4, d_model=32,
                  mlp_dim=64, bos_id=0, eos_id=1, pad_id=0)
        return cls(**{**kw, **overrides})


class LayerNorm(nnx.Module):
    """LayerNorm with a scale and a bias over the last (``embed``) axis, computed in float32."""

    def __init__(self, dim: int, eps: float, dtype):
        self.scale = nnx.Param(jnp.ones((dim,), dtype), axes=("embed",))
        self.bias = nnx.Param(jnp.zeros((dim,), dtype), axes=("embed",))
        self.eps = eps

    def __call__(self, x_BxTxD):
        x = x_BxTxD.astype(jnp.float32)
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + self.eps)
        y = y * self.scale.value.astype(jnp.float32) + self.bias.value.astype(jnp.float32)
        return y.astype(x_BxTxD.dtype)


class _Block(nnx.Module):
    def __init__(self, cfg: GPT2Config, rngs: nnx.Rngs):
        D, N, H, F = cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
        pd = jnp.dtype(cfg.param_dtype)
        proj_std = 0.02 / (2 * cfg.num_layers) ** 0.5
        self.ln_1 = LayerNorm(D, cfg.layer_norm_eps, pd)
        self.qkv = param(rngs, (D, 3, N, H), ("embed", None, "q_heads", "head_dim"), pd)
        self.qkv_bias = param(rngs, (3, N, H), (None, "q_heads", "head_dim"), pd, "zeros")
        self.out = param(rngs, (N, H, D), ("q_heads", "head_dim", "embed"), pd, std=proj_std)
        self.out_bias = param(rngs, (D,), ("embed",), pd, "zeros")
        self.ln_2 = LayerNorm(D, cfg.layer_norm_eps, pd)
        self.fc = param(rngs, (D, F), ("embed", "mlp"), pd)
        self.fc_bias = param(rngs, (F,), ("mlp",), pd, "zeros")
        self.proj = param(rngs, (F, D), ("mlp", "embed"), pd, std=proj_std)
        self.proj_bias = param(rngs, (D,), ("embed",), pd, "zeros")
        self.scale = H ** -0.5
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, x_BxTxD, positions_BxT, masks, layer_k, layer_v, write_index, prefix_kv):
        del positions_BxT  # learned absolute positions enter with the embedding
        dt = self.dtype
        h = self.ln_1(x_BxTxD)
        qkv_BxTx3xNxH = attention.project_in(h, self.qkv.value.astype(dt))
        qkv_BxTx3xNxH = qkv_BxTx3xNxH + self.qkv_bias.value.astype(dt)
        q, k, v = (qkv_BxTx3xNxH[:, :, i] for i in range(3))
        if layer_k is not None:
            k = attention.write_cache(layer_k, k, write_index)
            v = attention.write_cache(layer_v, v, write_index)
        pk, pv = prefix_kv
        a_BxTxNxH = attention.attend(
            q, k, v, masks.own[None], scale=self.scale, prefix_k=pk, prefix_v=pv,
            prefix_mask_BxTxP=None if masks.prefix is None else masks.prefix[None])
        x_BxTxD = x_BxTxD + (attention.project_out(a_BxTxNxH, self.out.value.astype(dt))
                             + self.out_bias.value.astype(dt))
        h = self.ln_2(x_BxTxD)
        h = (matmul.einsum("btd,df->btf", h, self.fc.value.astype(dt))
             + self.fc_bias.value.astype(dt))
        h = jax.nn.gelu(h, approximate=True)
        h = matmul.einsum("btf,fd->btd", h, self.proj.value.astype(dt))
        x_BxTxD = x_BxTxD + h + self.proj_bias.value.astype(dt)
        return x_BxTxD, k, v


class GPT2(nnx.Module):
    """GPT-2 language model: ``(tokens, positions, mask, cache, prefix) -> ModelOutput``."""

    def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs):
        pd = jnp.dtype(cfg.param_dtype)
        self.cfg = cfg
        self.wte = param(rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), pd)
        self.wpe = param(rngs, (cfg.max_positions, cfg.d_model), ("position", "embed"), pd,
                         std=0.01)
        self.blocks = nnx.List([_Block(cfg, rngs) for _ in range(cfg.num_layers)])
        self.ln_f = LayerNorm(cfg.d_model, cfg.layer_norm_eps, pd)

    def __call__(self, tokens_BxT, positions_BxT, input_mask_BxT, cache: KVCache | None = None,
                 prefix: KVCache | None = None, *, last_only: bool = False) -> ModelOutput:
        """``last_only`` computes the logits (and keeps the hidden states) of the last position
        only, ``[B, 1, V]``, as a prefill needs: the unembedding of the other positions is never
        computed."""
        dt = jnp.dtype(self.cfg.dtype)
        masks, key_valid_BxS, write_index = attention.build_masks(input_mask_BxT, cache, prefix,
                                                                  {None})
        x_BxTxD = (self.wte.value[tokens_BxT] + self.wpe.value[positions_BxT]).astype(dt)
        x_BxTxD, cache = run_blocks(self.blocks, self.cfg.remat, x_BxTxD, positions_BxT, masks,
                                    cache, prefix, write_index, key_valid_BxS)
        logits_BxTxV, x_BxTxD = tied_logits(self.ln_f(x_BxTxD), self.wte.value, dt,
                                            last_only=last_only)
        return ModelOutput(logits_BxTxV, cache, x_BxTxD)
