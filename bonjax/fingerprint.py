"""Short stable names of what a stored file was made from: configs, cache keys, array tables.

- :func:`table_digest`: SHA-256 (64 hex digits) of arrays' bytes, e.g. a prompt table's tokens
  and mask: which prompts a cache entry was drawn for.
- :func:`config_fingerprint`: 16 hex digits of SHA-256 of a configuration's canonical JSON
  (dataclasses, ``ConfigDict``\\s, enums and numpy scalars reduced to plain JSON, keys sorted);
  a value without a stable text form raises. Stored with every checkpoint of a run.
- :func:`fingerprint_of`: 16 hex digits of SHA-256 of JSON fields, a value JSON cannot write
  falling back to its ``str``. Names the reference-rewards cache files.

The two short hashes write their JSON differently (compact and strict, or spaced and lenient)
because files named by each already exist: run directories store config fingerprints and
reference caches are found by name, so either text form is fixed for good.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["config_fingerprint", "fingerprint_of", "table_digest"]


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def table_digest(*arrays: np.ndarray) -> str:
    """SHA-256 (hex) of the arrays' bytes in C order, one after another (dtype and values; the
    shape only through the byte count)."""
    sha = hashlib.sha256()
    for array in arrays:
        sha.update(np.ascontiguousarray(array).tobytes())
    return sha.hexdigest()


def fingerprint_of(**fields) -> str:
    """A short stable hash of JSON-able fields (identifies a cache entry)."""
    return _short_hash(json.dumps(fields, sort_keys=True, default=str))


def _canonical(value: Any, where: str) -> Any:
    """``value`` as plain JSON types, or a ValueError naming the first leaf that is not."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name), f"{where}.{f.name}")
                for f in dataclasses.fields(value)}
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return _canonical(value.to_dict(), where)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"config value {where} = {value!r} of type {type(value).__name__} has no "
                     "stable text form for a fingerprint")


def config_fingerprint(config: Any) -> str:
    """A short stable hash of a configuration (dataclass, ``ConfigDict``, mapping, or JSON value).

    Two configs have the same fingerprint exactly when their canonical JSON forms (keys sorted)
    are equal.
    """
    return _short_hash(json.dumps(_canonical(config, "config"), sort_keys=True,
                                  separators=(",", ":")))
