"""The trainer: limiting cases, sharded equals unsharded, bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _adam_tolerance import adam_step_atol

from bonjax import objectives as obj
from bonjax import sharding as shd
from bonjax.models import DecoderLM, Gemma3Config
from bonjax.rewards.synthetic import token_residue_reward
from bonjax.toy import ToyProblem
from bonjax.training.algorithms import PolicyGradient, PreferencePairs
from bonjax.training.reference import reference_store
from bonjax.training.registry import method_for
from bonjax.training.trainer import OptimizerConfig, Trainer


@pytest.fixture(scope="module")
def toy():
    return ToyProblem(seed=3)


def _trainer(toy, objective, prompts=8, mesh=None, **method_kwargs):
    ref_rewards = None
    if isinstance(objective, obj.VBoNConfig):
        rng = np.random.default_rng(0)
        ref_rewards = reference_store(rng.normal(size=(prompts, 32)).astype(np.float32))
    return Trainer(toy.lm, toy.ref_params, method_for(objective, **method_kwargs), toy.reward,
                   max_new_tokens=toy.length, ref_rewards=ref_rewards, mesh=mesh,
                   optimizer=OptimizerConfig(learning_rate=1e-2, epochs=1))


def _assert_same_update(got, got_metrics, expected, expected_metrics):
    """A sharded update equals the unsharded one: parameters to 1 % of an Adam step
    (``_adam_tolerance``), the loss to 1e-5 and the gradient norm to 1e-4."""
    for a, b in zip(jax.tree.leaves(expected.params), jax.tree.leaves(got.params), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-5,
                                   atol=adam_step_atol(1e-2))
    np.testing.assert_allclose(float(got_metrics["loss"]), float(expected_metrics["loss"]),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(got_metrics["grad_norm"]),
                               float(expected_metrics["grad_norm"]), rtol=1e-4)


def test_vbon_with_n_1_keeps_the_reference(toy):
    """N = 1: BoN_1 is pi_ref; the return is -KL(pi || pi_ref) = 0 at the start: no gradient.

    (The parameters are not compared: Adam normalises even a rounding-level gradient.)
    """
    trainer = _trainer(toy, obj.VBoNConfig(n=1))
    state = trainer.init_state(jax.random.key(0))
    state, metrics = trainer.step(state, *toy.prompts(8))
    assert abs(float(metrics["return"])) < 1e-5
    assert float(metrics["grad_norm"]) < 1e-4
    four = _trainer(toy, obj.VBoNConfig(n=4))
    _, metrics4 = four.step(four.init_state(jax.random.key(0)), *toy.prompts(8))
    assert float(metrics4["grad_norm"]) > 1e-2  # the same step with N = 4 does move


def test_vbon_step_moves_towards_higher_reward(toy):
    trainer = _trainer(toy, obj.VBoNConfig(n=4))
    state = trainer.init_state(jax.random.key(1))
    r0 = toy.expected_reward(toy.probs(toy.ref_params))
    for _ in range(5):
        state, metrics = trainer.step(state, *toy.prompts(8))
    assert toy.expected_reward(toy.probs(state.full_params())) > r0
    assert {"reward", "log_F", "kl_k1", "kl_k3", "loss", "grad_norm"} <= set(metrics)


@pytest.mark.parametrize("objective", [obj.VBoNConfig(n=4), obj.BoNBoNConfig(n=4),
                                       obj.BONDConfig(n=2)], ids=["vbon", "bonbon", "bond"])
def test_sharded_update_equals_unsharded(toy, objective):
    """One gradient step on 8 fake devices (data x fsdp x tensor) equals one device."""
    single = _trainer(toy, objective)
    state = single.init_state(jax.random.key(2))
    batch, _ = single.collect(state, *toy.prompts(8), jnp.arange(8), jax.random.key(3))
    expected, expected_metrics = single.update(jax.tree.map(jnp.copy, state), batch)

    mesh = shd.make_mesh((2, 2, 2))
    sharded = _trainer(toy, objective, mesh=mesh)
    sharded_state = sharded.init_state(jax.random.key(2))
    assert any(not x.sharding.is_fully_replicated for x in jax.tree.leaves(sharded_state.params))
    with jax.set_mesh(mesh):
        got, got_metrics = sharded.update(sharded_state, batch)
    _assert_same_update(got, got_metrics, expected, expected_metrics)


@pytest.mark.parametrize("objective, chunks", [(obj.VBoNConfig(n=4), 2),
                                               (obj.BoNBoNConfig(n=4), 4)],
                         ids=["vbon-2", "bonbon-pairs-in-gcd-chunks"])
def test_an_update_scored_in_chunks_equals_one_scored_at_once(toy, objective, chunks):
    """``score_chunks``: the same update, with less memory. BoNBoN's batch holds 2 completions
    per prompt, so 4 chunks mean gcd(4, 2) = 2 there; vBoN's holds 4."""
    whole = _trainer(toy, objective)
    state = whole.init_state(jax.random.key(2))
    batch, _ = whole.collect(state, *toy.prompts(8), jnp.arange(8), jax.random.key(3))
    expected, expected_metrics = whole.update(jax.tree.map(jnp.copy, state), batch)
    chunked = dataclasses.replace(whole, score_chunks=chunks)
    got, got_metrics = chunked.update(chunked.init_state(jax.random.key(2)), batch)
    _assert_same_update(got, got_metrics, expected, expected_metrics)


