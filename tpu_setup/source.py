"""Which bonjax code goes to the TPU hosts: one git commit of a local checkout.

The hosts run exactly one commit, recorded at install time in ``~/bonjax/.bonjax_commit`` and
checked again at launch. It reaches them either by ``git clone`` of a repository URL
(``--repo``; the commit must be pushed there) or, without a URL, as a ``git archive`` of the
commit copied to every host. Uncommitted changes never travel: the scripts warn about them.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Sequence

__all__ = ["Source", "resolve_source", "default_source_dir", "check_entry_point",
           "archive_command"]

_PYTHONS = ("python", "python3", "python3.11")
_SHELLS = ("bash", "sh")


def default_source_dir() -> str:
    """The checkout that holds these scripts."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(root: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, check=False)


@dataclasses.dataclass(frozen=True)
class Source:
    """A commit of the checkout ``root``; ``repo`` is the URL hosts clone, None to copy it."""

    root: str
    commit: str
    repo: str | None = None
    dirty: bool = False

    def has_path(self, path: str) -> bool:
        """Whether ``path`` (relative to the repository root) exists in the commit."""
        return _git(self.root, "cat-file", "-e", f"{self.commit}:{path}").returncode == 0

    @property
    def short(self) -> str:
        return self.commit[:12]


def resolve_source(root: str | None = None, ref: str = "HEAD", repo: str | None = None) -> Source:
    """The full commit id of ``ref`` in the checkout ``root`` (ValueError naming what is wrong)."""
    root = os.path.abspath(root or default_source_dir())
    top = _git(root, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise ValueError(f"source directory {root!r} is not a git checkout: "
                         f"{top.stderr.strip()}")
    root = top.stdout.strip()
    commit = _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if commit.returncode != 0:
        raise ValueError(f"commit {ref!r} does not exist in {root}")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    source = Source(root=root, commit=commit.stdout.strip(), repo=repo or None,
                    dirty=bool(status.stdout.strip()))
    if not source.has_path("requirements.txt"):
        raise ValueError(f"commit {source.short} of {root} has no requirements.txt: "
                         "is this a bonjax checkout?")
    return source


def _module_paths(module: str) -> list[str]:
    base = module.replace(".", "/")
    return [f"{base}.py", f"{base}/__main__.py"]


def check_entry_point(source: Source, command: Sequence[str]) -> None:
    """Raises ValueError when ``command`` is empty or names a module/script absent from the commit.

    Checked forms: ``python[3] -m MODULE ...``, ``python[3] SCRIPT.py ...``, ``bash SCRIPT ...``.
    Other programs are passed through unchecked.
    """
    if not command:
        raise ValueError("missing entry point: give the command after '--', e.g. "
                         "-- python -m experiments.train --config=...")
    program, rest = os.path.basename(command[0]), list(command[1:])
    if program in _PYTHONS:
        for i, arg in enumerate(rest):
            if arg == "-m":
                if i + 1 >= len(rest):
                    raise ValueError(f"entry point {' '.join(command)!r}: '-m' needs a module")
                module = rest[i + 1]
                paths = _module_paths(module)
                if not any(source.has_path(p) for p in paths):
                    raise ValueError(f"entry point module {module!r} is not in commit "
                                     f"{source.short} of {source.root} (looked for "
                                     f"{' or '.join(paths)})")
                return
            if arg == "-c":
                return
            if not arg.startswith("-"):
                _check_script(source, arg)
                return
        raise ValueError(f"entry point {' '.join(command)!r} runs no module or script")
    if program in _SHELLS and rest and not rest[0].startswith("-"):
        _check_script(source, rest[0])


def _check_script(source: Source, path: str) -> None:
    relative = os.path.normpath(path)
    if os.path.isabs(relative) or relative.startswith(".."):
        return
    if not source.has_path(relative):
        raise ValueError(f"entry point script {path!r} is not in commit {source.short} of "
                         f"{source.root}")


def archive_command(source: Source, output_path: str) -> list[str]:
    """``git archive`` of the commit as a .tar.gz (the copy that goes to the hosts)."""
    return ["git", "-C", source.root, "archive", "--format=tar.gz", f"--output={output_path}",
            source.commit]
