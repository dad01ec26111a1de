"""Multi-controller JAX: one Python process per host, each loading its own share of the data.

Every process runs the same program. It starts the distributed runtime before any other JAX
call, builds one mesh over the devices of all processes, loads only its own rows of each global
batch and assembles them into global ``jax.Array``s; from there the library's jitted code runs
unchanged (XLA inserts the cross-process collectives)::

    from bonjax import distributed, sharding as shd

    distributed.initialize()                      # flags, BONJAX_* variables, or a TPU pod
    mesh = shd.make_mesh((jax.process_count(), jax.local_device_count(), 1))
    rows = distributed.process_slice(global_batch_size)
    tokens_BxP = distributed.global_array(
        all_tokens[rows], mesh, shd.batch_sharding(mesh, 2, batch_size=global_batch_size))

Randomness never depends on the number of processes: a sampler takes one key for the global
batch, and JAX's partitionable threefry gives each element the bits it would get on one device.
:func:`process_rows` names the rows a process supplies under any sharding (all of them when
the sharding does not split the batch across processes); :func:`broadcast_json` hands process
0's decisions (what a resumed run reuses, a run id) to every process.

Failure. Process 0 hosts the coordination service and every process sends it heartbeats. When
a process dies, every other one terminates (SIGABRT, "Terminating process because the JAX
distributed service detected fatal errors") instead of waiting forever in a collective: within
``heartbeat_timeout_s`` of the death, or at once when the dead process is process 0, whose
service the others lose. The job is then restarted as a whole and resumes from its last
checkpoint (``bonjax.training.loop.train_loop``).

CPU. Collectives between processes use gloo over TCP. With several devices per process, jaxlib
0.10's CPU runtime deadlocks once about 32 multi-device programs are queued ahead of a device,
which op-by-op (eager) work on global arrays reaches quickly; keep such work short or compiled
(``Trainer`` compiles its rollout when the job has several processes).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec, Sharding

from bonjax.checks import is_int

__all__ = [
    "ENV_COORDINATOR",
    "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID",
    "add_arguments",
    "broadcast_json",
    "global_array",
    "initialize",
    "initialize_from_args",
    "is_main_process",
    "process_rows",
    "process_slice",
    "replicate",
    "to_host",
]

logger = logging.getLogger(__name__)

ENV_COORDINATOR = "BONJAX_COORDINATOR"
ENV_NUM_PROCESSES = "BONJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "BONJAX_PROCESS_ID"


def _on_cloud_tpu() -> bool:
    """Whether JAX found TPU chips and libtpu at import (its pod auto-detection applies)."""
    from jax._src import cloud_tpu_init

    return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer") from None


def _check_address(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator address must be 'host:port', got {address!r}")
    return address


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: Sequence[int] | None = None, *,
               initialization_timeout_s: int = 300, heartbeat_timeout_s: int = 100,
               shutdown_timeout_s: int = 300) -> bool:
    """Starts JAX's distributed runtime for this process; True when several processes run.

    Call it first, before anything that touches a JAX device. Each of ``coordinator_address``
    (``host:port`` of process 0), ``num_processes`` and ``process_id`` comes from its argument,
    else from ``BONJAX_COORDINATOR``, ``BONJAX_NUM_PROCESSES``, ``BONJAX_PROCESS_ID``. With none
    of them set, a Cloud TPU VM lets JAX detect the pod slice by itself; anywhere else the run is
    a single process and nothing is started. One process (``num_processes == 1``) starts
    nothing either.

    On CPU the cross-process collectives use gloo over TCP (set here unless another
    implementation was configured). Calling it again in a running job is a no-op; calling it
    with another process count or process id raises.

    Args:
      coordinator_address: ``host:port`` where process 0 serves the coordination service.
      num_processes: the number of processes of the job.
      process_id: this process's index in ``0 .. num_processes - 1``.
      local_device_ids: restricts this process to these local devices (GPU); None: all.
      initialization_timeout_s: connecting to the coordinator (and every process reaching it)
        fails after this long instead of waiting forever.
      heartbeat_timeout_s: a process that has sent no heartbeat for this long is declared dead
        and every other process terminates with an error.
      shutdown_timeout_s: at exit, how long a process waits for the others to exit too.

    Returns:
      True when a runtime of two or more processes is running, False for a single process.

    Raises:
      ValueError: for an incomplete or inconsistent configuration (named).
    """
    for name, value in (("initialization_timeout_s", initialization_timeout_s),
                        ("heartbeat_timeout_s", heartbeat_timeout_s),
                        ("shutdown_timeout_s", shutdown_timeout_s)):
        if not is_int(value) or value < 1:
            raise ValueError(f"{name} must be an integer number of seconds >= 1, got {value!r}")
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
             "process_id": process_id}

    if jax.distributed.is_initialized():
        _check_running(given)
        return True
    if all(v is None for v in given.values()):
        if not _on_cloud_tpu():
            return False
        _use_gloo_on_cpu()
        jax.distributed.initialize(local_device_ids=local_device_ids,
                                   initialization_timeout=initialization_timeout_s,
                                   heartbeat_timeout_seconds=heartbeat_timeout_s,
                                   shutdown_timeout_seconds=shutdown_timeout_s)
        return jax.process_count() > 1

    if num_processes is None:
        raise ValueError(f"num_processes is missing (argument or {ENV_NUM_PROCESSES})")
    if not is_int(num_processes) or num_processes < 1:
        raise ValueError(f"num_processes must be an integer >= 1, got {num_processes!r}")
    if process_id is None:
        if num_processes > 1:
            raise ValueError(f"process_id is missing (argument or {ENV_PROCESS_ID})")
        process_id = 0
    if not is_int(process_id) or not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be an integer in [0, {num_processes}), got "
                         f"{process_id!r}")
    if num_processes == 1:
        return False
    if coordinator_address is None:
        raise ValueError(f"coordinator_address is missing (argument or {ENV_COORDINATOR})")
    _check_address(coordinator_address)
    _use_gloo_on_cpu()
    logger.info("process %d of %d connecting to the coordinator at %s", process_id,
                num_processes, coordinator_address)
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               local_device_ids=local_device_ids,
                               cluster_detection_method="deactivate",
                               initialization_timeout=initialization_timeout_s,
                               heartbeat_timeout_seconds=heartbeat_timeout_s,
                               shutdown_timeout_seconds=shutdown_timeout_s)
    return True


def _use_gloo_on_cpu() -> None:
    """CPU collectives across processes need an implementation; gloo (TCP) needs no MPI."""
    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")


def _check_running(given: dict) -> None:
    """A second ``initialize`` must not ask for another process count or id than the job's."""
    running = {"num_processes": jax.process_count(), "process_id": jax.process_index()}
    for name, value in running.items():
        if given[name] is not None and given[name] != value:
            raise ValueError(f"the distributed runtime already runs with {name}={value}; "
                             f"cannot initialize again with {given[name]!r}")


