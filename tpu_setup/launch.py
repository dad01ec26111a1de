"""Launches one command on every host of a TPU VM at once, with a run id, a commit and logs.

    python -m tpu_setup.launch --name NAME --zone ZONE [--run-id ID] [--env KEY=VALUE ...] \\
        [--background] [--dry-run] -- python -m experiments.train --config=...

Every host runs the same command (``gcloud ... ssh --worker=all``); the entry point calls
``jax.distributed.initialize()``, which finds the other hosts of the slice by itself. On each host
the command runs in ``~/bonjax`` inside the venv, with ``RUN_ID``, ``BONJAX_GIT_COMMIT`` and the
``--env`` variables set, and appends its output to ``~/bonjax_logs/RUN_ID.HOSTNAME.log`` (a header
line records the run id, commit, attempt and start time). The launch refuses to start when a
host's code is not the expected commit (``tpu_setup.install`` puts it there). A previous process
of the same run id on a host (its process group, from ``RUN_ID.HOSTNAME.pid``) is stopped first,
so a relaunch never competes with a stale job for the TPU.

Without ``--background`` the ssh session lasts as long as the job and its exit code is the job's
(what ``tpu_setup.babysit`` relies on); with it, the job is detached and the command returns.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import re
import secrets
import shlex
import sys

from tpu_setup import gcloud
from tpu_setup.install import DEFAULT_VENV, REMOTE_DIR, remote_path
from tpu_setup.source import Source, check_entry_point, resolve_source

__all__ = ["LaunchSpec", "default_run_id", "remote_launch_script", "launch",
           "add_launch_arguments", "launch_spec_from_args", "main"]

LOG_DIR = "bonjax_logs"
# Seconds a previous job of the run gets after SIGTERM (bonjax's training loop saves a
# checkpoint on SIGTERM) before its process group is killed.
STOP_GRACE_S = 120


def default_run_id() -> str:
    """``YYYYmmdd-HHMMSS-xxxxxx`` (UTC time and 6 random hex digits)."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


@dataclasses.dataclass(frozen=True)
class LaunchSpec:
    """The command to run on every host, its run id, environment and code commit.

    ``extra_args`` are appended to ``command`` (the babysitter's ``--run_dir=gs://...``).
    """

    command: tuple[str, ...]
    run_id: str
    source: Source
    extra_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    venv: str = DEFAULT_VENV
    background: bool = False
    check_commit: bool = True

    def __post_init__(self):
        gcloud.check_run_id(self.run_id)
        check_entry_point(self.source, self.command)
        for key, _ in self.env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"invalid environment variable name {key!r} in --env")


