"""Keeps one training run alive on a TPU VM: recreates a preempted VM, reinstalls, relaunches.

    python -m tpu_setup.babysit --name NAME --zone ZONE --accelerator-type v5p-32 \\
        [--capacity spot] [--queued] --run-dir gs://BUCKET/RUN [--run-id ID] \\
        [--retries 10] [--dry-run] -- python -m experiments.train --config=...

Runs on a machine outside the TPU (a workstation or a small VM) and loops:

1. ``gcloud compute tpus tpu-vm describe NAME --format='value(state)'``;
2. missing -> create it; PREEMPTED, TERMINATED, STOPPED, ... -> delete it and create it again
   (creation failures retry with exponential backoff, ``--create-retries`` times in a row);
   CREATING, REPAIRING, ... -> wait ``--poll`` seconds;
3. READY -> install the commit on every host (once per VM), then launch the command in the
   foreground on every host with ``--run_dir=gs://BUCKET/RUN`` appended;
4. exit 0 -> done. Otherwise look again: a VM that is no longer READY was preempted (counted
   against ``--max-preemptions``, no backoff); a READY VM means the job itself failed (counted
   against ``--retries``, exponential backoff).

The run id stays the same across relaunches and each launch carries its attempt number; the
training resumes from the last checkpoint in the run directory, which lives on GCS because a
recreated VM starts with an empty disk. The babysitter keeps no state of its own: killed and
restarted with the same arguments, it picks up the run where the checkpoints left it.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys

from tpu_setup import gcloud
from tpu_setup.create import add_retry_arguments, check_retry_arguments
from tpu_setup.install import InstallSpec, add_install_arguments, install, install_spec_from_args
from tpu_setup.launch import LaunchSpec, add_launch_arguments, launch, launch_spec_from_args
from tpu_setup.source import resolve_source

__all__ = ["BabysitPolicy", "check_run_dir", "babysit", "main"]

_GCS_PATH = re.compile(r"gs://[a-z0-9][-_.a-z0-9]{1,220}[a-z0-9](/[^\s]*)?")


def check_run_dir(run_dir: str | None) -> str:
    """A ``gs://bucket/path`` run directory (checkpoints must outlive the VM)."""
    if not run_dir:
        raise ValueError("missing --run-dir: give a gs://BUCKET/PATH run directory, where the "
                         "checkpoints a relaunched run resumes from live")
    if not _GCS_PATH.fullmatch(run_dir):
        raise ValueError(f"--run-dir {run_dir!r} is not a gs://BUCKET/PATH path: a recreated VM "
                         "starts with an empty disk, so checkpoints must live on GCS")
    return run_dir.rstrip("/")


@dataclasses.dataclass(frozen=True)
class BabysitPolicy:
    """Retry budgets and pauses (seconds) of the babysitting loop."""

    retries: int = 10
    create_retries: int = 20
    max_preemptions: int = 100
    describe_retries: int = 10
    backoff_s: float = 30.0
    max_backoff_s: float = 600.0
    poll_s: float = 60.0
    delete_after: bool = False


def _describe(runner: gcloud.Runner, tpu: gcloud.TpuSpec, policy: BabysitPolicy) -> str | None:
    """The node state; transient describe errors are retried ``describe_retries`` times."""
    for attempt in range(1, policy.describe_retries + 2):
        try:
            return gcloud.tpu_state(runner, tpu)
        except RuntimeError as e:
            if attempt > policy.describe_retries:
                raise
            runner.sleep(policy.poll_s, f"{e}; describe attempt {attempt}")
    raise AssertionError("unreachable")


