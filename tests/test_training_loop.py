"""The training loop's infrastructure: exact resume after a kill, signals, non-finite steps,
sharded restore, config fingerprints.

Workload (tests/_train_script.py): a tiny GPT-2 trained by next-token cross-entropy on random
tokens with AdamW, 10% of targets dropped by the state's RNG key each step. A resumed run must
reproduce the uninterrupted run's parameters, optimiser state and key bit for bit.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _train_script import CONFIG, TX, batch_at, make_workload, next_token_loss
from flax import nnx

from bonjax import sharding as shd
from bonjax.models import DecoderLM, GPT2Config
from bonjax.training.checkpoint import Checkpointer, abstract_like, config_fingerprint
from bonjax.training.loop import train_loop
from bonjax.training.metrics import MetricsWriter, read_metrics
from bonjax.training.state import TrainState
from bonjax.training.update import apply_updates

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tests", "_train_script.py")
NUM_STEPS, SAVE_EVERY = 10, 3
PROCESS_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def workload():
    return make_workload()


@pytest.fixture(scope="module")
def reference(workload, tmp_path_factory):
    """The uninterrupted run: final state on host and its metrics records."""
    fresh_state, step_fn = workload
    run_dir = tmp_path_factory.mktemp("reference")
    with MetricsWriter(run_dir, tensorboard=False) as writer:
        state = train_loop(step_fn, fresh_state(), batch_at, num_steps=NUM_STEPS, metrics=writer,
                           progress=False)
    return jax.device_get(state), read_metrics(run_dir)


def assert_bitwise_equal(a, b):
    leaves_a, tree_a = jax.tree.flatten(jax.device_get(a))
    leaves_b, tree_b = jax.tree.flatten(jax.device_get(b))
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), strict=True)


def restore_final(directory, abstract):
    with Checkpointer(directory, save_every=1, fingerprint=config_fingerprint(CONFIG)) as ckpt:
        return ckpt.latest_step, ckpt.restore_latest(abstract)


def _step_dirs(directory) -> list[int]:
    """Committed checkpoint steps (orbax renames a step directory into place when committed)."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def _wait_for(predicate, process, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"run exited with {process.returncode} before {what}:\n"
                        f"{out}\n{err[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            process.communicate()
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def _script_env(**extra):
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu", **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    return env


def _launch(run_dir, **env):
    return subprocess.Popen(
        [sys.executable, SCRIPT, str(run_dir), str(NUM_STEPS), str(SAVE_EVERY)],
        env=_script_env(**env), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def test_sigkilled_run_resumes_bitwise_equal_to_uninterrupted_run(tmp_path, reference):
    ref_state, ref_records = reference
    ckpt_dir = tmp_path / "checkpoints"

    # Run 1: every batch from data position 3 on takes 1 s, so after the checkpoint of step 3
    # and the metrics line of step 4 are written, the next checkpoint (step 6) is >= 2 s away.
    killed = _launch(tmp_path, BONJAX_TEST_SLEEP_FROM="3", BONJAX_TEST_SLEEP_S="1")

    def checkpoint_3_and_line_4():
        if 3 not in _step_dirs(ckpt_dir) or not (tmp_path / "metrics.jsonl").exists():
            return False
        return any(r["step"] == 4 for r in read_metrics(tmp_path))

    _wait_for(checkpoint_3_and_line_4, killed, PROCESS_TIMEOUT_S, "checkpoint 3 and step 4")
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=PROCESS_TIMEOUT_S)
    assert killed.returncode == -signal.SIGKILL
    assert _step_dirs(ckpt_dir) == [3], "the kill was meant to land between checkpoints 3 and 6"
    assert [r["step"] for r in read_metrics(tmp_path)][-1] >= 4

    # Run 2: the same command resumes from step 3 at data position 3 and finishes.
    resumed = _launch(tmp_path)
    out, err = resumed.communicate(timeout=PROCESS_TIMEOUT_S)
    assert resumed.returncode == 0, err[-3000:]
    positions = json.loads(out.strip().splitlines()[-1])["positions"]
    assert positions == list(range(3, NUM_STEPS))

    step, (state, data_position, meta) = restore_final(ckpt_dir, abstract_like(ref_state))
    assert step == NUM_STEPS and data_position == NUM_STEPS and meta == {}
    assert_bitwise_equal(state, ref_state)

    # Lines of steps after checkpoint 3 written before the kill were dropped on resume.
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == list(range(1, NUM_STEPS + 1))
    for got, want in zip(records, ref_records, strict=True):
        assert {k: v for k, v in got.items() if k != "time"} == {
            k: v for k, v in want.items() if k != "time"}


