"""PPO with a value head: the loss against its definition, limiting cases, gradients, the
trainer with a value head (sharded equals unsharded), and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _adam_tolerance import adam_step_atol

from bonjax import objectives as obj
from bonjax import sharding as shd
from bonjax.sampling import CompletionScores
from bonjax.toy import ToyProblem
from bonjax.training import PPO, Trainer, init_value_head, method_for, value_head_apply
from bonjax.training.ppo import whiten
from bonjax.training.protocol import Batch
from bonjax.training.reference import reference_store
from bonjax.training.trainer import OptimizerConfig


def _batch(rng, B=3, S=2, T=5):
    """A collected batch and its per-token rewards ``[B, S, T]``."""
    lengths = rng.integers(1, T + 1, (B, S))
    mask = np.arange(T) < lengths[..., None]
    f = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    logp_old = np.where(mask, -np.abs(f(B, S, T)), 0.0).astype(np.float32)
    batch = Batch(jnp.zeros((B, 2), jnp.int32), jnp.ones((B, 2), bool),
                  jnp.zeros((B, S, T), jnp.int32), jnp.asarray(mask), jnp.asarray(logp_old),
                  jnp.asarray(logp_old - 0.1))
    return batch, jnp.asarray(f(B, S, T) * mask)


def test_with_values_is_monte_carlo_return_minus_value_at_lambda_1():
    """gamma = lambda = 1: A_t = sum_{t' >= t} r_t' - V_t and the value target is the return."""
    rng = np.random.default_rng(0)
    batch, reward = _batch(rng)
    value = jnp.asarray(rng.normal(size=batch.mask_BxSxT.shape).astype(np.float32))
    ppo = PPO(obj.KLRLConfig(), lam=1.0, whiten_advantages=False)
    out, metrics = ppo.with_values(batch, reward, value)
    mask = np.asarray(batch.mask_BxSxT)
    r = np.asarray(out.reward_BxSxT)
    to_go = np.flip(np.cumsum(np.flip(r, -1), -1), -1) * mask
    np.testing.assert_allclose(out.value_target_BxSxT, to_go, atol=1e-5)
    np.testing.assert_allclose(out.advantage_BxSxT, (to_go - np.asarray(value)) * mask,
                               atol=1e-5)
    np.testing.assert_allclose(out.value_old_BxSxT, np.asarray(value) * mask)
    G, V = to_go[mask], np.asarray(value)[mask]
    np.testing.assert_allclose(float(metrics["value_explained_variance"]),
                               1 - np.var(G - V) / np.var(G), rtol=1e-4)


def test_whiten_has_zero_mean_unit_variance_on_the_mask():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, (4, 6)).astype(np.float32)
    mask = rng.random((4, 6)) < 0.6
    w = np.asarray(whiten(jnp.asarray(x), jnp.asarray(mask)))
    np.testing.assert_allclose(w[mask].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(w[mask].std(), 1.0, atol=1e-4)
    assert (w[~mask] == 0).all()


def test_loss_matches_definition_and_value_gradient():
    """The loss equals the clipped surrogate plus c_v times the clipped value loss (numpy), and
    its gradient in V is c_v (V - G) per token inside the value clip range (and 0 beyond it,
    where the clipped branch is larger)."""
    rng = np.random.default_rng(2)
    ppo = PPO(obj.KLRLConfig(), value_coef=0.5, value_clip_eps=0.2, whiten_advantages=False)
    batch, _ = ppo.with_values(*_batch(rng), jnp.asarray(rng.normal(size=(3, 2, 5)),
                                                         jnp.float32))
    mask = np.asarray(batch.mask_BxSxT)
    logp = jnp.asarray(np.asarray(batch.logp_old_BxSxT) + 0.3 * rng.normal(size=mask.shape)
                       * mask, jnp.float32)
    value = jnp.asarray(np.asarray(batch.value_old_BxSxT) + rng.normal(0, 0.3, mask.shape)
                        * mask, jnp.float32)
    loss, metrics = ppo.loss_from_values(logp, value, batch)
    hidden = jnp.zeros((*mask.shape, 4)).at[..., 0].set(value)  # a head that reads feature 0
    head = init_value_head(4).replace(w_D=jnp.asarray([1.0, 0.0, 0.0, 0.0]))
    np.testing.assert_array_equal(
        ppo.loss(CompletionScores(logp, hidden), batch, {"value_head": head})[0], loss)

    ratio = np.exp(np.asarray(logp) - np.asarray(batch.logp_old_BxSxT))
    A = np.asarray(batch.advantage_BxSxT)
    pg = -np.minimum(ratio * A, np.clip(ratio, 0.8, 1.2) * A) * mask
    v, vo, G = (np.asarray(x) for x in (value, batch.value_old_BxSxT,
                                         batch.value_target_BxSxT))
    vc = vo + np.clip(v - vo, -0.2, 0.2)
    vl = 0.5 * np.maximum((v - G) ** 2, (vc - G) ** 2) * mask
    expected = pg.sum(-1).mean(-1) + 0.5 * vl.sum(-1).mean(-1)
    np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-6)

    grad = np.asarray(jax.grad(lambda v: ppo.loss_from_values(logp, v, batch)[0].sum())(value))
    unclipped = (v - G) ** 2 >= (vc - G) ** 2
    expected_grad = np.where(unclipped, 0.5 * (v - G) / 2, 0.0) * mask  # mean over S = 2
    np.testing.assert_allclose(grad, expected_grad, atol=1e-5)
    assert 0 < float(metrics["value_clip_fraction"]) < 1


def test_value_head_reads_hidden_states():
    head = init_value_head(4)
    assert float(jnp.abs(value_head_apply(head, jnp.ones((2, 3, 4)))).max()) == 0.0
    head = head.replace(w_D=jnp.arange(4.0), b=jnp.asarray(1.0))
    np.testing.assert_allclose(value_head_apply(head, jnp.ones((2, 4))), [7.0, 7.0])


@pytest.fixture(scope="module")
def toy():
    return ToyProblem(seed=3)


def _trainer(toy, objective, mesh=None, prompts=8, learning_rate=1e-2):
    rng = np.random.default_rng(0)
    ref = reference_store(rng.normal(size=(prompts, 32)).astype(np.float32))
    return Trainer(toy.lm, toy.ref_params, method_for(objective, "ppo", samples_per_prompt=2),
                   toy.reward, max_new_tokens=toy.length, ref_rewards=ref, mesh=mesh,
                   optimizer=OptimizerConfig(learning_rate=learning_rate, epochs=2))


def test_trainer_trains_the_value_head_towards_the_returns(toy):
    """The value head is PPO's extra (``state.extra``), is covered by the optimiser, and learns: its
    value loss (starting from all-zero values) falls by a factor of 3 within 20 rollouts
    (measured: 1.81 at the first step, 0.05-0.36 from step 8 on)."""
    trainer = _trainer(toy, obj.VBoNConfig(n=4))
    state = trainer.init_state(jax.random.key(0))
    assert set(state.extra) == {"value_head"}
    history = []
    for _ in range(20):
        state, metrics = trainer.step(state, *toy.prompts(8))
        history.append({k: float(v) for k, v in metrics.items()})
    assert history[0]["value"] == 0.0
    assert float(jnp.abs(state.extra["value_head"].w_D).max()) > 0
    late = np.mean([h["value_loss"] for h in history[-5:]])
    assert late < history[0]["value_loss"] / 3, [h["value_loss"] for h in history]
    assert {"policy_loss", "value_loss", "value_clip_fraction", "value_explained_variance",
            "log_F", "kl_k1"} <= set(metrics)


def test_sharded_ppo_update_equals_unsharded(toy):
    """One PPO gradient step (policy and value head) on 8 fake devices equals one device, to
    2e-5. (Adam's first step is about ``lr * g / |g|``: for entries whose gradient is near 0 it
    amplifies the summation-order rounding of ``g``; the step size 1e-3 keeps that below the
    tolerance.)"""
    single = _trainer(toy, obj.KLRLConfig(beta=0.1), learning_rate=1e-3)
    state = single.init_state(jax.random.key(2))
    batch, _ = single.collect(state, *toy.prompts(8), jnp.arange(8), jax.random.key(3))
    # A non-zero value head, so the value loss and its gradient are not trivial.
    state = state.replace(extra={"value_head": state.extra["value_head"].replace(
        w_D=jnp.linspace(-0.5, 0.5, toy.lm.config.d_model))})
    batch, _ = single.method.with_values(batch, batch.reward_BxSxT, batch.value_old_BxSxT + 0.3)
    expected, expected_metrics = single.update(jax.tree.map(jnp.copy, state), batch)

    mesh = shd.make_mesh((2, 2, 2))
    sharded = _trainer(toy, obj.KLRLConfig(beta=0.1), mesh=mesh, learning_rate=1e-3)
    sharded_state = sharded.init_state(jax.random.key(2))
    sharded_state = sharded_state.replace(extra=jax.device_put(state.extra,
                                                               shd.replicated(mesh)))
    with jax.set_mesh(mesh):
        got, got_metrics = sharded.update(sharded_state, batch)
    for a, b in zip(jax.tree.leaves((expected.params, expected.extra)),
                    jax.tree.leaves((got.params, got.extra)), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-5,
                                   atol=adam_step_atol(1e-3))
    np.testing.assert_allclose(float(got_metrics["loss"]), float(expected_metrics["loss"]),
                               rtol=1e-5, atol=1e-6)


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="samples_per_prompt"):
        PPO(obj.VBoNConfig(n=4), samples_per_prompt=0)
    with pytest.raises(ValueError, match="value_coef"):
        PPO(obj.VBoNConfig(n=4), value_coef=0.0)
    with pytest.raises(ValueError, match="lam"):
        PPO(obj.KLRLConfig(), lam=1.5)
    with pytest.raises(ValueError, match="PPO takes"):
        PPO(obj.BoNBoNConfig(n=4))
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        method_for(obj.VBoNConfig(n=4), "adam")
    with pytest.raises(ValueError, match="optimizer .ppo. does not apply to BoNBoN"):
        method_for(obj.BoNBoNConfig(n=4), "ppo")
    with pytest.raises(KeyError, match="value_head"):
        PPO(obj.KLRLConfig()).loss(CompletionScores(jnp.zeros((1, 1, 2)), jnp.zeros((1, 1, 2, 4))),
                                   None, {})
