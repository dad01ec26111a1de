"""The gcloud commands of the TPU scripts, argument validation, and a runner with a dry-run mode.

Every script builds ``gcloud`` argument lists here and hands them to a :class:`Runner`, which
either runs them or, with ``--dry-run``, prints each one (``shlex.join``, so the printed line is
the exact command) and answers with simulated results: TPU states, creation exit codes and job
exit codes given on the command line (``--dry-run-states``, ``--dry-run-create-codes``,
``--dry-run-job-codes``). Lines starting with ``#`` are notes, not commands.

Accelerator types follow Cloud TPU naming: ``v5litepod-N`` and ``v6e-N`` count chips,
``v4-N`` and ``v5p-N`` count TensorCores (two per chip; JAX sees one device per chip).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import enum
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TextIO

__all__ = [
    "Accelerator",
    "Capacity",
    "Runner",
    "Simulation",
    "TpuSpec",
    "READY",
    "WAIT_STATES",
    "RECREATE_STATES",
    "NOT_FOUND",
    "parse_accelerator",
    "check_name",
    "check_zone",
    "check_run_id",
    "backoff_seconds",
    "create_command",
    "describe_command",
    "delete_command",
    "ssh_command",
    "scp_command",
    "tpu_state",
    "create_tpu",
    "delete_tpu",
    "add_tpu_arguments",
    "tpu_spec_from_args",
    "add_runner_arguments",
    "runner_from_args",
]

GCLOUD = "gcloud"

# Runtime (software) versions recommended for JAX per TPU generation (Cloud TPU docs,
# "TPU software versions"); v4 and older use the plain Ubuntu base image.
_FAMILIES = {
    # family: (TensorCores per chip, runtime version, allowed sizes)
    "v4": (2, "tpu-ubuntu2204-base", None),
    "v5p": (2, "v2-alpha-tpuv5", None),
    "v5litepod": (1, "v2-alpha-tpuv5-lite", (1, 4, 8, 16, 32, 64, 128, 256)),
    "v6e": (1, "v2-alpha-tpuv6e", (1, 4, 8, 16, 32, 64, 128, 256)),
}
_MAX_CORES = {"v4": 8192, "v5p": 12288}

READY = "READY"
# Node states (Cloud TPU API v2 ``Node.State``) that pass by themselves: wait and look again.
WAIT_STATES = frozenset({"CREATING", "STARTING", "RESTARTING", "REIMAGING", "REPAIRING",
                         "STOPPING", "DELETING", "HIDING", "UNHIDING"})
# States a node does not leave by itself (a preempted or terminated VM stays so): delete and
# create it again.
RECREATE_STATES = frozenset({"PREEMPTED", "TERMINATED", "STOPPED", "HIDDEN", "UNKNOWN",
                             "STATE_UNSPECIFIED"})
NOT_FOUND = "NOT_FOUND"
_KNOWN_STATES = WAIT_STATES | RECREATE_STATES | {READY, NOT_FOUND}

# Queued-resource states (Cloud TPU "Manage queued resources").
_QUEUED_DONE = "ACTIVE"
_QUEUED_FAILED = frozenset({"FAILED", "SUSPENDED"})


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """A Cloud TPU accelerator type such as ``v5litepod-16`` (16 chips) or ``v5p-32`` (16 chips)."""

    family: str
    size: int

    @property
    def name(self) -> str:
        return f"{self.family}-{self.size}"

    @property
    def chips(self) -> int:
        """Chips in the slice, which is the number of JAX devices."""
        return self.size // _FAMILIES[self.family][0]

    @property
    def runtime_version(self) -> str:
        return _FAMILIES[self.family][1]


def parse_accelerator(text: str) -> Accelerator:
    """``"v5p-32"`` -> ``Accelerator("v5p", 32)``; a ValueError names a type that does not exist."""
    families = ", ".join(_FAMILIES)
    match = re.fullmatch(r"([a-z0-9]+)-([0-9]+)", text or "")
    if match is None or match.group(1) not in _FAMILIES:
        hint = " (TPU v5e is called v5litepod, e.g. v5litepod-16)" if text.startswith("v5e") else ""
        raise ValueError(f"unknown accelerator type {text!r}: expected FAMILY-SIZE with FAMILY "
                         f"one of {families}{hint}")
    family, size = match.group(1), int(match.group(2))
    cores_per_chip, _, sizes = _FAMILIES[family]
    if sizes is not None:
        if size not in sizes:
            raise ValueError(f"unknown accelerator type {text!r}: {family} slices have "
                             f"{', '.join(map(str, sizes))} chips")
    elif size % 8 or not 8 <= size <= _MAX_CORES[family]:
        raise ValueError(f"unknown accelerator type {text!r}: {family}-N counts TensorCores "
                         f"({cores_per_chip} per chip), a multiple of 8 from 8 to "
                         f"{_MAX_CORES[family]}")
    return Accelerator(family, size)


def check_name(name: str) -> str:
    """A TPU node name: lowercase letters, digits and hyphens, starting with a letter, <= 63."""
    if not name:
        raise ValueError("missing TPU name (--name)")
    if len(name) > 63 or not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name):
        raise ValueError(f"invalid TPU name {name!r}: use lowercase letters, digits and hyphens, "
                         "start with a letter, end with a letter or digit, at most 63 characters")
    return name


def check_zone(zone: str | None) -> str:
    """A Compute Engine zone such as ``us-central2-b`` or ``europe-west4-a``."""
    if not zone:
        raise ValueError("missing zone (--zone), e.g. --zone=us-east5-a for v5p or "
                         "--zone=us-west4-a for v5e")
    if not re.fullmatch(r"[a-z]+-[a-z]+[0-9]+-[a-z]", zone):
        raise ValueError(f"invalid zone {zone!r}: expected REGION-ZONE such as us-central2-b")
    return zone


def check_run_id(run_id: str) -> str:
    """A run id usable in file names and shell words: letters, digits, '.', '_', '-'."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", run_id or ""):
        raise ValueError(f"invalid run id {run_id!r}: use up to 64 letters, digits, '.', '_' "
                         "or '-', starting with a letter or digit")
    return run_id


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff: ``min(cap, base * 2**(attempt - 1))`` for attempt 1, 2, ..."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    return float(min(cap, base * 2 ** (attempt - 1)))


