"""One functional interface over every decoder architecture.

``DecoderLM`` holds the static part of a model (its config and Flax graph definition) and is
hashable, so it can be a static argument of ``jax.jit``. Parameters are an ``nnx.State`` pytree
passed by value::

    lm, params = DecoderLM.init(GPT2Config.tiny(), jax.random.key(0))
    out = lm.forward(params, tokens_BxT, positions_BxT, mask_BxT, cache)
    out.logits_BxTxV, out.cache, out.hidden_BxTxD          # a ModelOutput, whatever the call

The sampler, scorer, reward models and trainers call ``forward`` and never branch on the
architecture.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from bonjax import sharding as shd
from bonjax.models.kv_cache import KVCache, cache_axes, init_cache
from bonjax.models.output import ModelOutput

__all__ = ["DecoderConfig", "DecoderLM", "ModelOutput", "positions_from_mask"]



class DecoderConfig(Protocol):
    """What every architecture's config provides (a frozen dataclass derived from
    ``models.policy.ComputePolicy``: ``GPT2Config``, ``Gemma3Config``, ``LlamaConfig``, ...).
    Nothing outside ``models/`` reads any other field."""

    vocab_size: int
    max_positions: int
    num_layers: int
    num_kv_heads: int  # of the KV cache
    head_dim: int
    bos_id: int
    eos_id: int
    pad_id: int
    dtype: str  # the dtype policy (see DecoderLM.with_dtypes)
    param_dtype: str
    remat: str  # bonjax.models.remat policy
    final_norm_name: ClassVar[str]  # the module attribute of the final norm
    # The model_type of its Hugging Face config.json: a class constant, or a field where one
    # config class reads several model_types (LlamaConfig), set by its from_hf.
    hf_model_type: str

    def make(self, rngs: nnx.Rngs) -> nnx.Module:
        """The nnx module; its ``__call__`` returns a :class:`ModelOutput`."""


def positions_from_mask(mask_BxT: jax.Array) -> jax.Array:
    """Token positions of a left-padded batch: 0 at each row's first real token."""
    return jnp.maximum(jnp.cumsum(mask_BxT.astype(jnp.int32), axis=-1) - 1, 0)


