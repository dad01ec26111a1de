"""LoRA adapters: the base model at init, gradients to the adapters only, sharded equals
unsharded, checkpoints, the optimiser state they save."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _adam_tolerance import adam_step_atol
from flax import nnx
from jax.test_util import check_grads

from bonjax import objectives as obj
from bonjax import sharding as shd
from bonjax.models import DecoderLM, Gemma3Config, GPT2Config
from bonjax.models.lora import (
    LoRAAdapter,
    LoRAConfig,
    apply_lora,
    init_lora,
    lora_targets,
    trained_in_full,
)
from bonjax.toy import ToyProblem, train_on_toy
from bonjax.training import Checkpointer
from bonjax.training.registry import method_for
from bonjax.training.state import ADAPTERS
from bonjax.training.trainer import OptimizerConfig, Trainer


@pytest.fixture(scope="module")
def toy():
    return ToyProblem(seed=5)


def _pairs(toy, mesh=None, lora=None):
    """A BoNBoN trainer with adapters: its loss moves them from the first step."""
    return Trainer(toy.lm, toy.ref_params, method_for(obj.BoNBoNConfig(n=4)), toy.reward,
                   max_new_tokens=toy.length, mesh=mesh,
                   optimizer=OptimizerConfig(learning_rate=1e-2, epochs=1,
                                             lora=lora or LoRAConfig(rank=4, alpha=8.0)))


@pytest.mark.parametrize("config, targets, count", [
    (GPT2Config.tiny(), (), 4), (GPT2Config.tiny(), ("qkv",), 1),
    (Gemma3Config.tiny(), (), 7), (Gemma3Config.tiny(), ("q", "v"), 2)])
def test_adapters_start_at_the_base_model_exactly(config, targets, count):
    lm, params = DecoderLM.init(config, jax.random.key(0))
    lora = LoRAConfig(rank=2, targets=targets)
    adapters = init_lora(params, lora, jax.random.key(1))
    assert len(adapters) == count * config.num_layers
    merged = apply_lora(params, adapters)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(merged), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    shapes = lora_targets(params, lora)
    for name, adapter in adapters.items():
        assert adapter.a.shape == (shapes[name][0], 2) and adapter.b.shape == (2, shapes[name][1])


def test_an_adapter_adds_scale_times_a_b_to_its_weight():
    lm, params = DecoderLM.init(Gemma3Config.tiny(), jax.random.key(0))
    adapters = init_lora(params, LoRAConfig(rank=2, alpha=3.0, targets=("o",)), jax.random.key(1))
    name = "blocks.1.o"
    rng = np.random.default_rng(0)
    a = adapters[name]
    adapters = {name: LoRAAdapter(a.a, jnp.asarray(rng.normal(size=a.b.shape), jnp.float32),
                                  a.scale)}
    merged = apply_lora(params, adapters)
    w = np.asarray(params["blocks"][1]["o"].value)
    expected = w + 1.5 * (np.asarray(adapters[name].a) @ np.asarray(adapters[name].b)).reshape(
        w.shape)
    np.testing.assert_allclose(np.asarray(merged["blocks"][1]["o"].value), expected, rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_array_equal(np.asarray(merged["blocks"][0]["o"].value),
                                  np.asarray(params["blocks"][0]["o"].value))


def test_bad_settings_are_named():
    lm, params = DecoderLM.init(GPT2Config.tiny(), jax.random.key(0))
    with pytest.raises(ValueError, match="LoRA target 'q' names no block weight matrix; this "
                                         "model's are fc, out, proj, qkv"):
        lora_targets(params, LoRAConfig(targets=("q",)))
    with pytest.raises(ValueError, match="LoRAConfig.rank must be an integer >= 1, got 0"):
        LoRAConfig(rank=0)
    with pytest.raises(ValueError, match="train_top = 2 and lora set together"):
        OptimizerConfig(train_top=2, lora=LoRAConfig())
    with pytest.raises(ValueError, match="train_in_full name 'lnf' is part of no parameter's "
                                         "path; this model's top-level names are blocks, ln_f"):
        trained_in_full(params, LoRAConfig(train_in_full=("ln_f", "lnf")))
    with pytest.raises(ValueError, match="parameter blocks.0.qkv would both carry a LoRA adapter "
                                         "and train in full"):
        trained_in_full(params, LoRAConfig(train_in_full=("qkv",)))


def test_training_moves_only_the_adapters(toy):
    trainer = _pairs(toy)
    state = trainer.init_state(jax.random.key(0))
    assert not jax.tree.leaves(state.params)  # the base model trains nowhere
    for a, b in zip(jax.tree.leaves(toy.ref_params), jax.tree.leaves(state.full_params()),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for _ in range(3):
        state, metrics = trainer.step(state, *toy.prompts(8))
    assert int(metrics["skipped"]) == 0
    for a, b in zip(jax.tree.leaves(toy.ref_params), jax.tree.leaves(state.frozen), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # frozen, same values
    assert all(float(jnp.abs(ad.b).max()) > 0 for ad in state.extra[ADAPTERS].values())
    p_ref, p_new = toy.probs(toy.ref_params), toy.probs(state.full_params())
    assert toy.kl(p_new, p_ref) > 1e-4  # the policy moved through its adapters


def test_parameters_named_to_train_in_full_train_next_to_the_adapters(toy):
    trainer = _pairs(toy, lora=LoRAConfig(rank=4, alpha=8.0, train_in_full=("ln_f",)))
    state = trainer.init_state(jax.random.key(0))
    names = [".".join(str(getattr(k, "key", k)) for k in path)
             for path, _ in nnx.to_flat_state(state.params)]
    assert names == ["ln_f.bias", "ln_f.scale"]
    for _ in range(3):
        state, _ = trainer.step(state, *toy.prompts(8))
    ref = {path: v.value for path, v in nnx.to_flat_state(toy.ref_params)}
    frozen = nnx.to_flat_state(state.frozen)
    assert len(frozen) == len(ref) - 2
    for path, v in frozen:  # the rest of the base stays frozen
        np.testing.assert_array_equal(np.asarray(v.value), np.asarray(ref[path]))
    assert float(jnp.abs(state.params["ln_f"]["scale"].value - 1.0).max()) > 0
    assert all(float(jnp.abs(ad.b).max()) > 0 for ad in state.extra[ADAPTERS].values())


def test_on_the_toy_adapters_with_norm_and_embeddings_in_full_approach_full_fine_tuning():
    """vBoN N = 4 on the enumerable toy, 300 steps at lr 3e-3, from KL(pi || pi_BoN) = 1.56:
    rank-8 adapters on every block matrix, with the final norm and the embeddings trained in
    full, end at 0.046-0.096 where training every parameter ends at 0.041-0.047 (seeds 0-2,
    two matmul precisions; a run's sampled trajectory, and so its end, moves with the last bit
    of the arithmetic). The bound of 3x still fails adapters alone, which stop at 0.57 (as full
    fine-tuning of the same block matrices does: on this 32-wide model the logits need the
    final norm and the tied embedding)."""
    def kl_end(**kw):
        return train_on_toy("vbon", n=4, steps=300, learning_rate=3e-3, **kw)["kl_to_bon_end"]

    full = kl_end()
    lora = kl_end(lora=LoRAConfig(rank=8, alpha=16.0, train_in_full=("ln_f", "wte", "wpe")))
    assert full < 0.1 and lora < 3 * full, (full, lora)


def test_the_loss_gradient_with_respect_to_the_adapters_is_correct(toy):
    trainer = _pairs(toy)
    state = trainer.init_state(jax.random.key(1))
    batch, _ = trainer.collect(state, *toy.prompts(4), jnp.arange(4), jax.random.key(2))
    rng = np.random.default_rng(1)
    adapters = {k: LoRAAdapter(a.a, jnp.asarray(0.3 * rng.normal(size=a.b.shape), jnp.float32),
                               a.scale) for k, a in state.extra[ADAPTERS].items()}

    def loss(adapters):
        return trainer.loss({"params": state.params, ADAPTERS: adapters}, state.frozen,
                            batch)[0]

    check_grads(loss, (adapters,), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-3)


def test_a_sharded_lora_update_equals_the_unsharded_one(toy):
    mesh = shd.make_mesh((2, 2, 2))
    single, sharded = _pairs(toy), _pairs(toy, mesh)
    state = single.init_state(jax.random.key(3))
    batch, _ = single.collect(state, *toy.prompts(8), jnp.arange(8), jax.random.key(4))
    expected, _ = single.update(state, batch)
    sharded_state = sharded.init_state(jax.random.key(3))
    with jax.set_mesh(mesh):
        got, _ = sharded.update(sharded_state, batch)
    for a, b in zip(jax.tree.leaves(expected.extra[ADAPTERS]), jax.tree.leaves(
            got.extra[ADAPTERS]), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-5,
                                   atol=adam_step_atol(1e-2))


def test_adapters_checkpoint_and_restore(toy, tmp_path):
    trainer = _pairs(toy)
    state = trainer.init_state(jax.random.key(5))
    state, _ = trainer.step(state, *toy.prompts(8))
    with Checkpointer(tmp_path / "ckpt", save_every=1) as ckpt:
        ckpt.save(1, state, data_position=8)
        ckpt.wait()
    with Checkpointer(tmp_path / "ckpt", save_every=1) as ckpt:
        restored, position, _ = ckpt.restore_latest(trainer.init_state(jax.random.key(6)))
    assert position == 8 and int(restored.step) == int(state.step) == 1
    for a, b in zip(jax.tree.leaves(state.extra), jax.tree.leaves(restored.extra), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_an_ema_anchor_with_adapters_is_refused(toy):
    with pytest.raises(ValueError, match="anchor_eta = 0.02.*not LoRA adapters"):
        Trainer(toy.lm, toy.ref_params, method_for(obj.JBONDConfig()), toy.reward,
                optimizer=OptimizerConfig(lora=LoRAConfig()))


def test_adapters_hold_a_fraction_of_the_optimizer_state():
    """Adam's moments cover the adapters only: measured on a Gemma 3 config, rank 8."""
    config = Gemma3Config.tiny(d_model=256, mlp_dim=1024, head_dim=64, vocab_size=512)
    lm, params = DecoderLM.init(config, jax.random.key(0))
    tx = OptimizerConfig().make()
    full = sum(x.nbytes for x in jax.tree.leaves(tx.init(params)))
    adapters = init_lora(params, LoRAConfig(rank=8), jax.random.key(1))
    lora = sum(x.nbytes for x in jax.tree.leaves(tx.init(adapters)))
    assert lora < 0.1 * full
