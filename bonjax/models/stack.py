"""The part every decoder shares: the loop over its blocks with the KV cache, and the tied
unembedding.

A block is an nnx module called as ``block(x_BxTxD, positions_BxT, masks, layer_k, layer_v,
write_index, prefix_kv) -> (x_BxTxD, k, v)`` (an architecture without rotary embeddings ignores
the positions). :func:`run_blocks` threads each layer's slice of the cache and of the shared
prefix through it, applies the config's rematerialisation policy, and assembles the new cache;
:func:`tied_logits` turns the final hidden states into float32 logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bonjax.models import matmul
from bonjax.models.kv_cache import KVCache
from bonjax.models.remat import call_block

__all__ = ["run_blocks", "tied_logits"]


def run_blocks(blocks: Sequence[nnx.Module], remat: str, x_BxTxD: jax.Array,
               positions_BxT: jax.Array, masks, cache: KVCache | None, prefix: KVCache | None,
               write_index, key_valid_BxS) -> tuple[jax.Array, KVCache | None]:
    """The blocks applied in order; returns the last block's output and the updated cache (None
    without one). ``masks``, ``write_index`` and ``key_valid_BxS`` come from
    :func:`bonjax.models.attention.build_masks`."""
    new_k, new_v = [], []
    for i, block in enumerate(blocks):
        layer_k = None if cache is None else cache.k[i]
        layer_v = None if cache is None else cache.v[i]
        prefix_kv = (None, None) if prefix is None else (prefix.k[i], prefix.v[i])
        x_BxTxD, k, v = call_block(block, remat, x_BxTxD, positions_BxT, masks, layer_k,
                                   layer_v, write_index, prefix_kv)
        new_k.append(k)
        new_v.append(v)
    if cache is not None:
        cache = KVCache(k=tuple(new_k), v=tuple(new_v), valid_BxS=key_valid_BxS,
                        length=cache.length + x_BxTxD.shape[1])
    return x_BxTxD, cache


def tied_logits(x_BxTxD: jax.Array, unembed_VxD: jax.Array, dtype, *, last_only: bool,
                softcap: float | None = None) -> tuple[jax.Array, jax.Array]:
    """``(logits_BxTxV, hidden_BxTxD)``: float32 logits of the final-norm hidden states against
    the output embedding, of the last position only with ``last_only`` (the other positions'
    unembedding is never computed), soft-capped as ``tanh(z / cap) * cap`` when ``softcap`` is
    set."""
    if last_only:
        x_BxTxD = x_BxTxD[:, -1:]
    logits_BxTxV = matmul.einsum("btd,vd->btv", x_BxTxD.astype(dtype), unembed_VxD.astype(dtype),
                                 out_dtype=jnp.float32)
    if softcap is not None:
        logits_BxTxV = jnp.tanh(logits_BxTxV / softcap) * softcap
    return logits_BxTxV, x_BxTxD
