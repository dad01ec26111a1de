"""The run directory: it belongs to one configuration and records who ran it, from which commit.

::

    run_dir/
      config.json     the configuration and its fingerprint (written by the first call)
      run.json        run id, the reward actually used, one record per call (git commit, time)

A directory whose ``config.json`` holds another fingerprint, or a non-empty directory without
one, is refused before anything is written, except where the two configs differ only by fields
the stored one lacks (fields added to the code since the run began): the run resumes, keeps its
fingerprint and stored config, and a warning names the fields. Only JAX process 0 writes;
every process checks, and every process holds process 0's record (one run id).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import pathlib
import socket
import subprocess
import uuid
from collections.abc import Mapping
from typing import Any

import jax
from jax.experimental import multihost_utils

from bonjax import distributed
from bonjax.fingerprint import config_fingerprint

__all__ = ["CONFIG_FILE", "RUN_FILE", "RunDirectory", "git_commit"]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"


def git_commit(directory: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the git checkout holding
    ``directory`` (default: this package's source)."""
    cwd = os.fspath(directory or pathlib.Path(__file__).resolve().parent)

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                                 check=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _differences(stored: Mapping[str, Any], given: Mapping[str, Any], limit: int = 6) -> str:
    a, b = _flatten(stored), _flatten(json.loads(json.dumps(given)))
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))
    shown = [f"{k}: {a.get(k, '<absent>')!r} there, {b.get(k, '<absent>')!r} here"
             for k in keys[:limit]]
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return "; ".join(shown) + more


def _restrict(given: Any, stored: Any) -> Any:
    """``given`` without the mapping keys that ``stored`` lacks (at every depth)."""
    if isinstance(given, Mapping) and isinstance(stored, Mapping):
        return {k: _restrict(v, stored[k]) for k, v in given.items() if k in stored}
    return given


def _resumable(stored: Mapping[str, Any], config: Mapping[str, Any], fingerprint: str,
               path: pathlib.Path) -> str:
    """The stored fingerprint when ``config`` differs from the stored config only by fields the
    run's code did not have yet (they take their values here, with a warning naming them), so
    a run resumes under newer code; otherwise ``fingerprint`` unchanged (the caller refuses)."""
    stored_config = stored.get("config", {})
    restricted = _restrict(json.loads(json.dumps(config)), stored_config)
    if config_fingerprint(restricted) != stored.get("fingerprint"):
        return fingerprint
    added = sorted(set(_flatten(json.loads(json.dumps(config)))) - set(_flatten(restricted)))
    logger.warning("run directory %s predates the config fields %s: resuming it with their "
                   "values here", path, ", ".join(added))
    return stored["fingerprint"]


def _write_json(path: pathlib.Path, record: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class RunDirectory:
    """Opens ``path`` for ``config``: creates it, or checks that it belongs to ``config``.

    Args:
      path: the run directory.
      config: the run's configuration (an ``ml_collections.ConfigDict`` or a mapping).

    Raises:
      ValueError: if the directory holds another configuration's run, or is a non-empty
        directory that no run created.
    """

    def __init__(self, path: str | os.PathLike, config: Any):
        self.path = pathlib.Path(path).expanduser().absolute()
        self.config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        self.fingerprint = config_fingerprint(config)
        self.is_main = distributed.is_main_process()
        config_path = self.path / CONFIG_FILE
        if config_path.exists():
            stored = json.loads(config_path.read_text())
            if stored.get("fingerprint") != self.fingerprint:
                self.fingerprint = _resumable(stored, self.config, self.fingerprint, self.path)
            if stored.get("fingerprint") != self.fingerprint:
                raise ValueError(
                    f"run directory {self.path} belongs to another config (fingerprint "
                    f"{stored.get('fingerprint')!r}, this config's is {self.fingerprint!r}; "
                    f"{_differences(stored.get('config', {}), self.config)}): resume it with "
                    "its own config or choose a fresh --run_dir")
        elif self.path.exists() and any(self.path.iterdir()):
            raise ValueError(f"run directory {self.path} is not empty and has no {CONFIG_FILE}: "
                             "it was not created by a run; choose a fresh --run_dir")
        if jax.process_count() > 1:  # every process has checked before process 0 writes
            multihost_utils.sync_global_devices("bonjax.experiment.RunDirectory")
        self.record = self._start()

    def _start(self) -> dict[str, Any]:
        record_path = self.path / RUN_FILE
        if record_path.exists():
            record = json.loads(record_path.read_text())
        else:
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
            record = {"run_id": f"{stamp}-{uuid.uuid4().hex[:8]}", "created": _now(),
                      "fingerprint": self.fingerprint, "invocations": []}
        record["invocations"].append({
            "started": _now(), **git_commit(), "host": socket.gethostname(),
            "processes": jax.process_count(), "devices": jax.device_count(),
            "platform": jax.devices()[0].platform, "jax": jax.__version__})
        record = distributed.broadcast_json(record)  # one run id and record for every process
        if self.is_main:
            self.path.mkdir(parents=True, exist_ok=True)
            if not (self.path / CONFIG_FILE).exists():
                _write_json(self.path / CONFIG_FILE,
                            {"fingerprint": self.fingerprint, "config": self.config})
            _write_json(record_path, record)
        return record

    @property
    def run_id(self) -> str:
        return self.record["run_id"]

    def check_reward(self, description: str) -> None:
        """Records the reward actually used; a resumed run must use the same one."""
        stored = self.record.get("reward")
        if stored is not None and stored != description:
            raise ValueError(f"run directory {self.path} was started with the reward {stored!r} "
                             f"but this call would use {description!r}: resuming would mix two "
                             "rewards; restore the original reward or choose a fresh --run_dir")
        self.record["reward"] = description
        self.save()

    def finish(self, wall_seconds: float, complete: bool) -> None:
        """Closes this call's record with its wall time and whether the run is complete."""
        self.record["invocations"][-1].update(finished=_now(), complete=complete,
                                              wall_seconds=round(wall_seconds, 1))
        self.save()

    @property
    def wall_seconds(self) -> float:
        """Wall time of every finished call of the run."""
        return sum(i.get("wall_seconds", 0.0) for i in self.record["invocations"])

    def save(self) -> None:
        if self.is_main:
            _write_json(self.path / RUN_FILE, self.record)

    def finished_record(self, relative: str, steps: int) -> dict | None:
        """Process 0's reading of the JSON record ``run_dir/relative`` (a stage's evaluation)
        if it exists and its ``"step"`` is ``steps`` (the stage trained to the end), else None;
        every process gets the same answer."""
        record = None
        path = self.path / relative
        if distributed.is_main_process() and path.exists():
            record = json.loads(path.read_text())
            record = record if record.get("step") == steps else None
        return distributed.broadcast_json(record)

    def write_json(self, relative: str, record: Mapping[str, Any]) -> pathlib.Path:
        """Writes ``record`` to ``run_dir/relative`` atomically (process 0 only)."""
        path = self.path / relative
        if self.is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_json(path, record)
        return path