@pytest.mark.parametrize("signum, raised", [(signal.SIGTERM, SystemExit),
                                            (signal.SIGINT, KeyboardInterrupt)])
def test_signal_saves_a_checkpoint_then_resume_is_exact(signum, raised, tmp_path, workload,
                                                        reference):
    fresh_state, step_fn = workload
    ref_state, _ = reference

    def batches_then_signal(position):
        if position == 4:
            os.kill(os.getpid(), signum)
        return batch_at(position)

    handler_before = signal.getsignal(signum)
    with Checkpointer(tmp_path, save_every=100) as ckpt:
        with pytest.raises(raised) as info:
            train_loop(step_fn, fresh_state(), batches_then_signal, num_steps=NUM_STEPS,
                       checkpointer=ckpt, progress=False)
        assert ckpt.all_steps() == [5]  # the step whose batch was loading completes
    assert signal.getsignal(signum) is handler_before
    if raised is SystemExit:
        assert info.value.code == 128 + signal.SIGTERM

    with Checkpointer(tmp_path, save_every=100) as ckpt:
        state = train_loop(step_fn, fresh_state(), batch_at, num_steps=NUM_STEPS,
                           checkpointer=ckpt, progress=False)
        assert ckpt.all_steps() == [5, NUM_STEPS]
    assert_bitwise_equal(state, ref_state)


def test_non_finite_loss_skips_the_step_and_the_next_step_proceeds(workload):
    fresh_state, step_fn = workload
    state, m1 = step_fn(fresh_state(), batch_at(0))
    before = jax.device_get(state)
    state, m2 = step_fn(state, batch_at(1, scale=float("nan")))
    assert int(m2["skipped"]) == 1 and np.isnan(float(m2["loss"]))
    assert int(state.step) == 2
    assert_bitwise_equal((state.params, state.opt_state), (before.params, before.opt_state))
    state, m3 = step_fn(state, batch_at(2))
    assert int(m1["skipped"]) == 0 and int(m3["skipped"]) == 0
    assert np.isfinite(float(m3["grad_norm"])) and int(state.step) == 3
    changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != b)), state.params,
                           before.params)
    assert all(jax.tree.leaves(changed))


def test_non_finite_gradient_with_finite_loss_is_skipped():
    lm, params = DecoderLM.init(CONFIG, jax.random.key(0))
    state = TrainState.create(params, nnx.State({}), TX, jax.random.key(1))
    batch = batch_at(0)
    keep = jnp.ones(batch["tokens"].shape, bool)
    loss, grads = jax.jit(jax.value_and_grad(
        lambda p: next_token_loss(lm, p, batch["tokens"], keep, batch["scale"])))(state.params)
    grads = {"params": grads}  # the trainable tree, {"params": ..., **extras}
    update = jax.jit(apply_updates, static_argnums=2)

    def poison(path, g):
        return g.at[3, 5].set(jnp.inf) if "wte" in jax.tree_util.keystr(path) else g

    poisoned = jax.tree_util.tree_map_with_path(poison, grads)
    skipped, metrics = update(state, poisoned, TX, loss)
    assert int(metrics["skipped"]) == 1 and np.isfinite(float(loss))
    assert float(metrics["grad_norm"]) == np.inf
    assert_bitwise_equal((skipped.params, skipped.opt_state), (state.params, state.opt_state))
    assert int(skipped.step) == 1

    stepped, metrics = update(state, grads, TX, loss)
    assert int(metrics["skipped"]) == 0
    np.testing.assert_allclose(float(metrics["grad_norm"]), float(optax.tree.norm(grads)),
                               rtol=1e-6)
    updates, _ = TX.update(grads, state.opt_state, {"params": state.params})
    want = optax.apply_updates(state.params, updates["params"])
    for got, ref in zip(jax.tree.leaves(stepped.params), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)  # jit vs eager rounding


def test_apply_updates_trains_extras_with_the_params():
    _, params = DecoderLM.init(CONFIG, jax.random.key(0))
    head = {"w": jnp.ones((CONFIG.d_model,))}
    state = TrainState.create(params, nnx.State({}), TX, jax.random.key(1), extra={"head": head})
    grads = {"params": jax.tree.map(jnp.ones_like, state.params), "head": {"w": jnp.ones(32)}}
    new, metrics = apply_updates(state, grads, TX, jnp.float32(1.0))
    assert int(metrics["skipped"]) == 0
    assert not np.array_equal(new.extra["head"]["w"], head["w"])
    assert not np.array_equal(new.params["wte"][...], state.params["wte"][...])
    with pytest.raises(ValueError, match=r'\{"params": grads, \*\*extra_grads\}'):
        apply_updates(state, grads["params"], TX, jnp.float32(1.0))
    bad = {"params": grads["params"], "head": {"w": jnp.full(32, jnp.nan)}}
    skipped, metrics = apply_updates(state, bad, TX, jnp.float32(1.0))
    assert int(metrics["skipped"]) == 1
    assert_bitwise_equal((skipped.extra, skipped.params), (state.extra, state.params))


