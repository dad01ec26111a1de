"""The program every process of a multi-process test runs (one process or several, same code).

    python tests/_distributed_worker.py MODES OUT_DIR [--coordinator_address HOST:PORT
        --num_processes N --process_id I --heartbeat_timeout_s S ...]

``MODES`` is a comma-separated list run in order. Every process loads only its own rows of each
global batch (``process_slice``) and builds global arrays on one mesh over all processes'
devices; results are gathered to every host with ``process_allgather`` and written by process 0
to ``OUT_DIR/<mode>.npz``. Modes:

- ``loop``: ``LOOP_STEPS`` vBoN steps under ``train_loop`` with a checkpoint after every step in
  ``OUT_DIR/checkpoints``, resuming from the latest one there. With
  ``BONJAX_TEST_SLEEP_FROM=P`` and ``BONJAX_TEST_SLEEP_S=S`` in a process's environment, loading
  each batch at data position ``>= P`` first sleeps ``S`` seconds, so a test can kill it mid-run.
- ``pieces``: Best-of-N sampling on the toy; one vBoN training step (collect, then update);
  a checkpoint save of the updated state and its restore in a fresh ``Checkpointer``; and
  ``global_array`` on a mesh whose devices are not ordered by process (it must raise).
- ``experiment``: ``run_experiment`` with :func:`experiment_config` into ``OUT_DIR/run``, twice
  (the second call finds the run finished); every process writes what both calls returned to
  ``OUT_DIR/experiment-<process>.json``.

``SIGUSR1`` dumps every thread's Python stack to stderr (for a stuck worker).
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import json
import logging
import os
import signal
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from bonjax import bon, distributed, objectives
from bonjax import sharding as shd
from bonjax.experiment import run_experiment
from bonjax.sampling import Sampler, Temperature
from bonjax.toy import ToyProblem
from bonjax.training import (
    Checkpointer,
    OptimizerConfig,
    Trainer,
    method_for,
    reference_store,
    train_loop,
)
from bonjax.training.checkpoint import abstract_like
from experiments import configs

MESH_SHAPE = (1, 4, 2)  # data x fsdp x tensor: the fsdp axis spans both processes' devices
PROMPTS, SAMPLES, BON_N, NUM_REFS = 8, 4, 4, 32
LOOP_STEPS = 5
MODES = ("loop", "pieces", "experiment")


def gather(tree) -> dict:
    """Every leaf on every host as numpy (a collective: all processes call it)."""
    return multihost_utils.process_allgather(tree, tiled=True)


def flat(prefix: str, tree) -> dict:
    """``{prefix + path: leaf}`` of a pytree of host arrays."""
    return {f"{prefix}{jax.tree_util.keystr(path)}": leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def experiment_config():
    """The tiny experiment (``experiments/configs/test_tiny.py``) on the worker's mesh, vBoN
    only, 4 prompts per sampling call: every global batch, training steps included, takes rows
    0-1 from process 0's devices and rows 2-3 from process 1's, so each of two processes keeps
    half of the training and half of the test prompts."""
    config = configs.get("test_tiny")
    config.mesh_shape = MESH_SHAPE
    config.methods = ("vbon",)
    config.reference.prompts_per_call = 4
    config.eval.prompts_per_call = 4
    return config


def experiment(out_dir: str) -> None:
    """Runs the experiment, then calls it again on the finished run directory (which must reuse
    the cached references and evaluations), recording what both calls returned."""
    config, run_dir = experiment_config(), os.path.join(out_dir, "run")
    calls = []
    for _ in range(2):
        result = run_experiment(config, run_dir, progress=False)
        calls.append({"run_id": result.run_id, "complete": result.complete,
                      "points": [dataclasses.asdict(p) for p in result.points],
                      "kl_k3": {k: list(v) for k, v in result.kl_k3.items()},
                      "bon_gaps": result.bon_gaps})
    path = os.path.join(out_dir, f"experiment-{jax.process_index()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(calls, f)
    os.replace(path + ".tmp", path)


class Job:
    """The toy problem, the mesh over all processes' devices and a vBoN trainer on it."""

    def __init__(self):
        if jax.device_count() != int(np.prod(MESH_SHAPE)):
            raise SystemExit(f"expected {int(np.prod(MESH_SHAPE))} devices in all, found "
                             f"{jax.device_count()}")
        self.mesh = shd.make_mesh(MESH_SHAPE)
        self.rules = shd.ShardingRules()
        self.rows = distributed.process_slice(PROMPTS)
        self.toy = ToyProblem(seed=3)
        self.ref_params = shd.shard_params(self.toy.ref_params, self.mesh, self.rules)
        rewards_PxM = np.random.default_rng(0).normal(size=(PROMPTS, NUM_REFS))
        ref_rewards = reference_store(distributed.global_array(
            rewards_PxM.astype(np.float32), self.mesh, shd.replicated(self.mesh)))
        self.trainer = Trainer(
            self.toy.lm, self.ref_params,
            method_for(objectives.VBoNConfig(n=BON_N), samples_per_prompt=SAMPLES),
            self.toy.reward, max_new_tokens=self.toy.length, ref_rewards=ref_rewards,
            optimizer=OptimizerConfig(learning_rate=1e-2, epochs=2), mesh=self.mesh,
            rules=self.rules, jit_collect=True)

    def prompts_at(self, position: int, mesh=None):
        """The global batch of data position ``position`` (prompt i: token (i + position) % V),
        built from this process's rows only."""
        mesh = mesh or self.mesh
        index_B = np.arange(PROMPTS, dtype=np.int32)
        tokens_Bx1 = ((index_B + position) % self.toy.vocab_size).astype(np.int32)[:, None]
        mask_Bx1 = np.ones_like(tokens_Bx1, dtype=bool)
        return tuple(distributed.global_array(
            x[self.rows], mesh, shd.batch_sharding(mesh, x.ndim, self.rules, PROMPTS))
            for x in (tokens_Bx1, mask_Bx1, index_B))

    def pieces(self, out_dir: str) -> dict:
        toy, trainer = self.toy, self.trainer
        results = {}
        tokens_Bx1, mask_Bx1, index_B = self.prompts_at(0)
        sampler = Sampler(toy.lm, Temperature(1.0), toy.length, self.mesh, self.rules)
        best = bon.best_of_n(sampler, self.ref_params, tokens_Bx1, mask_Bx1, jax.random.key(1),
                             BON_N, toy.reward)
        results.update(gather({
            "bon_tokens_BxNxT": best.samples.tokens_BxNxT,
            "bon_logp_BxNxT": best.samples.logp_BxNxT, "bon_rewards_BxN": best.rewards_BxN,
            "bon_best_B": best.best_B, "bon_best_tokens_BxT": best.tokens_BxT}))

        state = trainer.init_state(jax.random.key(2))
        batch, collect_metrics = trainer.collect(state, tokens_Bx1, mask_Bx1, index_B,
                                                 jax.random.key(3))
        results.update(gather({
            "step_tokens_BxSxT": batch.tokens_BxSxT,
            "step_advantage_BxS": batch.advantage_BxS,
            "step_logp_ref_BxSxT": batch.logp_ref_BxSxT, "step_reward": collect_metrics["reward"]}))
        state, update_metrics = trainer.update(state, batch)
        results.update(flat("updated", gather(state.params)))
        results.update(flat("saved_opt", gather(state.opt_state)))
        results["update_loss"] = gather(update_metrics["loss"])

        ckpt_dir = os.path.join(out_dir, "pieces_checkpoints")
        with Checkpointer(ckpt_dir, save_every=1) as ckpt:
            ckpt.save(1, state, data_position=1, meta={"processes": jax.process_count()})
        with Checkpointer(ckpt_dir, save_every=1) as ckpt:
            restored, position, meta = ckpt.restore_latest(abstract_like(state))
        results["restored_same_shardings"] = np.asarray(all(
            a.sharding == b.sharding
            for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True)))
        results.update(flat("restored", gather(restored.params)))
        results.update(flat("restored_opt", gather(restored.opt_state)))
        results["restored_position"] = np.asarray(position)
        results["restored_meta_processes"] = np.asarray(meta["processes"])

        results.update(self.initialize_results)
        reversed_mesh = shd.make_mesh(MESH_SHAPE, devices=jax.devices()[::-1])
        try:
            self.prompts_at(0, reversed_mesh)
            results["reversed_mesh_error"] = np.asarray("")
        except ValueError as err:
            results["reversed_mesh_error"] = np.asarray(str(err))
        return results

    def loop(self, out_dir: str) -> dict:
        trainer = self.trainer
        sleep_from = int(os.environ.get("BONJAX_TEST_SLEEP_FROM", "-1"))
        sleep_s = float(os.environ.get("BONJAX_TEST_SLEEP_S", "0"))
        positions = []

        def batches(position: int):
            positions.append(position)
            if 0 <= sleep_from <= position:
                time.sleep(sleep_s)
            return self.prompts_at(position)

        def step_fn(state, batch):
            return trainer.step(state, *batch)

        with Checkpointer(os.path.join(out_dir, "checkpoints"), save_every=1,
                          max_to_keep=LOOP_STEPS) as ckpt:
            state = train_loop(step_fn, trainer.init_state(jax.random.key(4)), batches,
                               num_steps=LOOP_STEPS, checkpointer=ckpt, progress=False)
        results = flat("final", gather(state.params))
        results.update(flat("final_opt", gather(state.opt_state)))
        results["final_key"] = gather(state.key)
        results["positions"] = np.asarray(positions)
        return results


