"""``matmul.einsum``: float32 operands give ``jnp.einsum`` exactly; bfloat16 operands give the
float32 product of the rounded operands (accumulated in float32, rounded once), and gradients
that are the float32 gradients of the rounded operands within bfloat16 rounding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bonjax.models import matmul

SPECS = [("btd,df->btf", (2, 3, 8), (8, 5)), ("btd,vd->btv", (2, 3, 8), (7, 8))]


def _operands(x_shape, y_shape, dtype):
    kx, ky = jax.random.split(jax.random.key(0))
    return (jax.random.normal(kx, x_shape).astype(dtype),
            jax.random.normal(ky, y_shape).astype(dtype))


@pytest.mark.parametrize("spec,x_shape,y_shape", SPECS)
def test_float32_is_plain_einsum(spec, x_shape, y_shape):
    x, y = _operands(x_shape, y_shape, jnp.float32)
    np.testing.assert_array_equal(matmul.einsum(spec, x, y), jnp.einsum(spec, x, y))


@pytest.mark.parametrize("spec,x_shape,y_shape", SPECS)
@pytest.mark.parametrize("out_dtype", [None, jnp.float32])
def test_bfloat16_accumulates_in_float32(spec, x_shape, y_shape, out_dtype):
    x, y = _operands(x_shape, y_shape, jnp.bfloat16)
    out = matmul.einsum(spec, x, y, out_dtype=out_dtype)
    assert out.dtype == (out_dtype or jnp.bfloat16)
    exact = jnp.einsum(spec, x.astype(jnp.float32), y.astype(jnp.float32),
                       precision=jax.lax.Precision.HIGHEST)
    if out_dtype is None:  # one rounding of the float32 sum
        np.testing.assert_array_equal(out, exact.astype(jnp.bfloat16))
    else:
        np.testing.assert_allclose(out, exact, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec,x_shape,y_shape", SPECS)
def test_bfloat16_gradients_match_float32_of_rounded_operands(spec, x_shape, y_shape):
    x, y = _operands(x_shape, y_shape, jnp.bfloat16)
    out_shape = jnp.einsum(spec, x, y).shape
    w = jax.random.normal(jax.random.key(1), out_shape)

    def loss(mm, a, b):
        return jnp.sum(w * mm(spec, a, b).astype(jnp.float32))

    gx, gy = jax.grad(lambda a, b: loss(lambda *s: matmul.einsum(*s, out_dtype=jnp.float32),
                                        a, b), (0, 1))(x, y)
    assert gx.dtype == gy.dtype == jnp.bfloat16
    fx, fy = jax.grad(lambda a, b: loss(jnp.einsum, a, b), (0, 1))(
        x.astype(jnp.float32), y.astype(jnp.float32))
    # two roundings (the cotangent's and the gradient's), each at most u = 2^-8 relative to
    # sums whose terms may exceed the result: 12 u of the largest gradient entry
    for g, f in ((gx, fx), (gy, fy)):
        atol = 12 * 2.0 ** -8 * float(jnp.max(jnp.abs(f)))
        np.testing.assert_allclose(np.asarray(g, np.float32), f, atol=atol)


def test_mixed_operand_dtypes_are_refused():
    x, y = _operands((2, 3, 8), (8, 5), jnp.float32)
    with pytest.raises(TypeError, match="bfloat16"):
        matmul.einsum("btd,df->btf", x, y.astype(jnp.bfloat16))