def test_train_loop_reports_skipped_steps(tmp_path, workload, caplog):
    fresh_state, step_fn = workload

    def batches(position):
        return batch_at(position, scale=float("inf") if position == 2 else 1.0)

    with MetricsWriter(tmp_path, tensorboard=False) as writer, \
            caplog.at_level(logging.WARNING, logger="bonjax.training.loop"):
        state = train_loop(step_fn, fresh_state(), batches, num_steps=5, metrics=writer,
                           log_every=2, progress=False)
    assert int(state.step) == 5
    assert [r["skipped"] for r in read_metrics(tmp_path)] == [0, 0, 1, 0, 0]
    assert "step 3 skipped: non-finite loss or gradient" in caplog.text
    assert "1 of 5 steps skipped" in caplog.text


def test_restore_into_sharded_target_gives_sharded_arrays_with_equal_values(tmp_path):
    mesh = shd.make_mesh((2, 2, 2))
    _, params = DecoderLM.init(CONFIG, jax.random.key(0))
    saved = TrainState.create(params, nnx.State({}), TX, jax.random.key(1))
    sharded_params = shd.shard_params(params, mesh)
    with jax.set_mesh(mesh):
        target = TrainState.create(sharded_params, nnx.State({}), TX, jax.random.key(2))
    abstract = abstract_like(target)

    with Checkpointer(tmp_path, save_every=1) as ckpt:
        ckpt.save(1, saved, data_position=1)
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        restored, position, _ = ckpt.restore_latest(abstract)
    assert position == 1
    assert_bitwise_equal(restored, saved)
    pairs = zip(jax.tree.leaves(restored), jax.tree.leaves(abstract), strict=True)
    for got, want in pairs:
        assert got.sharding == want.sharding
    wte = restored.params["wte"][...]
    assert wte.sharding.spec == shd.param_shardings(params, mesh)["wte"].get_value().spec
    assert not wte.sharding.is_fully_replicated and len(wte.addressable_shards) == 8
    mu_wte = restored.opt_state[0].mu["params"]["wte"][...]
    assert not mu_wte.sharding.is_fully_replicated


def test_checkpoint_directory_of_another_config_raises(tmp_path):
    fingerprint = config_fingerprint(CONFIG)
    assert fingerprint == config_fingerprint(GPT2Config.tiny())
    other = config_fingerprint(GPT2Config.tiny(num_layers=3))
    assert other != fingerprint
    state = {"w": jnp.arange(4.0)}
    with Checkpointer(tmp_path, save_every=1, fingerprint=fingerprint) as ckpt:
        assert ckpt.save(1, state, data_position=7, meta={"note": "first"})
    with pytest.raises(ValueError, match=f"another config.*{fingerprint}.*{other}"):
        Checkpointer(tmp_path, save_every=1, fingerprint=other)
    with Checkpointer(tmp_path, save_every=1, fingerprint=fingerprint) as ckpt:
        restored, position, meta = ckpt.restore_latest(abstract_like(state))
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert position == 7 and meta == {"note": "first"}


def test_config_fingerprint_rejects_values_without_a_stable_form():
    with pytest.raises(ValueError, match=r"config.fn"):
        config_fingerprint({"fn": lambda x: x})


def test_metrics_writer_rewind_drops_later_steps_and_a_torn_line(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=True) as writer:
        writer.write_many([(s, {"loss": np.float32(s), "ok": True}) for s in range(1, 6)])
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')
    with MetricsWriter(tmp_path, tensorboard=True) as writer:
        writer.rewind(3)
        writer.write(4, {"loss": 40.0})
        with pytest.raises(ValueError, match="'vec' must be a scalar"):
            writer.write(5, {"vec": np.ones(2)})
    records = read_metrics(tmp_path)
    assert [(r["step"], r["loss"]) for r in records] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]
    assert records[0]["ok"] == 1
    assert any(name.startswith("events.out") for name in os.listdir(tmp_path / "tensorboard"))