def _initialize_again(args, several: bool) -> dict:
    """A second ``initialize`` with the same configuration, then with another process id."""
    again = distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    try:
        distributed.initialize(num_processes=jax.process_count(),
                               process_id=(jax.process_index() + 1) % (jax.process_count() + 1))
        conflict = ""
    except ValueError as err:
        conflict = str(err)
    return {"initialize_several": np.asarray(several), "initialize_again": np.asarray(again),
            "initialize_conflict_error": np.asarray(conflict)}


def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modes", help=f"comma-separated, from {MODES}")
    parser.add_argument("out_dir")
    parser.add_argument("--shutdown_timeout_s", type=int, default=30)
    distributed.add_arguments(parser)
    args = parser.parse_args()
    modes = args.modes.split(",")
    if not set(modes) <= set(MODES):
        parser.error(f"unknown modes {sorted(set(modes) - set(MODES))}; choose from {MODES}")

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s",
                        force=True)
    logging.getLogger("bonjax").setLevel(logging.INFO)  # the experiment's progress lines
    several = distributed.initialize(
        args.coordinator_address, args.num_processes, args.process_id,
        initialization_timeout_s=args.initialization_timeout_s,
        heartbeat_timeout_s=args.heartbeat_timeout_s, shutdown_timeout_s=args.shutdown_timeout_s)
    jax.config.update("jax_default_matmul_precision", "highest")
    job = None
    for mode in modes:
        if mode == "experiment":
            experiment(args.out_dir)
            continue
        if job is None:  # the toy modes' problem, mesh and trainer
            job = Job()
            job.initialize_results = _initialize_again(args, several)
        with jax.set_mesh(job.mesh):
            results = getattr(job, mode)(args.out_dir)
        if distributed.is_main_process():
            path = os.path.join(args.out_dir, f"{mode}.npz")
            np.savez(path + ".tmp.npz", **{k: np.asarray(v) for k, v in results.items()})
            os.replace(path + ".tmp.npz", path)


if __name__ == "__main__":
    main()
