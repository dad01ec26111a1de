"""The functional key/value cache shared by every decoder.

A cache is a pytree of arrays, threaded through ``forward`` and ``jax.lax.scan`` by value:

- ``k``/``v``: one array per layer, ``[B, S, K, H]`` (batch, cache slots, KV heads, head dim);
- ``valid_BxS``: which slots hold a real (non-padding) token;
- ``length``: how many slots have been written (one scalar: left padding aligns the rows).

Slots are written left to right. A left-padded prompt occupies slots ``0..P-1`` with its padding
first, so within a row the slot distance between two real tokens equals their position distance;
causal and sliding-window masks are therefore computed on slot indices.

A *prefix* is a filled cache of ``b`` rows shared, read-only, by ``b * n`` rows of another cache
(row ``i`` of the latter reads prefix row ``i // n``): the prompt of each Best-of-N group is
stored once, not ``n`` times. Its slots precede the slots of the cache that reads it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

__all__ = ["KVCache", "init_cache", "cache_axes"]


@struct.dataclass
class KVCache:
    """Per-layer keys and values, the slot validity mask and the number of written slots."""

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    valid_BxS: jax.Array
    length: jax.Array

    @property
    def batch_size(self) -> int:
        return self.valid_BxS.shape[0]

    @property
    def max_len(self) -> int:
        return self.valid_BxS.shape[1]

    @property
    def num_layers(self) -> int:
        return len(self.k)


def init_cache(num_layers: int, batch_size: int, max_len: int, num_kv_heads: int,
               head_dim: int, dtype=jnp.float32) -> KVCache:
    """An empty cache of ``max_len`` slots for ``batch_size`` rows."""
    if batch_size < 1:
        raise ValueError(f"cache batch_size must be >= 1, got {batch_size}")
    if max_len < 1:
        raise ValueError(f"cache max_len must be >= 1, got {max_len}")
    shape = (batch_size, max_len, num_kv_heads, head_dim)
    return KVCache(
        k=tuple(jnp.zeros(shape, dtype) for _ in range(num_layers)),
        v=tuple(jnp.zeros(shape, dtype) for _ in range(num_layers)),
        valid_BxS=jnp.zeros((batch_size, max_len), jnp.bool_),
        length=jnp.zeros((), jnp.int32),
    )


def cache_axes(cache: KVCache) -> KVCache:
    """The logical axis names of every leaf of ``cache`` (same pytree structure)."""
    kv = ("batch", "cache_seq", "kv_heads", "head_dim")
    return KVCache(
        k=tuple(kv for _ in cache.k),
        v=tuple(kv for _ in cache.v),
        valid_BxS=("batch", "cache_seq"),
        length=(),
    )
