"""Llama-style decoders: Llama 3.x (Meta 2024), Qwen 2.5 and Qwen 3 (Qwen Team 2024, 2025) and
Mistral (Jiang et al. 2023).

One pre-norm block for all of them: RMSNorm (``x * rsqrt(mean(x^2) + eps) * w``, in float32),
grouped-query attention with rotary embeddings, a SiLU-gated MLP, a final RMSNorm and an output
matrix that is either the token embedding (tied) or its own ``lm_head``. The families differ
only in options of :class:`LlamaConfig`:

- Llama 3.x: ``rope_scaling`` (Llama 3.1's frequency rescaling), tied or untied output;
- Qwen 2.5 (``model_type`` "qwen2"): biases on the query, key and value projections;
- Qwen 3 ("qwen3"): RMSNorm of each query and key head before RoPE, a ``head_dim`` that may
  differ from ``d_model / num_heads``;
- Mistral ("mistral"): sliding-window attention of ``sliding_window`` tokens.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from bonjax.models import attention, matmul
from bonjax.models.kv_cache import KVCache
from bonjax.models.output import ModelOutput
from bonjax.models.params import param
from bonjax.models.policy import ComputePolicy
from bonjax.models.stack import run_blocks, tied_logits

__all__ = ["LlamaConfig", "Llama", "Llama3RopeScaling", "LLAMA_MODEL_TYPES"]

# The Hugging Face ``model_type`` values this module reads.
LLAMA_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")


@dataclasses.dataclass(frozen=True)
class Llama3RopeScaling:
    """Llama 3.1's RoPE rescaling (``rope_type`` "llama3"): wavelengths longer than
    ``original_max_positions / low_freq_factor`` are stretched by ``factor``, those shorter than
    ``original_max_positions / high_freq_factor`` kept, and those between interpolated."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_positions: int = 8192

    def inv_freq(self, head_dim: int, base: float) -> jax.Array:
        """The rescaled rotary frequencies ``[head_dim / 2]``, float32."""
        inv_freq = attention.rope_inv_freq(head_dim, base)
        wavelen = 2 * math.pi / inv_freq
        old = self.original_max_positions
        low_wavelen, high_wavelen = old / self.low_freq_factor, old / self.high_freq_factor
        scaled = jnp.where(wavelen > low_wavelen, inv_freq / self.factor, inv_freq)
        smooth = (old / wavelen - self.low_freq_factor) / (
            self.high_freq_factor - self.low_freq_factor)
        smoothed = (1 - smooth) * scaled / self.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return jnp.where(medium, smoothed, scaled)