def remote_launch_script(spec: LaunchSpec, attempt: int = 1) -> str:
    """The bash script each host runs; its exit code is the job's (foreground) or 0 (background)."""
    commit, run_id = spec.source.commit, spec.run_id
    code, venv = remote_path(REMOTE_DIR), remote_path(spec.venv)
    logs = remote_path(LOG_DIR)
    env = [("RUN_ID", run_id), ("BONJAX_GIT_COMMIT", commit), ("BONJAX_ATTEMPT", str(attempt)),
           *spec.env]
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env)
    # The job runs in its own session and process group (setsid); its group leader records its
    # pid and removes the file when the job ends, so a relaunch stops exactly that group. A pid
    # is only trusted while its process still carries this run's RUN_ID (pids get reused).
    job_words = ("setsid --wait bash -c "
                 + shlex.quote('echo $$ > "$0"; "$@"; rc=$?; rm -f "$0"; exit $rc')
                 + ' "$pid" ' + shlex.join(spec.command + spec.extra_args))
    lines = [
        "set -eo pipefail",
        f"cd {code}",
    ]
    if spec.check_commit:
        lines.append(
            f'if [ "$(cat .bonjax_commit 2>/dev/null)" != {commit} ]; then echo "bonjax on '
            f'$(hostname) is not commit {commit}: run tpu_setup.install first" >&2; exit 3; fi')
    lines += [
        f"mkdir -p {logs}",
        f'log={logs}/{run_id}."$(hostname)".log',
        f'pid={logs}/{run_id}."$(hostname)".pid',
        'old="$(cat "$pid" 2>/dev/null || true)"',
        'if [ -n "$old" ] && tr "\\0" "\\n" < /proc/"$old"/environ 2>/dev/null '
        f'| grep -qxF RUN_ID={run_id}; then',
        '  echo "stopping the previous process group $old of this run (SIGTERM)" >&2',
        '  kill -- -"$old" 2>/dev/null || true',
        f"  for _ in $(seq {STOP_GRACE_S}); do",
        '    kill -0 -- -"$old" 2>/dev/null || break; sleep 1',
        "  done",
        '  kill -KILL -- -"$old" 2>/dev/null || true',
        "fi",
        # libtpu leaves its lock file behind when a job is killed; a new job cannot start with it.
        "rm -f /tmp/libtpu_lockfile",
        f"source {venv}/bin/activate",
        f"export {exports}",
        f'echo "=== run {run_id} commit {commit} attempt {attempt} host $(hostname) start '
        f'$(date -u +%Y-%m-%dT%H:%M:%SZ) ===" >> "$log"',
    ]
    if spec.background:
        lines += [
            f'nohup {job_words} >> "$log" 2>&1 < /dev/null &',
            f'echo "started run {run_id} on $(hostname); log: $log"',
        ]
    else:
        lines.append(f'{job_words} 2>&1 < /dev/null | tee -a "$log"')
    return "\n".join(lines)


def launch(runner: gcloud.Runner, tpu: gcloud.TpuSpec, spec: LaunchSpec, attempt: int = 1) -> int:
    """Runs the job on every host; returns the ssh exit code (the job's in the foreground)."""
    argv = gcloud.ssh_command(tpu, remote_launch_script(spec, attempt))
    if runner.dry_run:
        runner.show(argv)
        code = runner.simulation.next_job_code()
        runner.note(f"simulated exit code of run {spec.run_id} attempt {attempt}: {code}")
        return code
    return runner.run(argv)


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-id", default=None,
                        help="run id (default: UTC time + random suffix)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment variable for the job (repeatable)")
    parser.add_argument("--no-commit-check", action="store_true",
                        help="start even when a host's code is not the expected commit")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the entry point and its arguments, after '--'")


def _parse_env(items: list[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"invalid --env {item!r}: expected KEY=VALUE")
        pairs.append((key, value))
    return tuple(pairs)


def launch_spec_from_args(args: argparse.Namespace, source: Source | None = None,
                          background: bool = False, extra_args: tuple[str, ...] = ()
                          ) -> LaunchSpec:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    source = source or resolve_source(args.source_dir, args.commit)
    return LaunchSpec(command=tuple(command), extra_args=tuple(extra_args),
                      run_id=args.run_id or default_run_id(), source=source,
                      env=_parse_env(args.env), venv=args.venv, background=background,
                      check_commit=not args.no_commit_check)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tpu_setup.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    gcloud.add_tpu_arguments(parser, creates=False)
    parser.add_argument("--source-dir", default=None, help="local bonjax checkout")
    parser.add_argument("--commit", default="HEAD", help="commit the hosts must be at")
    parser.add_argument("--venv", default=DEFAULT_VENV, help="venv on the hosts")
    parser.add_argument("--background", action="store_true",
                        help="detach the job and return once it has started")
    add_launch_arguments(parser)
    gcloud.add_runner_arguments(parser, job_codes=True)
    args = parser.parse_args(argv)
    try:
        tpu = gcloud.tpu_spec_from_args(args, creates=False)
        spec = launch_spec_from_args(args, background=args.background)
        runner = gcloud.runner_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    runner.note(f"run {spec.run_id} commit {spec.source.commit}")
    if spec.source.dirty:
        runner.note(f"warning: {spec.source.root} has uncommitted changes; the hosts run commit "
                    f"{spec.source.short}")
    return launch(runner, tpu, spec)


if __name__ == "__main__":
    sys.exit(main())
