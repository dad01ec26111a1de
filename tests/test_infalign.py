"""InfAlign-CTRL: the calibrated reward against its definition, the 1-D analytic curves (the
identity Phi = log u, beta = 1/(N-1) is exactly Best-of-N), the choice of t, and the trained
method on the enumerable toy."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from bonjax import bon, ecdf
from bonjax import objectives as obj
from bonjax.toy import ToyProblem


@pytest.fixture(scope="module")
def toy():
    return ToyProblem(seed=0)


def test_calibrated_reward_counts_ties_half():
    refs = ecdf.ReferenceRewards.create(jnp.array([[0.0, 1.0, 1.0, 3.0], [2.0, 2.0, 2.0, 2.0]]))
    got = obj.calibrated_reward(refs, jnp.array([[1.0, -5.0, 3.0, 9.0], [2.0, 1.0, 3.0, 2.0]]))
    np.testing.assert_allclose(got, [[0.5, 0.0, 0.875, 1.0], [0.5, 0.0, 1.0, 0.5]])
    pi_ref_Y, reward_Y = np.array([0.25, 0.5, 0.25]), np.array([0.0, 1.0, 1.0])
    np.testing.assert_allclose(obj.exact_calibrated_reward(pi_ref_Y, reward_Y),
                               [0.125, 0.625, 0.625])
    # Without ties C is the reference CDF's midpoint: E_ref[C] = 1/2 exactly.
    p = np.random.default_rng(0).dirichlet(np.ones(30))
    assert p @ obj.exact_calibrated_reward(p, np.random.default_rng(1).normal(size=30)) == (
        pytest.approx(0.5, abs=1e-12))


@pytest.mark.parametrize("n", [2, 4, 8])
def test_log_transform_with_beta_one_over_n_minus_one_is_exactly_best_of_n(n):
    config = obj.CTRLConfig(obj.Logarithm(), beta=1 / (n - 1))
    curves = obj.ctrl_curves(config, n)
    assert curves["kl"] == pytest.approx(bon.bon_kl(n), abs=1e-10)
    assert curves["win_rate"] == pytest.approx(bon.bon_win_rate(n), abs=1e-10)
    # BoN_n of BoN_n is BoN_{n^2}: against BoN_n of pi_ref it wins n^2 / (n^2 + n).
    assert curves["bon_win_rate"] == pytest.approx(n / (n + 1), abs=1e-9)
    from bonjax.objectives.infalign import _log_density

    log_q, _ = _log_density(config)
    for u in [0.01, 0.3, 0.77, 1.0]:
        assert math.exp(log_q(u)) == pytest.approx(n * u ** (n - 1), rel=1e-10)
    # On a discrete space the optimum pi_ref exp(log C / beta) is the vBoN-style tilt C^(N-1).
    rng = np.random.default_rng(2)
    p, r = rng.dirichlet(np.ones(40)), rng.normal(size=40)
    c = obj.exact_calibrated_reward(p, r)
    np.testing.assert_allclose(obj.ctrl_optimal_policy(p, r, config),
                               p * c ** (n - 1) / (p @ c ** (n - 1)), rtol=1e-12)


def test_exponential_transforms_trade_kl_for_inference_time_win_rate():
    bon4 = obj.ctrl_curves(obj.CTRLConfig(obj.Exponential(5.0), beta=20.0), 4)
    won4 = obj.ctrl_curves(obj.CTRLConfig(obj.Exponential(-5.0), beta=0.2), 4)
    assert 0 < bon4["kl"] and 0.5 < bon4["win_rate"] < bon4["bon_win_rate"] < 1
    assert 0 < won4["kl"] and 0.5 < won4["win_rate"]
    # Stronger tilts (smaller beta) cost more KL and win more.
    tighter = obj.ctrl_curves(obj.CTRLConfig(obj.Exponential(5.0), beta=5.0), 4)
    assert tighter["kl"] > bon4["kl"] and tighter["bon_win_rate"] > bon4["bon_win_rate"]
    chosen = obj.choose_exponent(4, kl_budget=float(bon.bon_kl(4)), ts=(1.0, 10.0))
    assert chosen["kl"] == pytest.approx(bon.bon_kl(4), abs=1e-7)
    assert chosen["t"] in (1.0, 10.0) and chosen["bon_win_rate"] > 0.5


def test_bad_settings_raise_value_error_naming_the_value():
    for bad in [0, 0.0, float("inf")]:
        with pytest.raises(ValueError, match=f"t must be a finite number other than 0, got "
                                             f"{bad!r}"):
            obj.Exponential(bad)
    with pytest.raises(ValueError, match="beta must be finite and > 0, got -1.0"):
        obj.CTRLConfig(obj.Exponential(2.0), beta=-1.0)
    with pytest.raises(ValueError, match="kl_budget must be finite and > 0, got 0.0"):
        obj.choose_exponent(4, 0.0)


def test_ctrl_method_moves_the_toy_policy_towards_its_optimum(toy):
    """KL-RL on exp(2 C) with beta = 2 (M = 512 reference rewards for C): measured in 30 steps
    KL(pi || pi*) 0.446 -> 0.27, reward 0.085 -> 0.44 (pi*: 0.88)."""
    from bonjax.toy import train_toward_target
    from bonjax.training.registry import method_for

    config = obj.CTRLConfig(obj.Exponential(2.0), beta=2.0)
    target = obj.ctrl_optimal_policy(toy.probs(toy.ref_params), toy.reward_S, config)
    result = train_toward_target(method_for(config, samples_per_prompt=4), target, steps=30,
                                 num_refs=512, problem=toy)
    print(result)
    assert result["kl_to_target_end"] < 0.85 * result["kl_to_target_start"], result
    assert result["reward_end"] > result["reward_start"] + 0.1, result
