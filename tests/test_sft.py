"""Supervised fine-tuning on fixed responses: the loss is the mean NLL of response tokens only,
SFT steps raise their likelihood, and the trainer's sharding and checkpoints serve it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _adam_tolerance import adam_step_atol

from bonjax import sharding as shd
from bonjax.models.decoder import DecoderLM
from bonjax.models.gpt2 import GPT2Config
from bonjax.prompt_shard import step_indices
from bonjax.sampling.scorer import CompletionScores
from bonjax.training.checkpoint import Checkpointer
from bonjax.training.loop import train_loop
from bonjax.training.protocol import Batch
from bonjax.training.sft import ResponseTable, SupervisedFineTuning
from bonjax.training.trainer import OptimizerConfig, Trainer
from bonjax.training.update import trainable_tree

P, L, T = 8, 5, 6
PAD = 0


@pytest.fixture(scope="module")
def model():
    return DecoderLM.init(GPT2Config.tiny(), jax.random.key(0))


def _data(seed=0):
    """Left-padded prompts of 1-5 tokens and responses of 1-6 tokens, ids in [2, 97)."""
    rng = np.random.default_rng(seed)
    prompt_mask = np.arange(L) >= L - rng.integers(1, L + 1, (P, 1))
    prompts = np.where(prompt_mask, rng.integers(2, 97, (P, L)), PAD).astype(np.int32)
    response_mask = np.arange(T) < rng.integers(1, T + 1, (P, 1))
    responses = np.where(response_mask, rng.integers(2, 97, (P, T)), PAD).astype(np.int32)
    return prompts, prompt_mask, ResponseTable.create(responses, response_mask)


def _trainer(model, table, mesh=None, learning_rate=1e-2, **kwargs):
    lm, params = model
    return Trainer(lm, params, SupervisedFineTuning(), None, max_new_tokens=T, data=table,
                   mesh=mesh, optimizer=OptimizerConfig(learning_rate=learning_rate, epochs=1),
                   **kwargs)


def _loss(trainer, state, prompts, prompt_mask):
    batch, _ = trainer.collect(state, jnp.asarray(prompts), jnp.asarray(prompt_mask),
                               jnp.arange(P), jax.random.key(0))
    return float(trainer.loss(trainable_tree(state), state.frozen, batch)[0])


def test_loss_is_the_mean_nll_of_the_response_tokens(model):
    """The trainer's SFT loss equals a plain LM forward over each row's real prompt then
    response, its log-softmax read at the response tokens only, averaged over all of them."""
    lm, params = model
    prompts, prompt_mask, table = _data()
    trainer = _trainer(model, table)
    got = _loss(trainer, trainer.init_state(jax.random.key(1)), prompts, prompt_mask)
    nll, count = 0.0, 0
    for p in range(P):
        x = prompts[p][prompt_mask[p]]
        y = np.asarray(table.tokens_PxT[p])[np.asarray(table.mask_PxT[p])]
        seq = np.concatenate([x, y])[None]
        logits = lm.forward(params, jnp.asarray(seq), jnp.arange(seq.shape[1])[None],
                            jnp.ones_like(seq, bool)).logits_BxTxV[0]
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
        positions = np.arange(len(x) - 1, len(x) + len(y) - 1)  # the logits predicting y
        nll -= float(logp[positions, y].sum())
        count += len(y)
    np.testing.assert_allclose(got, nll / count, rtol=1e-5)


def test_prompt_padding_and_response_padding_leave_the_loss_unchanged(model):
    """Left padding of the prompts and padding after the responses can hold any token: the
    loss is unchanged (the prompt's real tokens are the conditioning, which does change it)."""
    prompts, prompt_mask, table = _data()
    rng = np.random.default_rng(5)
    trainer = _trainer(model, table)
    state = trainer.init_state(jax.random.key(1))
    want = _loss(trainer, state, prompts, prompt_mask)
    noisy_prompts = np.where(prompt_mask, prompts, rng.integers(2, 97, prompts.shape))
    noisy = ResponseTable.create(np.where(table.mask_PxT, table.tokens_PxT,
                                          rng.integers(2, 97, (P, T))), table.mask_PxT)
    assert (noisy_prompts != prompts).any() and (noisy.tokens_PxT != table.tokens_PxT).any()
    got = _loss(_trainer(model, noisy), state, noisy_prompts, prompt_mask)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    changed = prompts.copy()
    changed[:, -1] = (changed[:, -1] + 1) % 97
    assert abs(_loss(trainer, state, changed, prompt_mask) - want) > 1e-4


def test_loss_reads_only_the_response_log_probs():
    """Log-probs outside the response mask (any value, inf and NaN included) change neither the
    loss nor its gradient, which is zero there."""
    _, _, table = _data()
    mask_Bx1xT = np.asarray(table.mask_PxT)[:, None]
    rng = np.random.default_rng(6)
    logp = np.log(rng.uniform(0.05, 1, mask_Bx1xT.shape)).astype(np.float32)
    garbage = np.where(mask_Bx1xT, logp, rng.choice([np.inf, -np.inf, np.nan, 1e6],
                                                    mask_Bx1xT.shape)).astype(np.float32)
    method = SupervisedFineTuning()
    batch = Batch(None, None, None, mask_Bx1xT, None, None)  # the loss reads the mask only

    def loss(lp):
        return method.loss(CompletionScores(lp, None), batch, {})[0].mean()

    np.testing.assert_array_equal(loss(garbage), loss(logp))
    grad = jax.grad(loss)(garbage)
    assert np.all(np.isfinite(grad)) and not np.asarray(grad)[~mask_Bx1xT].any()
    np.testing.assert_allclose(loss(logp), -logp[mask_Bx1xT].mean(), rtol=1e-6)


def test_sft_steps_raise_the_response_likelihood(model):
    prompts, prompt_mask, table = _data()
    trainer = _trainer(model, table)
    state = trainer.init_state(jax.random.key(2))
    before = _loss(trainer, state, prompts, prompt_mask)
    for _ in range(5):
        state, metrics = trainer.step(state, prompts, prompt_mask)
    assert {"loss", "response_tokens", "grad_norm"} <= set(metrics)
    assert _loss(trainer, state, prompts, prompt_mask) < before - 0.5


def test_sharded_update_equals_unsharded(model):
    """One SFT update on 8 fake devices (data x fsdp x tensor) equals one device's."""
    prompts, prompt_mask, table = _data()
    single = _trainer(model, table)
    state = single.init_state(jax.random.key(3))
    batch, _ = single.collect(state, jnp.asarray(prompts), jnp.asarray(prompt_mask),
                              jnp.arange(P), jax.random.key(4))
    expected, expected_metrics = single.update(jax.tree.map(jnp.copy, state), batch)
    mesh = shd.make_mesh((2, 2, 2))
    sharded = _trainer(model, table.on_mesh(mesh), mesh=mesh, jit_collect=True)
    sharded_state = sharded.init_state(jax.random.key(3))
    with jax.set_mesh(mesh):
        sharded_batch, _ = sharded.collect(sharded_state, jnp.asarray(prompts),
                                           jnp.asarray(prompt_mask), jnp.arange(P),
                                           jax.random.key(4))
        got, got_metrics = sharded.update(sharded_state, sharded_batch)
    for a, b in zip(jax.tree.leaves(expected.params), jax.tree.leaves(got.params), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-5,
                                   atol=adam_step_atol(1e-2))
    np.testing.assert_allclose(float(got_metrics["loss"]), float(expected_metrics["loss"]),
                               rtol=1e-5)
    np.testing.assert_allclose(float(got_metrics["grad_norm"]),
                               float(expected_metrics["grad_norm"]), rtol=1e-4)


def test_interrupted_sft_resumes_to_the_uninterrupted_parameters(model, tmp_path):
    """The SFT stage through the resumable loop: 2 steps, a restart, 2 more give the parameters
    of 4 uninterrupted steps (batches of 4 prompts by data position; nothing is sampled)."""
    prompts, prompt_mask, table = _data()
    trainer = _trainer(model, table, learning_rate=3e-3)

    def batch_at(position):
        index_B = step_indices(P, 4, position)
        return prompts[index_B], prompt_mask[index_B], index_B

    def step_fn(state, batch):
        return trainer.step(state, *batch)

    def run(num_steps, directory):
        with Checkpointer(directory, save_every=2, async_save=False) as ckpt:
            return train_loop(step_fn, trainer.init_state(jax.random.key(5)), batch_at,
                              num_steps=num_steps, checkpointer=ckpt, progress=False)

    whole = run(4, tmp_path / "whole")
    run(2, tmp_path / "split")
    resumed = run(4, tmp_path / "split")
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_tables_and_missing_data_are_named(model):
    with pytest.raises(ValueError, match="the response of prompt 1 has no token"):
        ResponseTable.create(np.zeros((2, 3)), np.array([[1, 0, 0], [0, 0, 0]], bool))
    with pytest.raises(ValueError, match=r"\[P, T\].*\(2, 3\) and \(2, 4\)"):
        ResponseTable.create(np.zeros((2, 3)), np.ones((2, 4), bool))
    prompts, prompt_mask, _ = _data()
    trainer = _trainer(model, None)
    with pytest.raises(ValueError, match=r"SupervisedFineTuning trains on a fixed data set: "
                                         r"pass a ResponseTable"):
        trainer.collect(trainer.init_state(jax.random.key(0)), jnp.asarray(prompts),
                        jnp.asarray(prompt_mask), jnp.arange(P), jax.random.key(0))