def test_scoring_in_chunks_cuts_the_updates_compiled_memory():
    """A vocabulary of 8,192 words, 4 completions of 32 tokens per prompt: the float32 logits
    dominate the update's temporaries, and 4 chunks keep a quarter of them at a time."""
    lm, params = DecoderLM.init(Gemma3Config.tiny(vocab_size=8192), jax.random.key(0))
    tokens = jnp.full((4, 6), 5, jnp.int32)
    mask = jnp.ones((4, 6), jnp.bool_)
    trainer = Trainer(lm, params, method_for(obj.KLRLConfig(beta=0.1), samples_per_prompt=4),
                      token_residue_reward,
                      max_new_tokens=32, optimizer=OptimizerConfig(epochs=1))
    state = trainer.init_state(jax.random.key(1))
    batch, _ = trainer.collect(state, tokens, mask, jnp.arange(4), jax.random.key(2))
    temp = {}
    for chunks in (1, 4):
        chunked = dataclasses.replace(trainer, score_chunks=chunks)
        args = (state, state.frozen, batch)
        compiled = chunked._compile_update(*args).lower(*args).compile()
        temp[chunks] = compiled.memory_analysis().temp_size_in_bytes
    assert temp[4] < 0.6 * temp[1], temp


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="Trainer.score_chunks must be an integer >= 1, got 0"):
        dataclasses.replace(_trainer(ToyProblem(seed=3), obj.VBoNConfig(n=4)), score_chunks=0)
    with pytest.raises(ValueError, match="samples_per_prompt"):
        PolicyGradient(obj.VBoNConfig(n=4), samples_per_prompt=1)
    with pytest.raises(ValueError, match="n = 1"):
        PreferencePairs(obj.DPOConfig(), n=1)
    with pytest.raises(ValueError, match="alpha"):
        obj.BoNBoNConfig(n=4, alpha=1.5)
    with pytest.raises(ValueError, match="n"):
        obj.BoNBoNConfig(n=1)
    with pytest.raises(ValueError, match="no method"):
        method_for("vbon")
    with pytest.raises(ValueError, match="epochs"):
        OptimizerConfig(epochs=0)


def test_batch_without_completions_is_rejected(toy):
    trainer = _trainer(toy, obj.BoNBoNConfig(n=4))
    state = trainer.init_state(jax.random.key(4))
    batch, _ = trainer.collect(state, *toy.prompts(4), jnp.arange(4), jax.random.key(5))
    empty = batch.replace(mask_BxSxT=batch.mask_BxSxT.at[2].set(False))
    with pytest.raises(ValueError, match="prompt 2 has no completion tokens"):
        trainer.update(state, empty)


def test_eager_rollout_with_a_replicated_reward_updates_on_a_mesh(toy):
    """An eager rollout whose reward comes back replicated (a host-side reward) still feeds the
    update, whose inputs are laid out over the batch axes: the batch is resharded first, and the
    step equals one device's step on the same batch."""
    mesh = shd.make_mesh((2, 2, 2))
    replicated = shd.replicated(mesh)

    def host_reward(*args):
        return jax.device_put(toy.reward(*args), replicated)

    def trainer(reward, mesh=None):
        return Trainer(toy.lm, toy.ref_params, method_for(obj.BONDConfig(n=2)), reward,
                       max_new_tokens=toy.length, mesh=mesh, jit_collect=False,
                       optimizer=OptimizerConfig(learning_rate=1e-2, epochs=1))

    sharded = trainer(host_reward, mesh)
    state = sharded.init_state(jax.random.key(6))
    with jax.set_mesh(mesh):
        batch, _ = sharded.collect(state, *toy.prompts(8), jnp.arange(8), jax.random.key(7))
    assert batch.log_p_le_BxK.sharding.is_equivalent_to(replicated, 2)  # from the reward
    single = trainer(toy.reward)
    host_batch = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), batch)
    expected, expected_metrics = single.update(single.init_state(jax.random.key(6)), host_batch)
    with jax.set_mesh(mesh):
        got, got_metrics = sharded.update(state, batch)
    _assert_same_update(got, got_metrics, expected, expected_metrics)


@pytest.mark.parametrize("objective, best_metric", [
    (obj.BoNBoNConfig(n=8), "reward_best"), (obj.BONDConfig(n=8), "bon_reward")])
def test_a_nan_reward_is_never_the_best_sample(toy, objective, best_metric):
    """The library's one selection rule (``bon.select_best_and_worst``) in each method that
    picks a best sample: NaN ranks below every reward. Every even-numbered sample's reward is
    NaN here, so a plain argmax would pick a NaN sample as the best of 8."""

    def reward(*args):
        r_BxS = toy.reward(*args)
        return r_BxS.at[:, ::2].set(jnp.nan)

    trainer = Trainer(toy.lm, toy.ref_params, method_for(objective, samples_per_prompt=2)
                      if isinstance(objective, obj.BONDConfig) else method_for(objective),
                      reward, max_new_tokens=toy.length,
                      optimizer=OptimizerConfig(learning_rate=1e-2, epochs=1))
    state = trainer.init_state(jax.random.key(11))
    _, metrics = trainer.collect(state, *toy.prompts(8), jnp.arange(8), jax.random.key(12))
    assert np.isfinite(float(metrics[best_metric]))
    if best_metric == "reward_best":
        assert np.isnan(float(metrics["reward_worst"]))  # NaN ranks lowest: it is the worst
