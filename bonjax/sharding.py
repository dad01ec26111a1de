"""Meshes and logical-axis sharding rules.

Every parameter and cache leaf in bonjax carries a tuple of *logical* axis names (``"embed"``,
``"q_heads"``, ``"batch"``, ...). One :class:`ShardingRules` object maps those names to the axes
of a :class:`jax.sharding.Mesh`; module code never builds a ``PartitionSpec`` itself. The mesh is
explicit: the entry point creates it once and passes it down.

A mesh axis is dropped for a dimension it does not divide (for example one KV head on a tensor
axis of 2): that dimension is replicated instead, so every model runs on every mesh shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

__all__ = [
    "MESH_AXES",
    "ShardingRules",
    "make_mesh",
    "logical_axes",
    "param_shardings",
    "shard_params",
    "batch_sharding",
    "replicated",
]

MESH_AXES = ("data", "fsdp", "tensor")

MeshAxes = str | tuple[str, ...] | None


@dataclasses.dataclass(frozen=True)
class ShardingRules:
    """Maps logical axis names to mesh axes (a name, a tuple of names, or None = replicated).

    The defaults shard the batch over ``data`` and ``fsdp``, parameters' ``embed`` dimension over
    ``fsdp`` (ZeRO-3 style: gathered per layer by XLA) and heads, MLP and vocabulary over ``tensor``
    (Megatron style).
    """

    batch: MeshAxes = ("data", "fsdp")
    seq: MeshAxes = None
    cache_seq: MeshAxes = None
    vocab: MeshAxes = "tensor"
    embed: MeshAxes = "fsdp"
    q_heads: MeshAxes = "tensor"
    kv_heads: MeshAxes = "tensor"
    head_dim: MeshAxes = None
    mlp: MeshAxes = "tensor"
    position: MeshAxes = None
    classes: MeshAxes = None
    heads: MeshAxes = "tensor"
    samples: MeshAxes = None

    def mesh_axes(self, name: str | None) -> MeshAxes:
        if name is None:
            return None
        if not hasattr(self, name):
            raise ValueError(f"unknown logical axis name {name!r}; known: "
                             f"{[f.name for f in dataclasses.fields(self)]}")
        return getattr(self, name)

    def spec(self, names: Sequence[str | None], shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
        """PartitionSpec for an array of ``shape`` whose axes carry logical ``names``.

        Mesh axes that are absent from ``mesh``, already used by an earlier dimension, or whose
        size does not divide the dimension are dropped (that dimension is then replicated).
        """
        if len(names) != len(shape):
            raise ValueError(f"logical axes {tuple(names)} do not match shape {tuple(shape)}")
        used: set[str] = set()
        entries: list[MeshAxes] = []
        for name, dim in zip(names, shape, strict=True):
            axes = self.mesh_axes(name)
            axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
            kept: list[str] = []
            size = 1
            for axis in axes:
                if axis not in mesh.shape or axis in used:
                    continue
                if dim % (size * mesh.shape[axis]) != 0:
                    continue
                kept.append(axis)
                size *= mesh.shape[axis]
            used.update(kept)
            entries.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
        return PartitionSpec(*entries)

    def sharding(self, names: Sequence[str | None], shape: Sequence[int], mesh: Mesh):
        return NamedSharding(mesh, self.spec(names, shape, mesh))


def make_mesh(shape: Sequence[int] | None = None, axis_names: Sequence[str] = MESH_AXES,
              devices: Sequence[Any] | None = None) -> Mesh:
    """A mesh with Auto axis types (for jit-with-shardings code).

    ``shape=None`` puts every device on the first axis (pure data parallelism).
    """
    devices = list(devices if devices is not None else jax.devices())
    if shape is None:
        shape = (len(devices),) + (1,) * (len(axis_names) - 1)
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(axis_names):
        raise ValueError(f"mesh shape {shape} does not match axis names {tuple(axis_names)}")
    if int(np.prod(shape)) != len(devices):
        raise ValueError(f"mesh shape {shape} needs {int(np.prod(shape))} devices, "
                         f"{len(devices)} are available")
    return jax.make_mesh(shape, tuple(axis_names), axis_types=(AxisType.Auto,) * len(shape),
                         devices=devices)


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def logical_axes(params) -> Any:
    """The pytree of logical-axis tuples of a parameter ``nnx.State`` (one tuple per leaf)."""

    def axes_of(variable):
        meta = variable.get_metadata()
        if "axes" not in meta:
            raise ValueError(f"parameter of shape {variable.value.shape} has no logical axes")
        return tuple(meta["axes"])

    return jax.tree.map(axes_of, params, is_leaf=_is_variable)


def param_shardings(params, mesh: Mesh, rules: ShardingRules = ShardingRules()):
    """A pytree of NamedShardings with the structure of ``params`` (an ``nnx.State``)."""

    def sharding_of(variable):
        meta = variable.get_metadata()
        if "axes" not in meta:
            raise ValueError(f"parameter of shape {variable.value.shape} has no logical axes")
        return variable.replace(rules.sharding(meta["axes"], variable.value.shape, mesh))

    return jax.tree.map(sharding_of, params, is_leaf=_is_variable)


def shard_params(params, mesh: Mesh, rules: ShardingRules = ShardingRules()):
    """Places every parameter leaf on ``mesh`` according to its logical axes."""
    return jax.device_put(params, param_shardings(params, mesh, rules))


def batch_sharding(mesh: Mesh, ndim: int, rules: ShardingRules = ShardingRules(),
                   batch_size: int | None = None) -> NamedSharding:
    """Sharding of an array whose first axis is the batch and whose other axes are replicated."""
    shape = (batch_size if batch_size is not None else int(np.prod(list(mesh.shape.values()))),)
    spec = rules.spec(("batch",), shape, mesh)
    return NamedSharding(mesh, PartitionSpec(*spec, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
