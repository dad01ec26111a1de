"""The shared argument checks: integers that are not bools, real numbers, probabilities,
temperatures, concreteness and shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bonjax import checks


def test_integers_exclude_bools_and_include_numpy_integers():
    assert checks.is_int(3) and checks.is_int(np.int64(3)) and checks.is_int(np.uint8(0))
    assert not any(checks.is_int(x) for x in (True, False, 3.0, "3", None, np.float32(3)))
    assert checks.is_real(2.5) and checks.is_real(np.float32(1)) and checks.is_real(4)
    assert not checks.is_real(True) and not checks.is_real("1.0")
    assert checks.check_int("n", np.int32(4), minimum=2) == 4
    for bad in (True, 1, 2.0, None):
        with pytest.raises(ValueError, match=rf"n must be an integer >= 2, got {bad!r}"):
            checks.check_int("n", bad, minimum=2)


def test_scalar_ranges_and_temperature():
    checks.check_unit_interval("p", 0.0)
    checks.check_unit_interval("p", 1.0)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"p must lie in \[0, 1\]"):
            checks.check_unit_interval("p", bad)
    checks.check_positive("beta", 0.1)
    checks.check_positive("beta", 0.0, allow_zero=True)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="beta must be finite and > 0"):
            checks.check_positive("beta", bad)
    checks.check_temperature(0.7)
    checks.check_temperature(np.float32(2))
    for bad in (0.0, -1.0, float("inf"), float("nan"), True, "1"):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            checks.check_temperature(bad)


def test_value_checks_are_skipped_for_values_that_cannot_be_read():
    assert checks.is_concrete(np.ones(2)) and checks.is_concrete(jnp.ones(2))
    assert checks.is_concrete(0.5)
    assert not checks.is_concrete(jax.ShapeDtypeStruct((2,), jnp.float32))
    seen = []
    jax.jit(lambda x: seen.append(checks.is_concrete(x)) or x)(jnp.ones(2))
    assert seen == [False]
    jax.jit(lambda p: checks.check_unit_interval("p", p) or p)(2.0)  # traced: not checked


def test_shape_of_arrays_specs_and_lists():
    assert checks.shape_of(np.zeros((2, 3))) == (2, 3)
    assert checks.shape_of(jax.ShapeDtypeStruct((4,), jnp.int32)) == (4,)
    assert checks.shape_of([[1, 2, 3]]) == (1, 3)


def test_nonzero_check_names_the_value():
    checks.check_nonzero("t", -2.0)
    checks.check_nonzero("t", np.float32(0.5))
    for bad in (0, 0.0, -0.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match=rf"t must be a finite number other than 0, got "
                                             rf"{bad!r}"):
            checks.check_nonzero("t", bad)


def test_config_fields_are_read_and_checked_by_their_dotted_names():
    from bonjax.checks import config_field, config_int

    config = {"train": {"steps": 3, "rate": "x"}}
    assert config_field(config, "train.steps") == 3
    assert config_int(config, "train.steps", 1) == 3
    with pytest.raises(ValueError, match="the config has no field 'train.epochs'"):
        config_field(config, "train.epochs")
    with pytest.raises(ValueError, match=r"config.train.steps must be an integer >= 4, got 3"):
        config_int(config, "train.steps", 4)
