"""Multi-controller JAX: two real processes x 4 CPU devices compute what one process x 8 does.

Every multi-process case starts real processes (``tests/_distributed_worker.py``) that talk
over 127.0.0.1 (coordination service and gloo collectives) on a free port; each loads only its
own rows of every global batch. Two processes against one, with the measured maxima in brackets:

- sampled tokens, rewards, Best-of-N choices, the RNG key, data positions: exactly equal (one
  key for the global batch: the samples do not depend on the process count);
- log-probabilities, advantages, the loss: 1e-6 absolute [3.6e-7];
- parameters and Adam moments after one step: 5e-6 absolute [7.3e-7], except the attention
  key bias. Its exact gradient is 0 (softmax is invariant to adding ``q . b_k`` to every logit
  of a query), so Adam turns rounding noise into steps that differ between the runs; both must
  keep it at noise level, below 1e-3 (a tenth of one learning-rate step);
- a checkpoint restored by two processes: bitwise equal to the state they saved;
- a job killed and restarted, against two processes run uninterrupted: it resumes at its last
  checkpoint and ends bitwise as the uninterrupted run ends, checkpoint by checkpoint (see
  :func:`test_restarted_job_resumes_from_the_last_checkpoint_and_ends_as_uninterrupted`);
- the tiny experiment (``run_experiment``, vBoN) run by two processes, each keeping half of the
  prompts: its reference rewards, Best-of-N points, samples and rewards exactly equal, its
  log-probability-based numbers (training metrics, KL) within 1e-5 (see
  :func:`test_experiment_in_two_processes_equals_one_process`).

Every wait is bounded: subprocess timeouts (every worker is killed as soon as one fails), the
coordinator's initialization timeout and a heartbeat timeout after which a surviving process
terminates with an error. Workers write their output to ``worker-<i>.log`` in their directory.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from _distributed_worker import BON_N, LOOP_STEPS, PROMPTS

from bonjax import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "_distributed_worker.py")

PROCESS_TIMEOUT_S = 240
EXPERIMENT_TIMEOUT_S = 300
HEARTBEAT_TIMEOUT_S = 5
EXPERIMENT_HEARTBEAT_TIMEOUT_S = 20  # three busy processes share the cores
EXPERIMENT_ATOL = 1e-5
FAILURE_BOUND_S = 60  # a survivor of a killed peer must exit well within this
PARAM_ATOL = 5e-6
KEY_BIAS_NOISE = 1e-3
KILL_AFTER = 2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int, **extra) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu", **extra)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    return env


def launch(modes: str, out_dir, processes: int, env_of=lambda i: {},
           heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S) -> list[subprocess.Popen]:
    """``processes`` worker processes running ``modes`` with 8 devices in all; worker i writes
    its output to ``out_dir/worker-<i>.log`` (``proc.log_path``)."""
    if processes == 1:
        commands = [[sys.executable, WORKER, modes, str(out_dir)]]
    else:
        address = f"127.0.0.1:{free_port()}"
        commands = [[sys.executable, WORKER, modes, str(out_dir), "--coordinator_address",
                     address, "--num_processes", str(processes), "--process_id", str(i),
                     "--heartbeat_timeout_s", str(heartbeat_timeout_s),
                     "--initialization_timeout_s", "60"] for i in range(processes)]
    procs = []
    for i, cmd in enumerate(commands):
        log_path = os.path.join(out_dir, f"worker-{i}.log")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, env=_env(8 // processes, **env_of(i)), cwd=REPO,
                                    stdout=log, stderr=subprocess.STDOUT, text=True)
        proc.log_path = log_path
        procs.append(proc)
    return procs


def log_of(proc: subprocess.Popen) -> str:
    with open(proc.log_path) as f:
        return f.read()


def stop(procs: list[subprocess.Popen]) -> None:
    """Kills every process still running and reaps them all."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait()


def finish(procs: list[subprocess.Popen], timeout_s: float = PROCESS_TIMEOUT_S) -> list[str]:
    """Waits for every process; fails, killing them all, as soon as one exits with an error or
    when ``timeout_s`` runs out. Returns their logs."""
    deadline = time.monotonic() + timeout_s
    while True:
        codes = [proc.poll() for proc in procs]
        if all(code == 0 for code in codes):
            return [log_of(proc) for proc in procs]
        failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
        if failed or time.monotonic() > deadline:
            stop(procs)
            why = (f"worker {failed[0]} exited with {codes[failed[0]]}" if failed
                   else f"workers did not finish within {timeout_s} s")
            pytest.fail(why + "".join(f"\n--- worker {i}:\n{log_of(proc)[-4000:]}"
                                      for i, proc in enumerate(procs)))
        time.sleep(0.2)


