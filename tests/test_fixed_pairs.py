"""BoNBoN, DPO and IPO on fixed best-vs-worst pairs: the online method's batch and loss for the
same draws, rows by prompt index, compiled and sharded like the other methods."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _adam_tolerance import adam_step_atol

from bonjax import objectives as obj
from bonjax import sharding as shd
from bonjax.sampling import Sampler, Temperature
from bonjax.toy import ToyProblem
from bonjax.training.algorithms import PreferencePairs
from bonjax.training.fixed_pairs import FixedPairs, PairTable
from bonjax.training.reference_pool import reference_pool
from bonjax.training.trainer import OptimizerConfig, Trainer
from bonjax.training.update import trainable_tree

P, n = 8, 4
OBJECTIVES = [obj.BoNBoNConfig(n=n, alpha=0.2), obj.BoNBoNConfig(n=n, alpha=1.0),
              obj.DPOConfig(beta=0.3), obj.IPOConfig(beta=0.3),
              obj.DPOConfig(beta=0.3, length_normalised=True),
              obj.IPOConfig(beta=0.3, length_normalised=True)]
IDS = ["bonbon", "sft_on_best", "dpo", "ipo", "dpo_norm", "ipo_norm"]


@pytest.fixture(scope="module")
def toy():
    return ToyProblem(seed=3)


@pytest.fixture(scope="module")
def pool(toy):
    """P prompts in one chunk of P, n samples in one chunk of n: the pool's draws are the
    sampler's ``sample(ref, prompts, fold_in(fold_in(key, 0), 0), n)``, PreferencePairs' own."""
    tokens_PxL, mask_PxL = toy.prompts(P)
    return reference_pool(Sampler(toy.lm, Temperature(1.0), toy.length), toy.ref_params,
                          toy.reward, np.asarray(tokens_PxL), np.asarray(mask_PxL), n,
                          jax.random.key(7), ns=(2, n), model_id="toy", reward_id="toy",
                          prompts_per_call=P, samples_per_call=n, progress=False)


def _trainer(toy, method, data=None, mesh=None, **kwargs):
    return Trainer(toy.lm, toy.ref_params, method, toy.reward, max_new_tokens=toy.length,
                   optimizer=OptimizerConfig(learning_rate=1e-2, epochs=1), data=data, mesh=mesh,
                   **kwargs)


@pytest.mark.parametrize("objective", OBJECTIVES, ids=IDS)
def test_fixed_pairs_loss_equals_preference_pairs_loss_on_the_same_pairs(toy, pool, objective):
    """The online method, drawing the pool's samples (same key), collects the same batch, and
    the fixed-pair method's loss on it is PreferencePairs' loss, value and metrics."""
    fixed = _trainer(toy, FixedPairs(objective), data=pool.pairs(n))
    online = _trainer(toy, PreferencePairs(objective, n=n))
    state = fixed.init_state(jax.random.key(0))
    prompts = toy.prompts(P)
    batch, metrics = fixed.collect(state, *prompts, jnp.arange(P), jax.random.key(99))
    draws_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(7), 0), 0)
    online_batch, online_metrics = online.collect(state, *prompts, jnp.arange(P), draws_key)
    for name in ("tokens_BxSxT", "mask_BxSxT", "logp_ref_BxSxT", "logp_old_BxSxT"):
        np.testing.assert_array_equal(getattr(batch, name), getattr(online_batch, name), name)
    for name in ("reward_best", "reward_worst"):
        assert float(metrics[name]) == float(online_metrics[name])
    trainable = trainable_tree(state)
    (loss, aux), (online_loss, online_aux) = (
        t.loss(trainable, state.frozen, batch) for t in (fixed, online))
    np.testing.assert_allclose(float(loss), float(online_loss), rtol=1e-6)
    np.testing.assert_allclose(float(aux["log_ratio_margin"]),
                               float(online_aux["log_ratio_margin"]), rtol=1e-6, atol=1e-7)


def test_collect_reads_the_rows_of_the_step_prompts_whatever_the_key(toy, pool):
    pairs = pool.pairs(n)
    trainer = _trainer(toy, FixedPairs(obj.IPOConfig()), data=pairs)
    state = trainer.init_state(jax.random.key(1))
    index_B = jnp.array([3, 0, 3, 7])
    batch, _ = trainer.collect(state, *toy.prompts(4), index_B, jax.random.key(2))
    again, _ = trainer.collect(state, *toy.prompts(4), index_B, jax.random.key(3))
    np.testing.assert_array_equal(batch.tokens_BxSxT, pairs.tokens_Px2xT[np.asarray(index_B)])
    np.testing.assert_array_equal(batch.logp_ref_BxSxT, pairs.logp_ref_Px2xT[[3, 0, 3, 7]])
    np.testing.assert_array_equal(again.tokens_BxSxT, batch.tokens_BxSxT)
    with pytest.raises(ValueError, match=r"prompt indices \[0, 8\] lie outside the data set of "
                                         r"8 prompts"):
        trainer.collect(state, *toy.prompts(2), jnp.array([0, 8]), jax.random.key(2))


def test_missing_or_mismatched_data_is_named(toy, pool):
    state = _trainer(toy, FixedPairs(obj.DPOConfig())).init_state(jax.random.key(0))
    args = (state, *toy.prompts(2), jnp.arange(2), jax.random.key(0))
    with pytest.raises(ValueError, match=r"FixedPairs trains on a fixed data set: pass a "
                                         r"PairTable as Trainer\(data=...\), got NoneType"):
        _trainer(toy, FixedPairs(obj.DPOConfig())).collect(*args)
    with pytest.raises(ValueError, match="BoNBoNConfig.n = 8 must equal the n = 4"):
        _trainer(toy, FixedPairs(obj.BoNBoNConfig(n=8)), data=pool.pairs(n)).collect(*args)
    with pytest.raises(ValueError, match="FixedPairs takes BoNBoNConfig, DPOConfig or IPOConfig"):
        FixedPairs(obj.VBoNConfig(n=4))
    z = np.zeros((3, 2, 5))
    with pytest.raises(ValueError, match=r"\[P, 2, T\].*\(3, 2, 5\), \(3, 2, 4\)"):
        PairTable.create(z, np.ones((3, 2, 4), bool), z, np.zeros((3, 2)), 4)
    mask = np.ones_like(z, bool)
    mask[1, 1] = False
    with pytest.raises(ValueError, match="prompt 1 of the pair table has a completion without"):
        PairTable.create(z, mask, z, np.zeros((3, 2)), 4)


def test_compiled_rollout_equals_eager(toy, pool):
    """With ``jit_collect`` the table is an argument of the compiled rollout, not a constant."""
    pairs = pool.pairs(n)
    eager = _trainer(toy, FixedPairs(obj.IPOConfig()), data=pairs, jit_collect=False)
    compiled = _trainer(toy, FixedPairs(obj.IPOConfig()), data=pairs, jit_collect=True)
    state = eager.init_state(jax.random.key(1))
    index_B = jnp.array([5, 1, 2, 6])
    want, _ = eager.collect(state, *toy.prompts(4), index_B, jax.random.key(2))
    got, _ = compiled.collect(state, *toy.prompts(4), index_B, jax.random.key(2))
    jax.tree.map(np.testing.assert_array_equal, got, want)
    assert compiled._context_arrays()["data"] is pairs  # an argument of the compiled rollout


def test_sharded_update_equals_unsharded(toy, pool):
    """One IPO update on 8 fake devices, its batch gathered by the compiled rollout from the
    table replicated over the mesh, equals one device's update."""
    pairs = pool.pairs(n)
    single = _trainer(toy, FixedPairs(obj.IPOConfig(beta=0.3)), data=pairs)
    state = single.init_state(jax.random.key(2))
    batch, _ = single.collect(state, *toy.prompts(P), jnp.arange(P), jax.random.key(3))
    expected, expected_metrics = single.update(jax.tree.map(jnp.copy, state), batch)

    mesh = shd.make_mesh((2, 2, 2))
    sharded = _trainer(toy, FixedPairs(obj.IPOConfig(beta=0.3)), data=pairs.on_mesh(mesh),
                       mesh=mesh, jit_collect=True)
    sharded_state = sharded.init_state(jax.random.key(2))
    with jax.set_mesh(mesh):
        sharded_batch, _ = sharded.collect(sharded_state, *toy.prompts(P), jnp.arange(P),
                                           jax.random.key(3))
        got, got_metrics = sharded.update(sharded_state, sharded_batch)
    assert not sharded_batch.tokens_BxSxT.sharding.is_fully_replicated
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(sharded_batch),
                 jax.device_get(batch))
    for a, b in zip(jax.tree.leaves(expected.params), jax.tree.leaves(got.params), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-5,
                                   atol=adam_step_atol(1e-2))
    np.testing.assert_allclose(float(got_metrics["loss"]), float(expected_metrics["loss"]),
                               rtol=1e-5, atol=1e-6)


def test_epochs_on_fixed_pairs_raise_the_margin(toy, pool):
    """A few IPO steps on the same fixed pairs move the log-ratio margin towards 1/(2 beta)."""
    trainer = _trainer(toy, FixedPairs(obj.IPOConfig(beta=0.5)), data=pool.pairs(n))
    state = trainer.init_state(jax.random.key(4))
    margins = []
    for _ in range(4):
        state, metrics = trainer.step(state, *toy.prompts(P))
        margins.append(float(metrics["log_ratio_margin"]))
    assert margins[0] == pytest.approx(0.0, abs=1e-5)  # the policy starts at pi_ref
    assert margins[-1] > margins[0] + 0.1