@dataclasses.dataclass(frozen=True)
class DecoderLM:
    """A decoder-only language model: static config + graph definition, functional forward."""

    config: DecoderConfig
    graphdef: Any

    @classmethod
    def abstract(cls, config: DecoderConfig) -> tuple[DecoderLM, nnx.State]:
        """The model and the shapes/dtypes/logical axes of its parameters (nothing allocated)."""
        module = nnx.eval_shape(lambda: config.make(nnx.Rngs(0)))
        graphdef, params = nnx.split(module)
        return cls(config, graphdef), params

    @classmethod
    def init(cls, config: DecoderConfig, key: jax.Array, mesh: Mesh | None = None,
             rules: shd.ShardingRules = shd.ShardingRules()) -> tuple[DecoderLM, nnx.State]:
        """Random initialisation; with a mesh, each device only ever holds its own shards."""
        lm, abstract_params = cls.abstract(config)

        def make(k):
            return nnx.split(config.make(nnx.Rngs(params=k)))[1]

        if mesh is None:
            return lm, jax.jit(make)(key)
        out_shardings = shd.param_shardings(abstract_params, mesh, rules)
        return lm, jax.jit(make, out_shardings=out_shardings)(key)

    def with_dtypes(self, params: nnx.State, dtype: str | None = None,
                    param_dtype: str | None = None) -> tuple[DecoderLM, nnx.State]:
        """The same model under another dtype policy, and its parameters cast to ``param_dtype``.

        The policy (the ``dtype`` fields of every config): parameters are stored in
        ``param_dtype``; matmuls take ``dtype`` inputs (bfloat16 on accelerators) and accumulate in
        float32; norms, softmax, logits and everything computed from them (log-probabilities,
        losses) are float32; the KV cache is kept in ``dtype``.
        """
        config = dataclasses.replace(self.config, **{
            k: v for k, v in (("dtype", dtype), ("param_dtype", param_dtype)) if v is not None})
        lm, _ = DecoderLM.abstract(config)
        target = jnp.dtype(config.param_dtype)
        return lm, jax.tree.map(lambda x: x.astype(target), params)

    def top_blocks_filter(self, train_top: int | None):
        """A parameter-path predicate: True for the top ``train_top`` blocks and the final norm.

        ``train_top=None`` selects every parameter. Embeddings and lower blocks are otherwise
        left out (the vBoN paper trains the top 2 blocks). Every decoder keeps its blocks in
        ``blocks`` and names its final norm ``config.final_norm_name``.
        """
        if train_top is None:
            return lambda path: True
        num_layers = self.config.num_layers
        if not 0 < train_top <= num_layers:
            raise ValueError(f"train_top must be in [1, {num_layers}], got {train_top}")
        first = num_layers - train_top
        final_norm = self.config.final_norm_name

        def selected(path) -> bool:
            names = [getattr(k, "key", k) for k in path]
            if names and names[0] == "blocks":
                return int(names[1]) >= first
            return names[0] == final_norm

        return selected

    @property
    def eos_id(self) -> int:
        return self.config.eos_id

    @property
    def pad_id(self) -> int:
        return self.config.pad_id

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def forward(self, params: nnx.State, tokens_BxT: jax.Array, positions_BxT: jax.Array,
                input_mask_BxT: jax.Array, cache: KVCache | None = None,
                prefix: KVCache | None = None, *, last_only: bool = False) -> ModelOutput:
        """Float32 logits ``[B, T, V]``, the updated cache (None without one) and the final-norm
        hidden states ``[B, T, D]`` the logits are computed from (the input of a value head).

        ``last_only=True`` keeps the last position only (``T = 1`` in the output): a prefill
        needs only its logits, and the unembedding of the other positions (``B x T x V`` floats,
        4 GiB for 8 Gemma prompts of 512 tokens) is never computed.

        ``input_mask_BxT`` marks real tokens (False for padding). With ``cache``, the tokens are
        written at ``cache.length`` and attend to everything written before; with ``prefix``,
        row ``i`` also attends to row ``i // n`` of the prefix, ``n = B / prefix batch``.
        Static checks only: the caller keeps ``cache.length + T <= cache.max_len``.
        """
        if tokens_BxT.ndim != 2:
            raise ValueError(f"tokens must be [batch, time], got shape {tokens_BxT.shape}")
        if positions_BxT.shape != tokens_BxT.shape or input_mask_BxT.shape != tokens_BxT.shape:
            raise ValueError(f"tokens {tokens_BxT.shape}, positions {positions_BxT.shape} and "
                             f"mask {input_mask_BxT.shape} must have the same shape")
        T = tokens_BxT.shape[1]
        context = (T if cache is None else cache.max_len) + (
            0 if prefix is None else prefix.max_len)
        if context > self.config.max_positions:
            raise ValueError(f"{context} tokens exceed the model's context of "
                             f"{self.config.max_positions} positions")
        if cache is not None and T > cache.max_len:
            raise ValueError(f"{T} tokens do not fit a cache of {cache.max_len} slots")
        model = nnx.merge(self.graphdef, params)
        return model(tokens_BxT, positions_BxT, input_mask_BxT, cache, prefix,
                     last_only=last_only)

    def init_cache(self, batch_size: int, max_len: int, dtype=None) -> KVCache:
        """An empty KV cache of ``max_len`` slots."""
        if max_len > self.config.max_positions:
            raise ValueError(f"a cache of {max_len} slots exceeds the model's context of "
                             f"{self.config.max_positions} positions")
        cfg = self.config
        return init_cache(cfg.num_layers, batch_size, max_len, cfg.num_kv_heads, cfg.head_dim,
                          dtype or jnp.dtype(cfg.dtype))

    def cache_shardings(self, cache: KVCache, mesh: Mesh,
                        rules: shd.ShardingRules = shd.ShardingRules()) -> KVCache:
        """NamedShardings for every leaf of ``cache``, from its logical axes."""
        axes = cache_axes(cache)
        return jax.tree.map(lambda names, leaf: rules.sharding(names, leaf.shape, mesh),
                            axes, cache, is_leaf=lambda x: isinstance(x, tuple) and all(
                                isinstance(n, str) for n in x))