class Capacity(enum.Enum):
    """How the TPU is provisioned (``--capacity``)."""

    ON_DEMAND = "on-demand"
    SPOT = "spot"
    PREEMPTIBLE = "preemptible"
    RESERVED = "reserved"


@dataclasses.dataclass(frozen=True)
class TpuSpec:
    """Which TPU VM (or pod slice) the scripts talk to, and how to create it again.

    ``accelerator`` may be None for scripts that only use an existing VM (install, launch).
    ``queued=True`` creates through a queued resource of the same name (``--node-id`` = name).
    """

    name: str
    zone: str
    project: str | None = None
    accelerator: Accelerator | None = None
    runtime_version: str | None = None
    capacity: Capacity = Capacity.ON_DEMAND
    queued: bool = False

    def __post_init__(self):
        check_name(self.name)
        check_zone(self.zone)
        if self.queued and self.capacity is Capacity.PREEMPTIBLE:
            raise ValueError("capacity 'preemptible' is not available for queued resources; "
                             "use --capacity=spot")

    def location(self) -> list[str]:
        flags = [f"--zone={self.zone}"]
        if self.project:
            flags.append(f"--project={self.project}")
        return flags

    def version(self) -> str:
        if self.accelerator is None:
            raise ValueError(f"creating {self.name!r} needs --accelerator-type")
        return self.runtime_version or self.accelerator.runtime_version


