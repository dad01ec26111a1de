"""Matmuls under a dtype policy: low-precision operands, float32 accumulation.

``einsum(spec, x, y)`` of two float32 operands is ``jnp.einsum``. Of two bfloat16 operands it
accumulates in float32 (``preferred_element_type``) and rounds the result to ``out_dtype`` (the
operands' dtype unless given), and its gradients are again bfloat16 einsums accumulated in
float32. Both halves matter on a CPU with bfloat16 matrix units (AMX): on 2 Sapphire Rapids
cores a ``[4096, 640] @ [640, 2048]`` product runs at ~320 GFLOP/s with float32 accumulation
against ~140 in float32 and ~105 with a bfloat16 result, and JAX's own transpose of the mixed
product would multiply the float32 cotangent by float32 upcasts of the operands (a float32
matmul). On GPUs and TPUs the same program is the usual mixed-precision matmul.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["einsum"]


def einsum(spec: str, x: jax.Array, y: jax.Array, out_dtype=None) -> jax.Array:
    """``einsum(spec, x, y)`` accumulated in float32, returned in ``out_dtype`` (default: the
    operands' dtype). The operands must share a dtype. Valid for specs where each index of an
    operand also appears in the other operand or the output (every projection and unembedding).
    """
    if x.dtype != y.dtype:
        raise TypeError(f"einsum operands must share a dtype, got {x.dtype} and {y.dtype}")
    out_dtype = jnp.dtype(out_dtype or x.dtype)
    if x.dtype == jnp.float32:
        return jnp.einsum(spec, x, y).astype(out_dtype)
    return _mixed(spec, out_dtype, x, y)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _mixed(spec: str, out_dtype, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.einsum(spec, x, y, preferred_element_type=jnp.float32).astype(out_dtype)


def _mixed_fwd(spec, out_dtype, x, y):
    return _mixed(spec, out_dtype, x, y), (x, y)


def _mixed_bwd(spec, out_dtype, res, g):
    """Both gradients as einsums of operand-dtype inputs accumulated in float32."""
    del out_dtype
    x, y = res
    ins, out = spec.split("->")
    a, b = ins.split(",")
    g = g.astype(x.dtype)
    dx = jnp.einsum(f"{out},{b}->{a}", g, y, preferred_element_type=jnp.float32)
    dy = jnp.einsum(f"{a},{out}->{b}", x, g, preferred_element_type=jnp.float32)
    return dx.astype(x.dtype), dy.astype(y.dtype)


_mixed.defvjp(_mixed_fwd, _mixed_bwd)
