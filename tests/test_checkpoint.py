"""Checkpoints leave out a TrainState's frozen parameters and take them back from the target.

Workload: a tiny GPT-2 (vocabulary 4096, so the frozen embedding dominates the state's bytes)
whose top block and final norm train (``train_top=1``); the state carries a value head in
``extra`` and an EMA anchor, as vBoN's PPO and BOND states do.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from _train_script import TX, batch_at, train_step

from bonjax import sharding as shd
from bonjax.models import DecoderLM, GPT2Config
from bonjax.training.checkpoint import Checkpointer, abstract_like
from bonjax.training.loop import train_loop
from bonjax.training.state import TrainState, split_trainable
from bonjax.training.update import apply_updates

CONFIG = GPT2Config.tiny(vocab_size=4096)


def make_state(key: int, mesh=None, extras: bool = True) -> TrainState:
    """A fresh state from the reference of seed 0; ``key`` seeds the value head and the RNG.

    ``extras``: with a value head and an anchor.
    """
    lm, params = DecoderLM.init(CONFIG, jax.random.key(0))
    if mesh is not None:
        params = shd.shard_params(params, mesh)
    trainable, frozen = split_trainable(params, lm.top_blocks_filter(1))
    trainable, frozen = jax.tree.map(jnp.copy, (trainable, frozen))
    if not extras:
        return TrainState.create(trainable, frozen, TX, jax.random.key(key))
    head = {"w_D": jax.random.normal(jax.random.key(key), (CONFIG.d_model,))}
    return TrainState.create(trainable, frozen, TX, jax.random.key(key), extra={"head": head},
                             anchor=jax.tree.map(jnp.copy, trainable))


def trained(state: TrainState) -> TrainState:
    """``state`` after one update with random gradients and an anchor moved off the policy."""
    leaves, tree = jax.tree.flatten({"params": state.params, **state.extra})
    keys = jax.random.split(jax.random.key(7), len(leaves))
    grads = tree.unflatten([jax.random.normal(k, x.shape)
                            for k, x in zip(keys, leaves, strict=True)])
    state, metrics = apply_updates(state, grads, TX, jnp.float32(1.0))
    assert int(metrics["skipped"]) == 0
    return state.replace(anchor=jax.tree.map(lambda a: 0.5 * a, state.anchor))


def nbytes(tree) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(tree))


def directory_bytes(path) -> int:
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def saved_paths(step_dir) -> set[tuple[str, ...]]:
    """The key paths of the arrays stored in a checkpoint's ``state`` item."""
    handler = ocp.PyTreeCheckpointHandler()
    try:
        tree = handler.metadata(step_dir / "state").tree
    finally:
        handler.close()
    return leaf_paths(tree)


def leaf_paths(tree) -> set[tuple[str, ...]]:
    def name(k):
        return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))

    return {tuple(name(k) for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)}


def save_with_frozen(directory, step: int, state: TrainState, data_position: int) -> None:
    """A checkpoint in the layout written before frozen parameters were left out."""
    manager = ocp.CheckpointManager(directory)
    record = {"data_position": data_position, "fingerprint": None, "meta": {}}
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               data=ocp.args.JsonSave(record)))
    manager.wait_until_finished()
    manager.close()


def assert_bitwise_equal(a, b):
    leaves_a, tree_a = jax.tree.flatten(jax.device_get(a))
    leaves_b, tree_b = jax.tree.flatten(jax.device_get(b))
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), strict=True)


def test_checkpoint_holds_no_frozen_arrays_and_restore_takes_them_from_the_target(tmp_path):
    mesh = shd.make_mesh((2, 2, 2))
    saved = trained(make_state(1))
    with jax.set_mesh(mesh):
        target = make_state(2, mesh)
    assert nbytes(saved.frozen) > 4 * nbytes(saved.replace(frozen=None))

    with Checkpointer(tmp_path / "new", save_every=1) as ckpt:
        assert ckpt.save(1, saved, data_position=3, meta={"note": "x"})
    save_with_frozen(tmp_path / "old", 1, saved, data_position=3)

    stored = saved_paths(tmp_path / "new" / "1")
    assert not any(p[0] == "frozen" for p in stored)
    assert stored == leaf_paths(saved.replace(frozen=None))
    assert {p for p in saved_paths(tmp_path / "old" / "1") if p[0] == "frozen"}
    new_bytes, old_bytes = (directory_bytes(tmp_path / d / "1") for d in ("new", "old"))
    assert new_bytes < nbytes(saved.frozen) / 2
    assert old_bytes - new_bytes > 0.8 * nbytes(saved.frozen)

    with Checkpointer(tmp_path / "new", save_every=1) as ckpt:
        restored, position, meta = ckpt.restore_latest(target)
    assert position == 3 and meta == {"note": "x"}
    assert_bitwise_equal(restored, saved)
    for got, want in zip(jax.tree.leaves(restored.frozen), jax.tree.leaves(target.frozen),
                         strict=True):
        assert got is want
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(target), strict=True):
        assert got.sharding == want.sharding
    assert not restored.params["blocks"][1]["fc"][...].sharding.is_fully_replicated