def run(modes: str, out_dir, processes: int) -> dict[str, dict[str, np.ndarray]]:
    finish(launch(modes, out_dir, processes))
    results = {}
    for mode in modes.split(","):
        with np.load(os.path.join(out_dir, f"{mode}.npz")) as data:
            results[mode] = dict(data)
    return results


def _committed_steps(directory) -> list[int]:
    """Committed checkpoints (orbax renames a step directory into place when committed)."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: one process with 8 devices runs the pieces."""
    return run("pieces", tmp_path_factory.mktemp("one"), 1)


@pytest.fixture(scope="module")
def killed_job(tmp_path_factory):
    """Two processes train with a checkpoint per step; process 1 is SIGKILLed after checkpoint
    ``KILL_AFTER``. Returns the job directory, process 0's fate and its time to failure."""
    job_dir = tmp_path_factory.mktemp("two")
    ckpt_dir = job_dir / "checkpoints"
    # Process 1 stalls before step KILL_AFTER + 1, so process 0 is inside that step's
    # collectives, waiting for it, when it dies.
    procs = launch("loop", job_dir, 2, lambda i: {
        "BONJAX_TEST_SLEEP_FROM": str(KILL_AFTER), "BONJAX_TEST_SLEEP_S": "600"} if i else {})
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while KILL_AFTER not in _committed_steps(ckpt_dir):
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            stop(procs)
            pytest.fail(f"no checkpoint {KILL_AFTER} before a worker exited or timed out:\n"
                        + "\n".join(log_of(p)[-3000:] for p in procs))
        time.sleep(0.05)
    time.sleep(1.0)  # process 0 enters step KILL_AFTER + 1
    procs[1].kill()
    killed_at = time.monotonic()
    try:
        procs[0].wait(timeout=FAILURE_BOUND_S)
    except subprocess.TimeoutExpired:
        stop(procs)
        pytest.fail(f"process 0 still running {FAILURE_BOUND_S} s after its peer was killed")
    time_to_failure = time.monotonic() - killed_at
    procs[1].wait()
    err = log_of(procs[0])
    print(f"\nprocess 0 exited with {procs[0].returncode} {time_to_failure:.1f} s after process "
          f"1 was killed (heartbeat timeout {HEARTBEAT_TIMEOUT_S} s)")
    return {"dir": job_dir, "returncodes": [p.returncode for p in procs], "stderr_0": err,
            "time_to_failure_s": time_to_failure, "steps": _committed_steps(ckpt_dir),
            "wrote_results": os.path.exists(job_dir / "loop.npz")}


@pytest.fixture(scope="module")
def uninterrupted_job(tmp_path_factory):
    """Two processes run the loop from start to end: what the restarted job must reproduce."""
    job_dir = tmp_path_factory.mktemp("uninterrupted")
    return {"dir": job_dir, **run("loop", job_dir, 2)}


@pytest.fixture(scope="module")
def two_processes(killed_job):
    """Both processes restarted in the killed job's directory: the loop resumes, then the
    pieces run."""
    return run("loop,pieces", killed_job["dir"], 2)


def checkpoint_arrays(ckpt_dir, step: int) -> dict[str, np.ndarray]:
    """The state of checkpoint ``step`` in ``ckpt_dir`` as host arrays, by tree path."""
    import orbax.checkpoint as ocp

    path = os.path.join(ckpt_dir, str(step), "state")
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    state = checkpointer.restore(path, restore_args=restore_args)
    return {jax.tree_util.keystr(keys): np.asarray(leaf)
            for keys, leaf in jax.tree_util.tree_leaves_with_path(state)}


def assert_bitwise_equal(got: dict, want: dict, where: str) -> None:
    """The same names, and arrays of the same dtype and shape with the same bytes."""
    assert sorted(got) == sorted(want), where
    for name in sorted(want):
        a, b = np.asarray(got[name]), np.asarray(want[name])
        assert (a.dtype, a.shape) == (b.dtype, b.shape), f"{where}: {name}"
        if a.tobytes() != b.tobytes():
            differ = a.view(np.uint8).reshape(*a.shape, -1) != b.view(np.uint8).reshape(
                *b.shape, -1)
            count = int(differ.any(axis=-1).sum())
            pytest.fail(f"{where}: {name} differs in {count} of {a.size} elements, max |diff| "
                        f"{np.abs(a.astype(np.float64) - b.astype(np.float64)).max():.3g}")


