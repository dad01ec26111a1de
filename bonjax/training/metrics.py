"""Scalar metrics of a run: a JSON-lines file and TensorBoard event files, from process 0 only.

``run_dir/metrics.jsonl`` gets one line per step::

    {"step": 12, "time": 1767312000.5, "loss": 2.31, "grad_norm": 0.84, "skipped": 0}

(``time``: Unix seconds when the line was written; a non-finite value is written as ``NaN`` or
``Infinity``, which Python's ``json`` reads back.) ``run_dir/tensorboard/`` gets the same
scalars. On every other JAX process the writer does nothing, so all processes can call it.

A resumed run calls :meth:`MetricsWriter.rewind` with its checkpoint's step: lines of later steps
(logged before the run was killed, and about to be logged again) are dropped from the file and
purged from TensorBoard, so every step appears exactly once.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

__all__ = ["MetricsWriter", "read_metrics"]

JSONL_NAME = "metrics.jsonl"


def _scalar(name: str, value: Any) -> float | int:
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"metric {name!r} must be a scalar, got shape {array.shape}")
    item = array.reshape(()).item()
    if isinstance(item, bool | np.bool_):
        return int(item)
    if not isinstance(item, int | float):
        raise ValueError(f"metric {name!r} must be a number, got {item!r}")
    return item


def _read_lines(path: str) -> list[dict[str, Any]]:
    """The records of a metrics file; a torn last line (a write cut by a kill) is dropped."""
    with open(path) as f:
        lines = f.read().splitlines()
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1} is not a JSON line: {line[:80]!r}") from err
    return records


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl``, in file order."""
    return _read_lines(os.path.join(os.fspath(run_dir), JSONL_NAME))


class MetricsWriter:
    """Writes per-step scalars to ``run_dir/metrics.jsonl`` and TensorBoard (process 0 only).

    Args:
      run_dir: the run's directory (created if missing).
      tensorboard: also write TensorBoard event files under ``run_dir/tensorboard``
        (needs ``tensorboardX``).
    """

    def __init__(self, run_dir: str | os.PathLike, *, tensorboard: bool = True):
        self.run_dir = os.fspath(run_dir)
        self.active = jax.process_index() == 0
        self.path = os.path.join(self.run_dir, JSONL_NAME)
        self._tensorboard = tensorboard
        self._summary = None
        self._purge_step: int | None = None
        self._file = None
        if not self.active:
            return
        if tensorboard:
            try:
                import tensorboardX  # noqa: F401
            except ImportError as err:
                raise ImportError("MetricsWriter(tensorboard=True) needs tensorboardX "
                                  "(pip install tensorboardX)") from err
        os.makedirs(self.run_dir, exist_ok=True)
        self._file = open(self.path, "a")

    def write(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Logs the scalars of one step (numbers, 0-d or 1-element arrays, already on host)."""
        self.write_many([(step, scalars)])

    def write_many(self, records: list[tuple[int, Mapping[str, Any]]]) -> None:
        """Logs several steps' scalars with one file flush."""
        if not self.active:
            return
        if self._file is None:
            raise ValueError(f"metrics writer for {self.run_dir} is closed")
        now = time.time()
        lines = []
        for step, scalars in records:
            values = {name: _scalar(name, v) for name, v in scalars.items()}
            for reserved in ("step", "time"):
                if reserved in values:
                    raise ValueError(f"metric name {reserved!r} is reserved")
            lines.append(json.dumps({"step": int(step), "time": now, **values}))
            if self._tensorboard:
                summary = self._summary_writer()
                for name, value in values.items():
                    summary.add_scalar(name, value, global_step=int(step), walltime=now)
        self._file.write("".join(line + "\n" for line in lines))
        self._file.flush()

    def _summary_writer(self):
        if self._summary is None:
            from tensorboardX import SummaryWriter

            self._summary = SummaryWriter(os.path.join(self.run_dir, "tensorboard"),
                                          purge_step=self._purge_step)
        return self._summary

    def rewind(self, step: int) -> None:
        """Forgets everything logged for steps after ``step`` (a run resuming at ``step``)."""
        if not self.active:
            return
        if self._file is None:
            raise ValueError(f"metrics writer for {self.run_dir} is closed")
        self._file.close()
        kept = [r for r in _read_lines(self.path) if r["step"] <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)
        self._file = open(self.path, "a")
        if self._summary is not None:
            self._summary.close()
            self._summary = None
        self._purge_step = step + 1

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
        if self._summary is not None:
            self._summary.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._summary is not None:
            self._summary.close()
            self._summary = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