def babysit(runner: gcloud.Runner, tpu: gcloud.TpuSpec, install_spec: InstallSpec,
            launch_spec: LaunchSpec, policy: BabysitPolicy) -> int:
    """Runs ``launch_spec`` to completion through preemptions; returns the final exit code."""
    name = tpu.name
    failures = create_failures = preemptions = attempt = 0
    installed = False
    final = None
    state = _describe(runner, tpu, policy)
    while final is None:
        if state is None or state in gcloud.RECREATE_STATES:
            if state is not None:
                preemptions += 1
                if preemptions > policy.max_preemptions:
                    runner.note(f"{name} is {state} for the {preemptions}th time; giving up")
                    final = 1
                    break
                runner.note(f"{name} is {state} (preemption {preemptions}): deleting it to "
                            "create it again")
                code = gcloud.delete_tpu(runner, tpu)
            else:
                runner.note(f"{name} does not exist: creating it")
                code = 0
            if code == 0:
                code = gcloud.create_tpu(runner, tpu, poll_s=policy.poll_s)
            if code:
                create_failures += 1
                if create_failures > policy.create_retries:
                    runner.note(f"creating {name} failed {create_failures} times in a row; "
                                "giving up")
                    final = code
                    break
                runner.sleep(gcloud.backoff_seconds(create_failures, policy.backoff_s,
                                                    policy.max_backoff_s),
                             f"creation failed with exit {code} ({create_failures} in a row)")
            else:
                create_failures = 0
                installed = False
            state = _describe(runner, tpu, policy)
            continue
        if state != gcloud.READY:
            if state not in gcloud.WAIT_STATES:
                runner.note(f"unexpected state {state!r} of {name}")
            runner.sleep(policy.poll_s, f"{name} is {state}")
            state = _describe(runner, tpu, policy)
            continue
        if not installed:
            code = install(runner, tpu, install_spec)
            if code:
                failures += 1
                if failures > policy.retries:
                    runner.note(f"installing on {name} failed; {failures} failures, giving up")
                    final = code
                    break
                runner.sleep(gcloud.backoff_seconds(failures, policy.backoff_s,
                                                    policy.max_backoff_s),
                             f"install failed with exit {code} (failure {failures})")
                state = _describe(runner, tpu, policy)
                continue
            installed = True
        attempt += 1
        runner.note(f"launching run {launch_spec.run_id}, attempt {attempt}")
        code = launch(runner, tpu, launch_spec, attempt)
        if code == 0:
            runner.note(f"run {launch_spec.run_id} finished: {attempt} attempt(s), "
                        f"{preemptions} preemption(s), {failures} failure(s)")
            final = 0
            break
        state = _describe(runner, tpu, policy)
        if state != gcloud.READY:
            runner.note(f"run {launch_spec.run_id} stopped with exit {code} and {name} is "
                        f"{state or 'gone'}: relaunching on a new VM")
            continue
        failures += 1
        if failures > policy.retries:
            runner.note(f"run {launch_spec.run_id} failed with exit {code} on a READY VM; "
                        f"{failures} failures, giving up")
            final = code
            break
        runner.sleep(gcloud.backoff_seconds(failures, policy.backoff_s, policy.max_backoff_s),
                     f"run failed with exit {code} on a READY VM (failure {failures} of at most "
                     f"{policy.retries})")
    if policy.delete_after:
        runner.note(f"deleting {name} (--delete-after)")
        gcloud.delete_tpu(runner, tpu)
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tpu_setup.babysit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    gcloud.add_tpu_arguments(parser, creates=True)
    add_install_arguments(parser)
    parser.add_argument("--run-dir", default=None,
                        help="gs://BUCKET/PATH run directory (checkpoints, metrics)")
    parser.add_argument("--run-dir-flag", default="--run_dir",
                        help="the entry point's flag that receives the run directory")
    add_retry_arguments(parser, retries=10)
    parser.add_argument("--create-retries", type=int, default=20,
                        help="creation failures in a row before giving up")
    parser.add_argument("--max-preemptions", type=int, default=100,
                        help="preemptions before giving up")
    parser.add_argument("--delete-after", action="store_true",
                        help="delete the VM when the run has finished or failed")
    add_launch_arguments(parser)
    gcloud.add_runner_arguments(parser, states=True, create_codes=True, job_codes=True)
    args = parser.parse_args(argv)
    try:
        tpu = gcloud.tpu_spec_from_args(args, creates=True)
        check_retry_arguments(args)
        for flag in ("create_retries", "max_preemptions"):
            if getattr(args, flag) < 0:
                raise ValueError(f"--{flag.replace('_', '-')} must be >= 0, "
                                 f"got {getattr(args, flag)}")
        run_dir = check_run_dir(args.run_dir)
        flag = args.run_dir_flag
        if any(c == flag or c.startswith(flag + "=") for c in args.command):
            raise ValueError(f"the command already sets {flag}: give the run directory once, "
                             "as the babysitter's --run-dir")
        source = resolve_source(args.source_dir, args.commit, args.repo)
        install_spec = install_spec_from_args(args, tpu.accelerator.chips, source=source)
        launch_spec = launch_spec_from_args(args, source=source,
                                            extra_args=(f"{flag}={run_dir}",))
        policy = BabysitPolicy(retries=args.retries, create_retries=args.create_retries,
                               max_preemptions=args.max_preemptions, backoff_s=args.backoff,
                               max_backoff_s=args.max_backoff, poll_s=args.poll,
                               delete_after=args.delete_after)
        runner = gcloud.runner_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    runner.note(f"babysitting run {launch_spec.run_id} (commit {source.commit}) on {tpu.name}, "
                f"{tpu.accelerator.name} in {tpu.zone}; run directory {run_dir}")
    return babysit(runner, tpu, install_spec, launch_spec, policy)


if __name__ == "__main__":
    sys.exit(main())