def assert_params_close(got: dict, want: dict, prefix: str) -> None:
    """Leaves named ``prefix[...]`` agree to PARAM_ATOL; the attention key bias (row 1 of
    ``qkv_bias``) is only required to stay below KEY_BIAS_NOISE in both (module docstring)."""
    names = sorted(k for k in want if k.startswith(prefix + "["))
    assert names and names == sorted(k for k in got if k.startswith(prefix + "["))
    for name in names:
        a, b = got[name], want[name]
        if name.endswith("['qkv_bias'].value"):
            assert np.abs(a[1]).max() < KEY_BIAS_NOISE and np.abs(b[1]).max() < KEY_BIAS_NOISE
            a, b = a[[0, 2]], b[[0, 2]]
        np.testing.assert_allclose(a, b, rtol=0, atol=PARAM_ATOL, err_msg=name)


# ----------------------------------------------------------------------------- the module


def test_process_slice_splits_a_global_batch_into_equal_blocks():
    assert [distributed.process_slice(8, p, 2) for p in range(2)] == [slice(0, 4), slice(4, 8)]
    assert distributed.process_slice(6, 2, 3) == slice(4, 6)
    assert distributed.process_slice(5) == slice(0, 5)  # this single process loads everything
    with pytest.raises(ValueError, match="global batch 6 must be a positive multiple of the 4"):
        distributed.process_slice(6, 0, 4)
    with pytest.raises(ValueError, match="process index 2 is not in"):
        distributed.process_slice(8, 2, 2)


def test_global_array_in_one_process_is_the_data_with_the_sharding():
    from bonjax import sharding as shd

    mesh = shd.make_mesh((2, 2, 2))
    data = np.arange(8 * 3, dtype=np.int32).reshape(8, 3)
    array = distributed.global_array(data, mesh, shd.batch_sharding(mesh, 2, batch_size=8))
    np.testing.assert_array_equal(np.asarray(array), data)
    assert array.sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"), None)
    replicated = distributed.global_array(data, mesh, jax.sharding.PartitionSpec())
    assert replicated.sharding.is_fully_replicated
    with pytest.raises(ValueError, match="not on the given mesh"):
        distributed.global_array(data, mesh, shd.replicated(shd.make_mesh((8, 1, 1))))
    with pytest.raises(ValueError, match="Sharding or a PartitionSpec"):
        distributed.global_array(data, mesh, "batch")


def test_process_rows_and_broadcast_in_one_process():
    """One process supplies every row and broadcasts to itself (several processes: the
    experiment tests below)."""
    from bonjax import sharding as shd

    mesh = shd.make_mesh((1, 4, 2))
    assert distributed.process_rows(shd.batch_sharding(mesh, 2, batch_size=8), (8, 3)) \
        == slice(0, 8)
    assert distributed.process_rows(shd.replicated(mesh), (5,)) == slice(0, 5)
    with pytest.raises(ValueError, match="needs a leading"):
        distributed.process_rows(shd.replicated(mesh), ())
    assert distributed.broadcast_json({"a": (1, 2), "b": None}) == {"a": [1, 2], "b": None}


def test_initialize_is_a_no_op_for_one_process_and_names_bad_configuration(monkeypatch):
    for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES,
                 distributed.ENV_PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize() is False
    assert distributed.initialize(num_processes=1) is False
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "1")
    assert distributed.initialize() is False
    assert not jax.distributed.is_initialized()
    with pytest.raises(ValueError, match="process_id is missing"):
        distributed.initialize("127.0.0.1:1234", num_processes=2)
    with pytest.raises(ValueError, match=r"process_id must be an integer in \[0, 2\), got 2"):
        distributed.initialize("127.0.0.1:1234", num_processes=2, process_id=2)
    with pytest.raises(ValueError, match="coordinator_address is missing"):
        distributed.initialize(num_processes=2, process_id=0)
    with pytest.raises(ValueError, match="'host:port', got '127.0.0.1'"):
        distributed.initialize("127.0.0.1", num_processes=2, process_id=0)
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "two")
    with pytest.raises(ValueError, match="BONJAX_NUM_PROCESSES='two' is not an integer"):
        distributed.initialize()
    with pytest.raises(ValueError, match="heartbeat_timeout_s must be"):
        distributed.initialize(heartbeat_timeout_s=0)