def test_checkpoint_written_with_frozen_restores(tmp_path):
    saved = trained(make_state(1))
    save_with_frozen(tmp_path, 4, saved, data_position=9)
    # The target's frozen parameters differ from the stored ones: a concrete target's are kept.
    target = make_state(2)
    target = target.replace(frozen=jax.tree.map(lambda x: x + 1.0, target.frozen))
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        restored, position, _ = ckpt.restore_latest(target)
        assert position == 9
        assert_bitwise_equal(restored.replace(frozen=None), saved.replace(frozen=None))
        assert_bitwise_equal(restored.frozen, target.frozen)
        # An abstract target reads the stored frozen parameters, as before.
        restored, _, _ = ckpt.restore_latest(abstract_like(target))
        assert_bitwise_equal(restored, saved)
        # The next checkpoint of the run is written without them.
        assert ckpt.save(5, restored, data_position=10)
    assert not any(p[0] == "frozen" for p in saved_paths(tmp_path / "5"))


def test_checkpoint_of_layout_1_restores_into_the_one_trainable_tree(tmp_path):
    """Before ``state_layout`` 2 a state without extras had its optimiser state over ``params``
    alone (now over ``{"params": params}``). Such a checkpoint, as that code wrote it (no frozen
    parameters, no ``state_layout``), restores into the new layout: the same arrays."""
    saved = trained(make_state(1, extras=False))
    layout_1 = saved.replace(opt_state=jax.tree.unflatten(
        jax.tree.structure(TX.init(saved.params)), jax.tree.leaves(saved.opt_state)))
    manager = ocp.CheckpointManager(tmp_path)
    record = {"data_position": 7, "fingerprint": None, "meta": {}, "frozen_saved": False}
    manager.save(2, args=ocp.args.Composite(
        state=ocp.args.StandardSave(layout_1.replace(frozen=None)),
        data=ocp.args.JsonSave(record)))
    manager.wait_until_finished()
    manager.close()
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        restored, position, _ = ckpt.restore_latest(make_state(2, extras=False))
    assert position == 7
    assert_bitwise_equal(restored, saved)


def test_restore_without_the_frozen_arrays_names_the_checkpoint(tmp_path):
    saved = make_state(1)
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        ckpt.save(2, saved, data_position=2)
        with pytest.raises(ValueError, match=f"checkpoint {tmp_path / '2'} holds no frozen .*"
                                             "freshly initialised state"):
            ckpt.restore_latest(abstract_like(saved))
        target = make_state(1)
        jax.tree.leaves(target.frozen)[0].delete()
        with pytest.raises(ValueError, match=f"restoring {tmp_path / '2'}: .* were deleted"):
            ckpt.restore_latest(target)


def test_resume_with_frozen_parameters_is_bitwise_equal_to_uninterrupted_run(tmp_path):
    lm, _ = DecoderLM.abstract(CONFIG)
    step_fn = jax.jit(functools.partial(train_step, lm), donate_argnums=0)

    def fresh():
        return make_state(1, extras=False)

    uninterrupted = train_loop(step_fn, fresh(), batch_at, num_steps=4, progress=False)
    with Checkpointer(tmp_path, save_every=2) as ckpt:
        train_loop(step_fn, fresh(), batch_at, num_steps=2, checkpointer=ckpt, progress=False)
    with Checkpointer(tmp_path, save_every=2) as ckpt:
        resumed = train_loop(step_fn, fresh(), batch_at, num_steps=4, checkpointer=ckpt,
                             progress=False)
        assert ckpt.all_steps() == [2, 4]
    assert_bitwise_equal(resumed, uninterrupted)