def is_main_process() -> bool:
    """True on process 0, the one that writes logs and reports (checkpoints: every process)."""
    return jax.process_index() == 0


def process_slice(global_batch: int, process_index: int | None = None,
                  process_count: int | None = None) -> slice:
    """The rows ``[p * B / n, (p + 1) * B / n)`` of a global batch of B that process p loads.

    These are the rows that a batch sharding over a mesh from ``bonjax.sharding.make_mesh``
    places on process p's devices (devices are ordered by process); :func:`global_array`
    checks that.

    Raises:
      ValueError: if ``global_batch`` is not a positive multiple of the process count or the
        process index is out of range.
    """
    p = jax.process_index() if process_index is None else process_index
    n = jax.process_count() if process_count is None else process_count
    if n < 1 or not 0 <= p < n:
        raise ValueError(f"process index {p} is not in [0, {n})")
    if global_batch < 1 or global_batch % n:
        raise ValueError(f"global batch {global_batch} must be a positive multiple of the "
                         f"{n} processes")
    rows = global_batch // n
    return slice(p * rows, (p + 1) * rows)


def _contiguous_rows(blocks: set[tuple[int, int]]) -> tuple[int, int]:
    """The [start, stop) union of row blocks, which must leave no gap."""
    blocks = sorted(blocks)
    for (_, stop), (start, _) in itertools.pairwise(blocks):
        if stop != start:
            raise ValueError(f"this process holds the non-contiguous rows {blocks} of the global "
                             "batch; use a mesh whose batch axes order devices by process")
    return blocks[0][0], blocks[-1][1]


def process_rows(sharding: Sharding, global_shape: Sequence[int]) -> slice:
    """The rows of a global array's leading axis that this process supplies under ``sharding``.

    ``process_slice(B)`` when the sharding splits the B rows evenly over the processes (a batch
    sharding over a mesh from ``bonjax.sharding.make_mesh``); all rows when it does not split
    the leading axis across processes (replicated, or a batch too small for the mesh's batch
    axes). These are the rows :func:`global_array` takes from this process.

    Raises:
      ValueError: if this process's devices hold non-contiguous rows (a mesh whose devices are
        not ordered by process).
    """
    shape = tuple(int(d) for d in global_shape)
    if not shape:
        raise ValueError("process_rows needs a leading (batch) axis, got a scalar shape")
    indices = sharding.addressable_devices_indices_map(shape).values()
    start, stop = _contiguous_rows({index[0].indices(shape[0])[:2] for index in indices})
    return slice(start, stop)