def test_argparse_flags_reach_initialize():
    import argparse

    parser = distributed.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--coordinator_address", "10.0.0.1:8476", "--num_processes", "4",
                              "--process_id", "3", "--heartbeat_timeout_s", "30"])
    assert (args.coordinator_address, args.num_processes, args.process_id,
            args.heartbeat_timeout_s) == ("10.0.0.1:8476", 4, 3, 30)
    defaults = parser.parse_args([])
    assert defaults.coordinator_address is None and defaults.initialization_timeout_s == 300


def test_compiled_collect_equals_op_by_op_collect():
    """``Trainer(jit_collect=True)``, the rollout of multi-process jobs, samples the same
    completions as the op-by-op rollout and lays the batch out as the update takes it."""
    from bonjax import objectives
    from bonjax import sharding as shd
    from bonjax.toy import ToyProblem
    from bonjax.training import Trainer, method_for, reference_store

    toy = ToyProblem(seed=3)
    mesh = shd.make_mesh((2, 2, 2))
    store = reference_store(np.random.default_rng(0).normal(size=(8, 32)).astype(np.float32))

    def trainer(jit_collect):
        return Trainer(toy.lm, toy.ref_params, method_for(objectives.VBoNConfig(n=4)),
                       toy.reward, max_new_tokens=toy.length, ref_rewards=store, mesh=mesh,
                       jit_collect=jit_collect)

    eager, compiled = trainer(False), trainer(True)
    state = eager.init_state(jax.random.key(0))
    args = (*toy.prompts(8), jax.numpy.arange(8), jax.random.key(1))
    with jax.set_mesh(mesh):
        want, want_metrics = eager.collect(state, *args)
        got, got_metrics = compiled.collect(state, *args)
    np.testing.assert_array_equal(got.tokens_BxSxT, want.tokens_BxSxT)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                   rtol=0, atol=1e-6)
        assert a.sharding.is_equivalent_to(shd.batch_sharding(mesh, a.ndim, batch_size=8), a.ndim)
    for name in want_metrics:
        np.testing.assert_allclose(got_metrics[name], want_metrics[name], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- two processes


@pytest.mark.slow
def test_best_of_n_in_two_processes_equals_one_process(one_process, two_processes):
    """One key for the global batch: the samples do not depend on the process count."""
    one, two = one_process["pieces"], two_processes["pieces"]
    for name in ("bon_tokens_BxNxT", "bon_rewards_BxN", "bon_best_B", "bon_best_tokens_BxT"):
        np.testing.assert_array_equal(two[name], one[name], err_msg=name)
    np.testing.assert_allclose(two["bon_logp_BxNxT"], one["bon_logp_BxNxT"], rtol=0, atol=1e-6)
    assert len(np.unique(one["bon_tokens_BxNxT"].reshape(PROMPTS * BON_N, -1), axis=0)) > 8


@pytest.mark.slow
def test_vbon_step_in_two_processes_equals_one_process(one_process, two_processes):
    one, two = one_process["pieces"], two_processes["pieces"]
    for name in ("step_tokens_BxSxT", "step_reward"):
        np.testing.assert_array_equal(two[name], one[name], err_msg=name)
    for name in ("step_advantage_BxS", "step_logp_ref_BxSxT", "update_loss"):
        np.testing.assert_allclose(two[name], one[name], rtol=0, atol=1e-6, err_msg=name)
    assert_params_close(two, one, "updated")
    assert np.abs(one["updated['blocks'][1]['fc'].value"]).max() > 0


@pytest.mark.slow
def test_checkpoint_saved_and_restored_by_two_processes(one_process, two_processes):
    one, two = one_process["pieces"], two_processes["pieces"]
    for result in (one, two):
        for saved, restored in (("updated", "restored"), ("saved_opt", "restored_opt")):
            names = [k for k in result if k.startswith(saved + "[")]
            assert names
            for name in names:
                np.testing.assert_array_equal(result[restored + name[len(saved):]],
                                              result[name], err_msg=name)
        assert bool(result["restored_same_shardings"])
        assert int(result["restored_position"]) == 1
    assert int(two["restored_meta_processes"]) == 2
    assert_params_close(two, one, "restored")


@pytest.mark.slow
def test_initialize_again_in_a_running_job_is_a_no_op_or_names_the_conflict(one_process,
                                                                           two_processes):
    one, two = one_process["pieces"], two_processes["pieces"]
    assert not one["initialize_several"] and not one["initialize_again"]
    assert two["initialize_several"] and two["initialize_again"]
    assert "process_id must be an integer in [0, 1), got 1" in str(one["initialize_conflict_error"])
    assert ("already runs with process_id=0; cannot initialize again with 1"
            in str(two["initialize_conflict_error"]))


@pytest.mark.slow
def test_global_array_rejects_a_mesh_not_ordered_by_process(one_process, two_processes):
    assert str(one_process["pieces"]["reversed_mesh_error"]) == ""  # one process holds all rows
    assert ("process 0 holds rows [4, 8) of the global batch of 8, not process_slice's [0, 4)"
            in str(two_processes["pieces"]["reversed_mesh_error"]))


# ----------------------------------------------------------------------------- faults


@pytest.mark.slow
def test_killed_process_makes_the_other_exit_with_an_error_in_bounded_time(killed_job):
    assert killed_job["returncodes"][1] == -signal.SIGKILL
    assert killed_job["returncodes"][0] not in (0, None)
    assert "stopped sending heartbeats" in killed_job["stderr_0"]
    assert killed_job["steps"] == list(range(1, KILL_AFTER + 1))
    assert not killed_job["wrote_results"]


@pytest.mark.slow
def test_restarted_job_resumes_from_the_last_checkpoint_and_ends_as_uninterrupted(
        killed_job, two_processes, uninterrupted_job):
    """The restart consumed data positions KILL_AFTER.. only, and the killed-and-resumed job's
    checkpoints (1..KILL_AFTER written before the kill, the rest after the restart) and final
    state are bitwise those of two processes run uninterrupted.

    Bitwise, not within a tolerance: both jobs run the same executables (compiled afresh or
    taken from the persistent compile cache, the same program) on the same devices of the same
    machine with the same inputs (the restored state, key and data position), and nothing in
    them depends on timing: XLA's CPU code splits its work by the thread count, not by the load,
    and gloo's reductions add the ranks' contributions in an order fixed by the number of ranks
    and the buffer size, not by arrival.

    The uninterrupted reference has two processes, not one: one process x 8 devices and two x 4
    round differently from the first step (different executables, whose collectives add in
    different orders; one step is compared within the module docstring's tolerances), and from
    the second step on each rollout samples from parameters that differ by that rounding, where
    a token drawn near a boundary of its CDF changes and the runs train on different data. No
    elementwise bound on the parameters of several steps follows, so a tolerance between them
    could only be one machine's observation.
    """
    resumed, reference = two_processes["loop"], uninterrupted_job["loop"]
    np.testing.assert_array_equal(resumed["positions"], np.arange(KILL_AFTER, LOOP_STEPS))
    np.testing.assert_array_equal(reference["positions"], np.arange(LOOP_STEPS))
    dirs = [job["dir"] / "checkpoints" for job in (killed_job, uninterrupted_job)]
    steps = list(range(1, LOOP_STEPS + 1))
    assert [_committed_steps(d) for d in dirs] == [steps, steps]
    for step in steps:  # the first difference names its step and array
        assert_bitwise_equal(*(checkpoint_arrays(d, step) for d in dirs), f"checkpoint {step}")
    assert_bitwise_equal(*({k: v for k, v in run.items() if k.startswith("final")}
                           for run in (resumed, reference)), "final state")


# ----------------------------------------------------------------------------- the experiment


@pytest.fixture(scope="module")
def experiment_runs(tmp_path_factory):
    """The tiny experiment (``_distributed_worker.experiment_config``) run at the same time by
    one process x 8 devices and by two x 4, each twice into its run directory."""
    dirs = {"one": tmp_path_factory.mktemp("experiment_one"),
            "two": tmp_path_factory.mktemp("experiment_two")}
    procs = (launch("experiment", dirs["one"], 1)
             + launch("experiment", dirs["two"], 2,
                      heartbeat_timeout_s=EXPERIMENT_HEARTBEAT_TIMEOUT_S))
    logs = finish(procs, EXPERIMENT_TIMEOUT_S)
    returned = {name: [json.loads((path / f"experiment-{i}.json").read_text())
                       for i in range(1 if name == "one" else 2)] for name, path in dirs.items()}
    return {"dirs": dirs, "logs": {"one": logs[:1], "two": logs[1:]}, "returned": returned}


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _assert_numbers_close(got, want, where: str) -> None:
    """Equal structure; numbers within EXPERIMENT_ATOL (+ 1e-5 relative), the rest equal."""
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), where
        for key in want:
            _assert_numbers_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            _assert_numbers_close(a, b, f"{where}[{i}]")
    elif isinstance(want, float):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=EXPERIMENT_ATOL, err_msg=where)
    else:
        assert got == want, where