def create_command(tpu: TpuSpec) -> list[str]:
    """``gcloud compute tpus tpu-vm create`` (or ``queued-resources create``) for ``tpu``."""
    version = tpu.version()
    if tpu.queued:
        argv = [GCLOUD, "compute", "tpus", "queued-resources", "create", tpu.name,
                *tpu.location(), f"--accelerator-type={tpu.accelerator.name}",
                f"--runtime-version={version}", f"--node-id={tpu.name}"]
    else:
        argv = [GCLOUD, "compute", "tpus", "tpu-vm", "create", tpu.name, *tpu.location(),
                f"--accelerator-type={tpu.accelerator.name}", f"--version={version}"]
    if tpu.capacity is not Capacity.ON_DEMAND:
        argv.append(f"--{tpu.capacity.value}")
    return argv


def describe_command(tpu: TpuSpec, queued: bool = False) -> list[str]:
    """Prints only the node state (``READY``, ``PREEMPTED``, ...) or the queued-resource state."""
    if queued:
        return [GCLOUD, "compute", "tpus", "queued-resources", "describe", tpu.name,
                *tpu.location(), "--format=value(state.state)"]
    return [GCLOUD, "compute", "tpus", "tpu-vm", "describe", tpu.name, *tpu.location(),
            "--format=value(state)"]


def delete_command(tpu: TpuSpec) -> list[str]:
    """Deletes the node (and, for a queued resource, the request with it: ``--force``)."""
    if tpu.queued:
        return [GCLOUD, "compute", "tpus", "queued-resources", "delete", tpu.name,
                *tpu.location(), "--force", "--quiet"]
    return [GCLOUD, "compute", "tpus", "tpu-vm", "delete", tpu.name, *tpu.location(), "--quiet"]


# Keep-alives make a foreground ssh to a VM that vanished (preemption) fail within ~5 minutes
# instead of hanging on a dead TCP connection.
_SSH_KEEPALIVE = ["--ssh-flag=-oServerAliveInterval=60", "--ssh-flag=-oServerAliveCountMax=5"]


def ssh_command(tpu: TpuSpec, script: str) -> list[str]:
    """Runs the shell ``script`` on every host of the slice at once (``--worker=all``)."""
    return [GCLOUD, "compute", "tpus", "tpu-vm", "ssh", tpu.name, *tpu.location(),
            "--worker=all", *_SSH_KEEPALIVE, f"--command={script}"]


def scp_command(tpu: TpuSpec, local_path: str, remote_path: str) -> list[str]:
    """Copies one local file to ``remote_path`` on every host."""
    return [GCLOUD, "compute", "tpus", "tpu-vm", "scp", local_path,
            f"{tpu.name}:{remote_path}", *tpu.location(), "--worker=all"]


@dataclasses.dataclass
class Simulation:
    """Answers of the cloud in a dry run, consumed in order.

    ``states``: what successive node describes return (a state or ``NOT_FOUND``), then ``READY``.
    ``create_codes``: exit codes of successive creation attempts, then 0.
    ``job_codes``: exit codes of successive launched jobs, then 0.
    """

    states: collections.deque = dataclasses.field(default_factory=collections.deque)
    create_codes: collections.deque = dataclasses.field(default_factory=collections.deque)
    job_codes: collections.deque = dataclasses.field(default_factory=collections.deque)

    @staticmethod
    def parse(states: str = "", create_codes: str = "", job_codes: str = "") -> Simulation:
        parsed_states = [s.strip().upper() for s in states.split(",") if s.strip()]
        for state in parsed_states:
            if state not in _KNOWN_STATES:
                raise ValueError(f"unknown simulated TPU state {state!r}; known: "
                                 f"{', '.join(sorted(_KNOWN_STATES))}")

        def codes(text: str, flag: str) -> list[int]:
            out = []
            for item in (t.strip() for t in text.split(",") if t.strip()):
                if not re.fullmatch(r"[0-9]{1,3}", item) or int(item) > 255:
                    raise ValueError(f"invalid exit code {item!r} in {flag}: expected 0..255")
                out.append(int(item))
            return out

        return Simulation(collections.deque(parsed_states),
                          collections.deque(codes(create_codes, "--dry-run-create-codes")),
                          collections.deque(codes(job_codes, "--dry-run-job-codes")))

    def next_state(self) -> str:
        return self.states.popleft() if self.states else READY

    def next_create_code(self) -> int:
        return self.create_codes.popleft() if self.create_codes else 0

    def next_job_code(self) -> int:
        return self.job_codes.popleft() if self.job_codes else 0