@dataclasses.dataclass(frozen=True)
class LlamaConfig(ComputePolicy):
    """Static hyperparameters of a Llama-style decoder; defaults are Llama-3.2-1B's."""

    vocab_size: int = 128256
    max_positions: int = 131072
    num_layers: int = 16
    num_heads: int = 32
    num_kv_heads: int = 8
    head_dim: int = 64
    d_model: int = 2048
    mlp_dim: int = 8192
    rope_base: float = 500_000.0
    rope_scaling: Llama3RopeScaling | None = Llama3RopeScaling(factor=32.0)
    rms_norm_eps: float = 1e-5
    qkv_bias: bool = False  # biases on the query, key and value projections (Qwen 2.5)
    out_bias: bool = False  # a bias on the attention output projection
    qk_norm: bool = False  # RMSNorm of each query and key head before RoPE (Qwen 3)
    sliding_window: int | None = None  # keys within this many tokens (Mistral); None: all
    full_attention_layers: tuple[int, ...] = ()  # layers that ignore ``sliding_window``
    tie_embeddings: bool = True  # the output matrix is the token embedding
    bos_id: int = 128000
    eos_id: int = 128001
    pad_id: int = 128001
    # The ``model_type`` of its Hugging Face ``config.json``, one of LLAMA_MODEL_TYPES (a field,
    # not a class constant: one config class reads four families).
    hf_model_type: str = "llama"

    @classmethod
    def from_hf(cls, hf: Mapping, **overrides) -> LlamaConfig:
        """The config of a Hugging Face Llama, Qwen 2/2.5, Qwen 3 or Mistral ``config.json``.

        RoPE settings are read from ``rope_parameters`` (transformers 5) or ``rope_scaling`` and
        a top-level ``rope_theta`` (earlier files).
        """
        model_type = hf.get("model_type", "llama")
        if model_type not in LLAMA_MODEL_TYPES:
            raise ValueError(f"model_type {model_type!r} is not one of {LLAMA_MODEL_TYPES}")
        if hf.get("hidden_act", "silu") != "silu" or hf.get("mlp_bias", False):
            raise ValueError(f"unsupported MLP: hidden_act {hf.get('hidden_act')!r}, mlp_bias "
                             f"{hf.get('mlp_bias')} (bonjax reads SiLU-gated MLPs without bias)")
        num_layers, num_heads = hf["num_hidden_layers"], hf["num_attention_heads"]
        rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope.get("partial_rotary_factor", 1.0) != 1.0:
            raise ValueError("partial rotary embeddings are not supported")
        if rope_type == "llama3":
            scaling = Llama3RopeScaling(
                factor=float(rope["factor"]), low_freq_factor=float(rope["low_freq_factor"]),
                high_freq_factor=float(rope["high_freq_factor"]),
                original_max_positions=int(rope["original_max_position_embeddings"]))
        elif rope_type == "default":
            scaling = None
        else:
            raise ValueError(f"unsupported rope_type {rope_type!r} (bonjax reads 'default' and "
                             "'llama3')")
        window, full_layers = _sliding_window(hf, model_type, num_layers)
        bias = bool(hf.get("attention_bias", False))
        eos = overrides.get("eos_id", hf.get("eos_token_id"))
        eos = eos[0] if isinstance(eos, list | tuple) else eos
        if eos is None:
            raise ValueError("config.json has no eos_token_id: pass eos_id=")
        bos, pad = hf.get("bos_token_id"), hf.get("pad_token_id")
        return cls(**{**dict(
            vocab_size=hf["vocab_size"], max_positions=hf.get("max_position_embeddings", 4096),
            num_layers=num_layers, num_heads=num_heads,
            num_kv_heads=hf.get("num_key_value_heads") or num_heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // num_heads,
            d_model=hf["hidden_size"], mlp_dim=hf["intermediate_size"],
            rope_base=float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0))),
            rope_scaling=scaling, rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            qkv_bias=model_type == "qwen2" or (model_type != "mistral" and bias),
            out_bias=model_type in ("llama", "qwen3") and bias,
            qk_norm=model_type == "qwen3", sliding_window=window,
            full_attention_layers=full_layers,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            bos_id=eos if bos is None else bos, eos_id=eos, pad_id=eos if pad is None else pad,
            hf_model_type=model_type), **overrides})

    def to_hf(self) -> dict:
        """The Hugging Face ``config.json`` dict of this config (:meth:`from_hf` reads it back).

        Raises:
          ValueError: for options the family's transformers class cannot express (a Mistral
            with q/k norms, a Llama with a sliding window, ...).
        """
        t = self.hf_model_type
        expressible = {"llama": not (self.qk_norm or self.sliding_window or
                                     self.qkv_bias != self.out_bias),
                       "qwen2": self.qkv_bias and not (self.qk_norm or self.out_bias),
                       "qwen3": self.qk_norm and self.qkv_bias == self.out_bias,
                       "mistral": not (self.qk_norm or self.qkv_bias or self.out_bias)}[t]
        if not expressible:
            raise ValueError(f"a {t} config.json cannot express this LlamaConfig (qkv_bias "
                             f"{self.qkv_bias}, out_bias {self.out_bias}, qk_norm {self.qk_norm}, "
                             f"sliding_window {self.sliding_window})")
        rope = {"rope_type": "default", "rope_theta": self.rope_base}
        if self.rope_scaling is not None:
            s = self.rope_scaling
            rope = {"rope_type": "llama3", "rope_theta": self.rope_base, "factor": s.factor,
                    "low_freq_factor": s.low_freq_factor, "high_freq_factor": s.high_freq_factor,
                    "original_max_position_embeddings": s.original_max_positions}
        architectures = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                         "qwen3": "Qwen3ForCausalLM", "mistral": "MistralForCausalLM"}
        hf = dict(
            model_type=t, architectures=[architectures[t]], vocab_size=self.vocab_size,
            max_position_embeddings=self.max_positions, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, num_key_value_heads=self.num_kv_heads,
            head_dim=self.head_dim, hidden_size=self.d_model, intermediate_size=self.mlp_dim,
            hidden_act="silu", rope_parameters=rope, rms_norm_eps=self.rms_norm_eps,
            tie_word_embeddings=self.tie_embeddings, bos_token_id=self.bos_id,
            eos_token_id=self.eos_id, pad_token_id=self.pad_id, sliding_window=None)
        if t in ("llama", "qwen3"):
            hf["attention_bias"] = self.qkv_bias
        if t == "mistral":
            hf["sliding_window"] = self.sliding_window
        elif t in ("qwen2", "qwen3") and self.sliding_window is not None:
            hf.update(sliding_window=self.sliding_window, use_sliding_window=True, layer_types=[
                "full_attention" if i in self.full_attention_layers else "sliding_attention"
                for i in range(self.num_layers)])
        return hf

    def __post_init__(self):
        super().__post_init__()
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads "
                             f"{self.num_kv_heads}")
        if self.hf_model_type not in LLAMA_MODEL_TYPES:
            raise ValueError(f"hf_model_type {self.hf_model_type!r} is not one of "
                             f"{LLAMA_MODEL_TYPES}")

    def window(self, layer: int) -> int | None:
        """The sliding window of ``layer`` (None: global attention)."""
        return None if layer in self.full_attention_layers else self.sliding_window

    def make(self, rngs: nnx.Rngs) -> Llama:
        return Llama(self, rngs=rngs)

    @classmethod
    def llama3_8b(cls, **overrides) -> LlamaConfig:
        """Llama-3.1-8B (meta-llama/Llama-3.1-8B config.json)."""
        kw = dict(num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128, d_model=4096,
                  mlp_dim=14336, rope_scaling=Llama3RopeScaling(factor=8.0),
                  tie_embeddings=False, bos_id=128000, eos_id=128001, pad_id=128001)
        return cls(**{**kw, **overrides})

    @classmethod
    def tiny(cls, model_type: str = "llama", **overrides) -> LlamaConfig:
        """A small config for tests (random weights): 2 layers, GQA with 2 KV heads, with the
        options that set ``model_type``'s family apart (see ``_TINY_FAMILIES``)."""
        kw = dict(vocab_size=101, max_positions=128, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8, d_model=32, mlp_dim=64, rope_base=10_000.0, rope_scaling=None,
                  rms_norm_eps=1e-6, bos_id=2, eos_id=1, pad_id=0, hf_model_type=model_type)
        return cls(**{**kw, **_TINY_FAMILIES[model_type], **overrides})