@pytest.mark.slow
def test_experiment_in_two_processes_equals_one_process(experiment_runs):
    """Same global batches, same keys: what the two runs sample and score is exactly equal
    (reference rewards, Best-of-N points, evaluation samples, their rewards and win rates);
    numbers computed from log-probabilities (KL, losses, gradient norms, advantages) agree to
    1e-5 absolute or relative [measured in two runs: up to 2.9e-6 on a sample's KL, 1.4e-6 on a
    gradient norm of 3-6, 5e-7 on the loss, 8e-7 on the evaluated k1 KL]."""
    one, two = (experiment_runs["dirs"][k] / "run" for k in ("one", "two"))
    refs = sorted(p.name for p in (one / "references").iterdir())
    assert len(refs) == 2 and refs == sorted(p.name for p in (two / "references").iterdir())
    for name in refs:  # same cache names: same prompts table, M, T, key and chunks
        with np.load(one / "references" / name) as a, np.load(two / "references" / name) as b:
            np.testing.assert_array_equal(b["rewards_PxM"], a["rewards_PxM"], err_msg=name)
    want, got = (json.loads((d / "results.json").read_text()) for d in (one, two))
    assert got["bon"] == want["bon"] and got["bon_curve"] == want["bon_curve"]
    for a, b in zip(got["methods"], want["methods"], strict=True):
        assert (a["reward"], a["win_rate"]) == (b["reward"], b["win_rate"])
    _assert_numbers_close(got["methods"], want["methods"], "methods")
    assert [m["key"] for m in want["methods"]] == ["vbon-n4"]
    metrics = {d: _lines(d / "vbon-n4" / "metrics.jsonl") for d in (one, two)}
    assert [r["step"] for r in metrics[two]] == [r["step"] for r in metrics[one]] == [1, 2]
    for a, b in zip(metrics[two], metrics[one], strict=True):
        del a["time"], b["time"]
        _assert_numbers_close(a, b, f"metrics of step {b['step']}")
    samples = {d: _lines(d / "vbon-n4" / "samples.jsonl") for d in (one, two)}
    for a, b in zip(samples[two], samples[one], strict=True):
        assert (a["completion"], a["reward"]) == (b["completion"], b["reward"])
        _assert_numbers_close(a, b, f"sample {b['prompt_index']}.{b['sample']}")
    assert len({s["completion"] for s in samples[one]}) > 4


