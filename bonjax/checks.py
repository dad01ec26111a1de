"""Argument checks shared by every package: integers that are not bools, real numbers,
probabilities, temperatures, and whether an array's values can be read now.

Value checks of arrays run only on concrete arrays (:func:`is_concrete`): under ``jit`` or
``vmap`` the values are tracers, and a global array with shards on other processes cannot be
read by one process; there only shapes are checked. A check raises ``ValueError`` naming the
argument and the value it got.
"""

from __future__ import annotations

import math
import numbers

import jax
import numpy as np

__all__ = [
    "check_int",
    "config_field",
    "config_int",
    "check_nonzero",
    "check_positive",
    "check_temperature",
    "check_unit_interval",
    "is_concrete",
    "is_int",
    "is_real",
    "shape_of",
]


def is_int(x) -> bool:
    """Whether ``x`` is an integer (Python or numpy), ``bool`` excluded (``True`` is no count)."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_real(x) -> bool:
    """Whether ``x`` is a real number (int, float, numpy scalar), ``bool`` excluded."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def check_int(name: str, value, *, minimum: int = 1) -> int:
    """``int(value)``, or a ``ValueError`` unless ``value`` is an integer >= ``minimum``."""
    if not is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def config_field(config, dotted: str):
    """The field ``dotted`` (``"train.steps"``) of a nested config (``ml_collections`` or
    mappings); a ``ValueError`` naming it if the config has no such field."""
    node = config
    for part in dotted.split("."):
        try:
            node = node[part]
        except (KeyError, AttributeError, TypeError):
            raise ValueError(f"the config has no field {dotted!r}") from None
    return node


def config_int(config, dotted: str, minimum: int) -> int:
    """The integer field ``dotted`` of a config, checked ``>= minimum``; the ``ValueError``
    names ``config.<dotted>`` and the value."""
    return check_int(f"config.{dotted}", config_field(config, dotted), minimum=minimum)


def is_concrete(x) -> bool:
    """Whether this process can read ``x``'s values now: not a tracer of ``jit``/``vmap``, not
    a shape, not a global array with shards on other processes."""
    if isinstance(x, jax.core.Tracer | jax.ShapeDtypeStruct):
        return False
    return not isinstance(x, jax.Array) or x.is_fully_addressable


def shape_of(x) -> tuple[int, ...]:
    """The shape of an array, a ``ShapeDtypeStruct`` or a nested sequence."""
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def check_unit_interval(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``0 <= value <= 1`` (a probability; skipped when traced)."""
    if is_concrete(value) and not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is finite and positive (skipped when traced)."""
    if not is_concrete(value):
        return
    v = float(value)
    if not np.isfinite(v) or v < 0.0 or (v == 0.0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")


def check_nonzero(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number other than 0 (not a bool)."""
    if not (is_real(value) and math.isfinite(value) and value != 0):
        raise ValueError(f"{name} must be a finite number other than 0, got {value!r}")


def check_temperature(temperature) -> None:
    """Raise ``ValueError`` unless ``temperature`` is a finite real number > 0 (not a bool)."""
    if not (is_real(temperature) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
