"""One way to make a parameter: an ``nnx.Param`` with its logical axis names and its initial value.

Every model (the decoders and the reward encoders) builds its parameters with :func:`param`, so
the initialisations and the axis annotation that sharding reads are written once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["param", "INITS"]

INITS = ("normal", "zeros", "ones")


def param(rngs: nnx.Rngs, shape: tuple[int, ...], axes: tuple[str | None, ...], dtype,
          init: str = "normal", std: float = 0.02) -> nnx.Param:
    """A parameter of ``shape`` whose dimensions are named ``axes`` (see ``bonjax.sharding``).

    ``init``: ``"normal"`` draws ``std * N(0, 1)`` from ``rngs.params()``; ``"zeros"`` and
    ``"ones"`` draw nothing (so they do not advance the parameter key stream).
    """
    if len(axes) != len(shape):
        raise ValueError(f"axes {axes} do not name every dimension of shape {shape}")
    if init == "normal":
        value = std * jax.random.normal(rngs.params(), shape, dtype)
    elif init == "zeros":
        value = jnp.zeros(shape, dtype)
    elif init == "ones":
        value = jnp.ones(shape, dtype)
    else:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return nnx.Param(value, axes=axes)