# What each family's tiny config turns on. Llama's rescaling bounds (wavelengths 16 and 64 at
# head_dim 8) keep one frequency, interpolate one and stretch two; Mistral's window of 4 and
# Qwen 3's head_dim of 16 (not d_model / num_heads = 8) make those options matter.
_TINY_FAMILIES = {
    "llama": dict(rope_scaling=Llama3RopeScaling(factor=4.0, original_max_positions=64),
                  tie_embeddings=False),
    "qwen2": dict(qkv_bias=True),
    "qwen3": dict(qk_norm=True, head_dim=16),
    "mistral": dict(sliding_window=4, tie_embeddings=False),
}


def _sliding_window(hf: Mapping, model_type: str,
                    num_layers: int) -> tuple[int | None, tuple[int, ...]]:
    """``(sliding_window, full_attention_layers)`` as transformers applies them: Mistral's
    window covers every layer; Qwen's only with ``use_sliding_window``, on the layers that
    ``layer_types`` (or, in older files, ``max_window_layers``) marks; Llama has none."""
    window = hf.get("sliding_window")
    if model_type == "llama" or window is None:
        return None, ()
    if model_type == "mistral":
        return int(window), ()
    if not hf.get("use_sliding_window", False):
        return None, ()
    layer_types = hf.get("layer_types") or [
        "sliding_attention" if i >= hf.get("max_window_layers", num_layers) else "full_attention"
        for i in range(num_layers)]
    full = tuple(i for i, t in enumerate(layer_types) if t != "sliding_attention")
    return (None, ()) if len(full) == num_layers else (int(window), full)


