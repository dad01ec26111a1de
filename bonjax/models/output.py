"""What one call of a decoder language model returns, whatever the architecture and flags."""

from __future__ import annotations

import jax
from flax import struct

from bonjax.models.kv_cache import KVCache

__all__ = ["ModelOutput"]


@struct.dataclass
class ModelOutput:
    """The logits, the updated cache and the hidden states the logits are computed from.

    One type for every call, so no caller counts return values: the final-norm hidden states
    are always there (a value head reads them; under ``jit`` they cost nothing when unused).

    Attributes:
      logits_BxTxV: float32 logits, ``T = 1`` for a ``last_only`` call.
      cache: the cache with this call's tokens written, or None when called without one.
      hidden_BxTxD: the final-norm hidden states, in the compute dtype.
    """

    logits_BxTxV: jax.Array
    cache: KVCache | None
    hidden_BxTxD: jax.Array