def _subprocess(argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(list(argv), check=False, **kwargs)
    except FileNotFoundError:
        hint = " (install the Google Cloud CLI)" if argv[0] == GCLOUD else ""
        raise SystemExit(f"error: {argv[0]!r} is not on PATH{hint}") from None


@dataclasses.dataclass
class Runner:
    """Runs commands, or in a dry run prints them (one ``shlex.join`` line each) to ``out``.

    Real runs echo each command to stderr (prefixed ``+``) before running it and leave stdout to
    the commands themselves.
    """

    dry_run: bool = False
    simulation: Simulation = dataclasses.field(default_factory=Simulation)
    out: TextIO | None = None

    def _stream(self):
        return self.out or (sys.stdout if self.dry_run else sys.stderr)

    def show(self, argv: Sequence[str]) -> None:
        prefix = "" if self.dry_run else "+ "
        print(prefix + shlex.join(argv), file=self._stream(), flush=True)

    def note(self, text: str) -> None:
        print(f"# {text}", file=self._stream(), flush=True)

    def run(self, argv: Sequence[str]) -> int:
        """Runs ``argv`` with inherited stdout/stderr; returns its exit code (0 in a dry run)."""
        self.show(argv)
        if self.dry_run:
            return 0
        return _subprocess(argv).returncode

    def capture(self, argv: Sequence[str]) -> subprocess.CompletedProcess:
        """Runs ``argv`` and captures its output; never called in a dry run."""
        if self.dry_run:
            raise RuntimeError("capture() has no dry-run answer; use the simulation")
        self.show(argv)
        return _subprocess(argv, capture_output=True, text=True)

    def sleep(self, seconds: float, why: str) -> None:
        self.note(f"sleep {seconds:g}s ({why})")
        if not self.dry_run:
            time.sleep(seconds)


def tpu_state(runner: Runner, tpu: TpuSpec) -> str | None:
    """The node's state (``READY``, ``PREEMPTED``, ...), or None when the node does not exist.

    Raises RuntimeError when ``describe`` fails for another reason (credentials, network), so a
    caller never mistakes an outage for a deleted VM.
    """
    argv = describe_command(tpu)
    if runner.dry_run:
        runner.show(argv)
        state = runner.simulation.next_state()
        runner.note(f"simulated state of {tpu.name}: {state}")
        return None if state == NOT_FOUND else state
    result = runner.capture(argv)
    if result.returncode != 0:
        if "NOT_FOUND" in result.stderr or "not found" in result.stderr.lower():
            return None
        raise RuntimeError(f"describing {tpu.name!r} failed (exit {result.returncode}): "
                           f"{result.stderr.strip()}")
    return result.stdout.strip() or "STATE_UNSPECIFIED"


def _queued_state(runner: Runner, tpu: TpuSpec) -> str | None:
    result = runner.capture(describe_command(tpu, queued=True))
    if result.returncode != 0:
        if "NOT_FOUND" in result.stderr or "not found" in result.stderr.lower():
            return None
        raise RuntimeError(f"describing queued resource {tpu.name!r} failed "
                           f"(exit {result.returncode}): {result.stderr.strip()}")
    return result.stdout.strip()


def create_tpu(runner: Runner, tpu: TpuSpec, poll_s: float = 60.0) -> int:
    """One creation attempt; returns 0 once the node exists (a queued resource is ACTIVE)."""
    argv = create_command(tpu)
    if runner.dry_run:
        if tpu.queued:
            runner.show(describe_command(tpu, queued=True))
            runner.note(f"simulated queued resource {tpu.name}: {NOT_FOUND}")
        runner.show(argv)
        code = runner.simulation.next_create_code()
        if code:
            runner.note(f"simulated creation failure: exit {code}")
            return code
        if tpu.queued:
            runner.show(describe_command(tpu, queued=True))
            runner.note(f"simulated queued resource {tpu.name}: {_QUEUED_DONE}")
        return 0
    if not tpu.queued:
        return runner.run(argv)
    state = _queued_state(runner, tpu)
    if state in _QUEUED_FAILED:
        runner.note(f"queued resource {tpu.name} is {state}: deleting it")
        code = runner.run(delete_command(tpu))
        if code:
            return code
        state = None
    if state is None:
        code = runner.run(argv)
        if code:
            return code
    else:
        runner.note(f"queued resource {tpu.name} already exists ({state}): waiting for it")
    while True:
        state = _queued_state(runner, tpu)
        if state == _QUEUED_DONE:
            return 0
        if state is None or state in _QUEUED_FAILED:
            runner.note(f"queued resource {tpu.name} is {state or 'gone'}")
            return 1
        runner.sleep(poll_s, f"queued resource {tpu.name} is {state}")


def delete_tpu(runner: Runner, tpu: TpuSpec) -> int:
    return runner.run(delete_command(tpu))


def add_tpu_arguments(parser: argparse.ArgumentParser, *, creates: bool) -> None:
    """``--name/--zone/--project`` and, for scripts that create VMs, the creation flags."""
    parser.add_argument("--name", required=True, help="TPU VM (node) name")
    parser.add_argument("--zone", default=None, help="zone, e.g. us-east5-a")
    parser.add_argument("--project", default=None, help="GCP project (default: gcloud's)")
    if not creates:
        return
    parser.add_argument("--accelerator-type", default=None,
                        help="v5litepod-N (N chips), v5p-N / v4-N (N TensorCores), v6e-N")
    parser.add_argument("--runtime-version", default=None,
                        help="TPU software version (default: the one for the accelerator)")
    parser.add_argument("--capacity", default=Capacity.ON_DEMAND.value,
                        choices=[c.value for c in Capacity], help="provisioning model")
    parser.add_argument("--queued", action="store_true",
                        help="create through a queued resource (waits for capacity)")


def tpu_spec_from_args(args: argparse.Namespace, *, creates: bool) -> TpuSpec:
    if not creates:
        return TpuSpec(name=args.name, zone=check_zone(args.zone), project=args.project)
    if not args.accelerator_type:
        raise ValueError("missing --accelerator-type, e.g. v5litepod-16 or v5p-32")
    return TpuSpec(name=args.name, zone=check_zone(args.zone), project=args.project,
                   accelerator=parse_accelerator(args.accelerator_type),
                   runtime_version=args.runtime_version, capacity=Capacity(args.capacity),
                   queued=args.queued)


def add_runner_arguments(parser: argparse.ArgumentParser, *, states: bool = False,
                         create_codes: bool = False, job_codes: bool = False) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands instead of running them")
    if states:
        parser.add_argument("--dry-run-states", default="",
                            help="dry run: comma-separated node states successive describes "
                                 "return (NOT_FOUND for a missing node); READY afterwards")
    if create_codes:
        parser.add_argument("--dry-run-create-codes", default="",
                            help="dry run: exit codes of successive creation attempts; 0 after")
    if job_codes:
        parser.add_argument("--dry-run-job-codes", default="",
                            help="dry run: exit codes of successive launched jobs; 0 after")


def runner_from_args(args: argparse.Namespace) -> Runner:
    given = {flag: getattr(args, attr, "") for flag, attr in
             (("--dry-run-states", "dry_run_states"),
              ("--dry-run-create-codes", "dry_run_create_codes"),
              ("--dry-run-job-codes", "dry_run_job_codes"))}
    if not args.dry_run:
        for flag, value in given.items():
            if value:
                raise ValueError(f"{flag}={value!r} only applies with --dry-run")
        return Runner(dry_run=False)
    simulation = Simulation.parse(given["--dry-run-states"], given["--dry-run-create-codes"],
                                  given["--dry-run-job-codes"])
    return Runner(dry_run=True, simulation=simulation)