class _RMSNorm(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, dim: int, eps: float, dtype, axis_name: str):
        self.scale = param(rngs, (dim,), (axis_name,), dtype, "ones")
        self.eps = eps

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (y * self.scale.value.astype(jnp.float32)).astype(x.dtype)


class _Block(nnx.Module):
    def __init__(self, cfg: LlamaConfig, layer: int, rngs: nnx.Rngs):
        D, N, K, H, F = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
        pd = jnp.dtype(cfg.param_dtype)
        eps = cfg.rms_norm_eps
        self.attn_norm = _RMSNorm(rngs, D, eps, pd, "embed")
        self.q = param(rngs, (D, N, H), ("embed", "q_heads", "head_dim"), pd)
        self.k = param(rngs, (D, K, H), ("embed", "kv_heads", "head_dim"), pd)
        self.v = param(rngs, (D, K, H), ("embed", "kv_heads", "head_dim"), pd)
        self.o = param(rngs, (N, H, D), ("q_heads", "head_dim", "embed"), pd)
        # Optional parts are None (no parameter) when the config leaves them out.
        def bias(shape, axes, present):
            return param(rngs, shape, axes, pd, "zeros") if present else None

        qk_norm = cfg.qk_norm
        self.q_bias = bias((N, H), ("q_heads", "head_dim"), cfg.qkv_bias)
        self.k_bias = bias((K, H), ("kv_heads", "head_dim"), cfg.qkv_bias)
        self.v_bias = bias((K, H), ("kv_heads", "head_dim"), cfg.qkv_bias)
        self.o_bias = bias((D,), ("embed",), cfg.out_bias)
        self.q_norm = _RMSNorm(rngs, H, eps, pd, "head_dim") if qk_norm else None
        self.k_norm = _RMSNorm(rngs, H, eps, pd, "head_dim") if qk_norm else None
        self.mlp_norm = _RMSNorm(rngs, D, eps, pd, "embed")
        self.gate = param(rngs, (D, F), ("embed", "mlp"), pd)
        self.up = param(rngs, (D, F), ("embed", "mlp"), pd)
        self.down = param(rngs, (F, D), ("mlp", "embed"), pd)
        self.window = cfg.window(layer)
        self.rope_base, self.rope_scaling = cfg.rope_base, cfg.rope_scaling
        self.scale = H ** -0.5
        self.dtype = jnp.dtype(cfg.dtype)

    def _project(self, h_BxTxD, w, bias, norm):
        y = attention.project_in(h_BxTxD, w.value.astype(self.dtype))
        if bias is not None:
            y = y + bias.value.astype(self.dtype)
        return y if norm is None else norm(y)

    def __call__(self, x_BxTxD, positions_BxT, masks, layer_k, layer_v, write_index, prefix_kv):
        dt = self.dtype
        h = self.attn_norm(x_BxTxD)
        q_BxTxNxH = self._project(h, self.q, self.q_bias, self.q_norm)
        k_BxTxKxH = self._project(h, self.k, self.k_bias, self.k_norm)
        v_BxTxKxH = self._project(h, self.v, self.v_bias, None)
        inv_freq = (None if self.rope_scaling is None
                    else self.rope_scaling.inv_freq(q_BxTxNxH.shape[-1], self.rope_base))
        q_BxTxNxH = attention.apply_rope(q_BxTxNxH, positions_BxT, self.rope_base,
                                         inv_freq=inv_freq)
        k_BxTxKxH = attention.apply_rope(k_BxTxKxH, positions_BxT, self.rope_base,
                                         inv_freq=inv_freq)
        if layer_k is not None:
            k_BxTxKxH = attention.write_cache(layer_k, k_BxTxKxH, write_index)
            v_BxTxKxH = attention.write_cache(layer_v, v_BxTxKxH, write_index)
        pk, pv = prefix_kv
        a_BxTxNxH = attention.attend(
            q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, masks.own[self.window], scale=self.scale,
            prefix_k=pk, prefix_v=pv,
            prefix_mask_BxTxP=None if masks.prefix is None else masks.prefix[self.window])
        h = attention.project_out(a_BxTxNxH, self.o.value.astype(dt))
        if self.o_bias is not None:
            h = h + self.o_bias.value.astype(dt)
        x_BxTxD = x_BxTxD + h
        h = self.mlp_norm(x_BxTxD)
        gate_BxTxF = jax.nn.silu(matmul.einsum("btd,df->btf", h, self.gate.value.astype(dt)))
        up_BxTxF = matmul.einsum("btd,df->btf", h, self.up.value.astype(dt))
        x_BxTxD = x_BxTxD + matmul.einsum("btf,fd->btd", gate_BxTxF * up_BxTxF,
                                          self.down.value.astype(dt))
        return x_BxTxD, k_BxTxKxH, v_BxTxKxH