def global_array(local_data, mesh: Mesh, sharding_or_spec: Sharding | PartitionSpec,
                 global_shape: Sequence[int] | None = None) -> jax.Array:
    """A global ``jax.Array`` on ``mesh`` from this process's rows (``process_rows``).

    Every process calls it with its own rows of the same global array; with a sharding that
    does not split the leading axis across processes, every process passes all rows. The
    result is sharded by ``sharding_or_spec`` (a ``NamedSharding`` on ``mesh`` or a
    ``PartitionSpec``), with global shape ``global_shape`` (default: inferred from the
    sharding). Uses ``jax.make_array_from_process_local_data``.

    Raises:
      ValueError: if the sharding is on another mesh, or the rows this process holds under the
        sharding are not the rows ``process_slice`` names (nor all of them).
    """
    if isinstance(sharding_or_spec, PartitionSpec):
        sharding = NamedSharding(mesh, sharding_or_spec)
    elif isinstance(sharding_or_spec, Sharding):
        sharding = sharding_or_spec
        if isinstance(sharding, NamedSharding) and sharding.mesh != mesh:
            raise ValueError(f"sharding {sharding} is not on the given mesh {mesh}")
    else:
        raise ValueError(f"expected a Sharding or a PartitionSpec, got {sharding_or_spec!r}")
    local_data = np.asarray(local_data)
    if local_data.ndim == 0:
        raise ValueError("global_array needs a leading (batch) axis, got a scalar")
    array = jax.make_array_from_process_local_data(
        sharding, local_data, None if global_shape is None else tuple(global_shape))
    rows = process_rows(sharding, array.shape)
    start, stop = rows.start, rows.stop
    if (start, stop) != (0, array.shape[0]):
        expected = process_slice(array.shape[0])
        if (start, stop) != (expected.start, expected.stop):
            raise ValueError(
                f"under {sharding.spec if isinstance(sharding, NamedSharding) else sharding} "
                f"process {jax.process_index()} holds rows [{start}, {stop}) of the global "
                f"batch of {array.shape[0]}, not process_slice's [{expected.start}, "
                f"{expected.stop}): order the mesh's devices by process")
    return array


def replicate(tree, mesh: Mesh):
    """A pytree of host arrays as global arrays replicated over ``mesh`` (every process passes
    the whole of each array): a table that a compiled program takes as an argument and indexes
    by global prompt index (reference rewards, a fixed data set)."""
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda x: global_array(x, mesh, replicated), tree)


def broadcast_json(value):
    """Process 0's ``value`` (anything ``json`` encodes) on every process, as ``json`` decodes it.

    A collective: every process calls it (the others' ``value`` is ignored). Decisions that
    read files, the clock or a random generator (a resumed run's record, its run id) must come
    from one process, or the processes' programs diverge.
    """
    encoded = json.dumps(value)
    if jax.process_count() == 1:
        return json.loads(encoded)
    data = np.frombuffer(encoded.encode(), np.uint8) if is_main_process() else None
    size = int(multihost_utils.broadcast_one_to_all(np.int32(0 if data is None else data.size)))
    data = multihost_utils.broadcast_one_to_all(np.zeros(size, np.uint8) if data is None
                                                else data)
    return json.loads(np.asarray(data, np.uint8).tobytes().decode())


# ----------------------------------------------------------------------------- entry points


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds ``--coordinator_address``, ``--num_processes``, ``--process_id`` (and the
    timeouts) to an entry point's parser; pass the parsed namespace to
    :func:`initialize_from_args`."""
    group = parser.add_argument_group("multi-process JAX (defaults: BONJAX_* environment)")
    group.add_argument("--coordinator_address", default=None,
                       help=f"host:port of process 0 (default: ${ENV_COORDINATOR})")
    group.add_argument("--num_processes", type=int, default=None,
                       help=f"number of processes (default: ${ENV_NUM_PROCESSES})")
    group.add_argument("--process_id", type=int, default=None,
                       help=f"this process's index (default: ${ENV_PROCESS_ID})")
    group.add_argument("--initialization_timeout_s", type=int, default=300,
                       help="give up connecting to the other processes after this long")
    group.add_argument("--heartbeat_timeout_s", type=int, default=100,
                       help="declare a silent process dead (and stop the job) after this long")
    return parser


def initialize_from_args(args: argparse.Namespace) -> bool:
    """:func:`initialize` with the options :func:`add_arguments` defined."""
    return initialize(args.coordinator_address, args.num_processes, args.process_id,
                      initialization_timeout_s=args.initialization_timeout_s,
                      heartbeat_timeout_s=args.heartbeat_timeout_s)


def to_host(x) -> np.ndarray:
    """A numpy copy of ``x``; a global array spread over processes is gathered first."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
