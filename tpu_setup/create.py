"""Creates a TPU VM or pod slice, retrying with exponential backoff while capacity is short.

    python -m tpu_setup.create --name NAME --zone ZONE --accelerator-type v5litepod-16 \\
        [--capacity spot|preemptible|reserved|on-demand] [--queued] [--runtime-version V] \\
        [--retries 5] [--dry-run]

Runs ``gcloud compute tpus tpu-vm create NAME --zone=ZONE --accelerator-type=TYPE
--version=RUNTIME [--spot|--preemptible|--reserved]``, or with ``--queued`` a queued resource
(``gcloud compute tpus queued-resources create NAME ... --node-id=NAME``) that it then polls
until ACTIVE. The runtime version defaults to the one Cloud TPU recommends for JAX on the
accelerator's generation (v5litepod: v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5, v6e:
v2-alpha-tpuv6e, v4: tpu-ubuntu2204-base).
"""

from __future__ import annotations

import argparse
import sys

from tpu_setup import gcloud

__all__ = ["create_with_retries", "add_retry_arguments", "check_retry_arguments", "main"]


def create_with_retries(runner: gcloud.Runner, tpu: gcloud.TpuSpec, retries: int,
                        backoff_s: float, max_backoff_s: float, poll_s: float = 60.0) -> int:
    """Up to ``retries + 1`` creation attempts with exponential backoff between them."""
    for attempt in range(1, retries + 2):
        code = gcloud.create_tpu(runner, tpu, poll_s=poll_s)
        if code == 0:
            runner.note(f"{tpu.name} created ({tpu.accelerator.name}, "
                        f"{tpu.accelerator.chips} chips)")
            return 0
        if attempt > retries:
            runner.note(f"creating {tpu.name} failed {attempt} times; giving up (exit {code})")
            return code
        runner.sleep(gcloud.backoff_seconds(attempt, backoff_s, max_backoff_s),
                     f"creation attempt {attempt} of {retries + 1} failed with exit {code}")
    raise AssertionError("unreachable")


def add_retry_arguments(parser: argparse.ArgumentParser, retries: int) -> None:
    parser.add_argument("--retries", type=int, default=retries, help="retries after a failure")
    parser.add_argument("--backoff", type=float, default=30.0,
                        help="first pause between retries (s); doubles each time")
    parser.add_argument("--max-backoff", type=float, default=600.0, help="longest pause (s)")
    parser.add_argument("--poll", type=float, default=60.0,
                        help="pause between state checks of a queued resource (s)")


def check_retry_arguments(args: argparse.Namespace) -> None:
    if args.retries < 0:
        raise ValueError(f"--retries must be >= 0, got {args.retries}")
    for flag in ("backoff", "max_backoff", "poll"):
        if getattr(args, flag) < 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 0, got {getattr(args, flag)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tpu_setup.create", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    gcloud.add_tpu_arguments(parser, creates=True)
    add_retry_arguments(parser, retries=5)
    gcloud.add_runner_arguments(parser, create_codes=True)
    args = parser.parse_args(argv)
    try:
        tpu = gcloud.tpu_spec_from_args(args, creates=True)
        check_retry_arguments(args)
        runner = gcloud.runner_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    return create_with_retries(runner, tpu, args.retries, args.backoff, args.max_backoff,
                               args.poll)


if __name__ == "__main__":
    sys.exit(main())