class Llama(nnx.Module):
    """A Llama-style language model: ``(tokens, positions, mask, cache, prefix) ->
    ModelOutput``."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        pd = jnp.dtype(cfg.param_dtype)
        self.cfg = cfg
        self.embed = param(rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), pd)
        self.blocks = nnx.List([_Block(cfg, i, rngs) for i in range(cfg.num_layers)])
        self.final_norm = _RMSNorm(rngs, cfg.d_model, cfg.rms_norm_eps, pd, "embed")
        self.lm_head = (None if cfg.tie_embeddings else
                        param(rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), pd))

    def __call__(self, tokens_BxT, positions_BxT, input_mask_BxT, cache: KVCache | None = None,
                 prefix: KVCache | None = None, *, last_only: bool = False) -> ModelOutput:
        """``last_only`` computes the logits (and keeps the hidden states) of the last position
        only, ``[B, 1, V]``, as a prefill needs."""
        cfg = self.cfg
        dt = jnp.dtype(cfg.dtype)
        windows = {cfg.window(i) for i in range(cfg.num_layers)}
        masks, key_valid_BxS, write_index = attention.build_masks(input_mask_BxT, cache, prefix,
                                                                  windows)
        embed_VxD = self.embed.value
        x_BxTxD = embed_VxD[tokens_BxT].astype(dt)
        x_BxTxD, cache = run_blocks(self.blocks, cfg.remat, x_BxTxD, positions_BxT, masks, cache,
                                    prefix, write_index, key_valid_BxS)
        unembed_VxD = embed_VxD if self.lm_head is None else self.lm_head.value
        logits_BxTxV, x_BxTxD = tied_logits(self.final_norm(x_BxTxD), unembed_VxD, dt,
                                            last_only=last_only)
        return ModelOutput(logits_BxTxV, cache, x_BxTxD)