@pytest.mark.slow
def test_experiment_processes_keep_their_share_of_the_prompts(experiment_runs):
    """Every global batch of the config takes its rows 0-1 from process 0 and 2-3 from process
    1, so each process keeps 4 of the 8 training and of the 8 test prompts."""
    kept = re.compile(r"process (\d) keeps (\d+) of (\d+) training prompts and (\d+) of (\d+) "
                      r"test prompts")
    (one,), two = experiment_runs["logs"]["one"], experiment_runs["logs"]["two"]
    assert [m.groups() for m in kept.finditer(one)] == [("0", "8", "8", "8", "8")] * 2
    for i, log in enumerate(two):
        assert [m.groups() for m in kept.finditer(log)] == [(str(i), "4", "8", "4", "8")] * 2


@pytest.mark.slow
def test_experiment_processes_share_one_run_and_process_0_writes_it(experiment_runs):
    """Both processes return the same run (one run id, the same points); the second call reuses
    the finished run; the files of the run directory are those of the one-process run."""
    (one,), two = experiment_runs["returned"]["one"], experiment_runs["returned"]["two"]
    assert two[0] == two[1]
    for calls in (one, two[0]):
        first, second = calls
        assert first == second and first["complete"]
    one_dir, two_dir = (experiment_runs["dirs"][k] / "run" for k in ("one", "two"))
    run = json.loads((two_dir / "run.json").read_text())
    assert run["run_id"] == two[0][0]["run_id"]
    assert [i["processes"] for i in run["invocations"]] == [2, 2]
    _assert_numbers_close(two[0][0]["points"], one[0]["points"], "points")

    def files(run_dir):
        return sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")
                      if p.is_file() and "tensorboard" not in p.parts
                      and "checkpoints" not in p.parts)

    assert files(two_dir) == files(one_dir)
    assert not [f for f in files(two_dir) if ".tmp" in f]
