"""Checkpoints of a training run: the state pytree, the data position and run metadata.

One step directory per checkpoint (orbax ``CheckpointManager``) with two items: ``state``, the
``TrainState`` arrays (each process writes its own shards), and ``data``, a JSON record::

    {"data_position": 1200, "fingerprint": "3f2a...", "meta": {...}, "frozen_saved": false}

A ``TrainState``'s frozen parameters (``state.frozen``) are not written: they never change during
training, and a resumed run rebuilds them with its fresh state from the reference model, so
:meth:`Checkpointer.restore_latest` takes them from the state it is given. (Gemma-3-270M in
float32 training its top 2 layers with AdamW: 1.03 GB of frozen parameters, 88% of the state's
bytes.) Checkpoints written with the frozen parameters (records without ``frozen_saved``) still
restore; with a concrete target their frozen arrays are not read.

Since ``state_layout`` 2 the optimiser state covers ``{"params": params, **extra}`` for every
method (``TrainState.create``); a checkpoint written before (records without ``state_layout``)
of a state without extras had it over ``params`` alone, and restores into the new layout (the
same arrays, one dict level added).

A run directory belongs to one configuration: its fingerprint (:func:`config_fingerprint`) is
stored with every checkpoint, and opening the directory with another fingerprint raises before
anything is restored or overwritten.

Every JAX process must call the same methods in the same order; orbax coordinates the processes
(no call here is gated on process 0).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from bonjax.fingerprint import config_fingerprint
from bonjax.training.state import TrainState

__all__ = ["Checkpointer", "abstract_like", "config_fingerprint"]

STATE_LAYOUT = 2
"""The ``TrainState`` layout this module writes (see the module docstring)."""


def abstract_like(state: Any) -> Any:
    """``jax.ShapeDtypeStruct`` leaves with the shapes, dtypes and shardings of ``state``'s.

    A restore target for a checkpoint of ``state``: restored arrays land in the same shardings.
    Leaves that already are ``jax.ShapeDtypeStruct`` are kept as they are.
    """

    def abstract(leaf):
        if isinstance(leaf, jax.ShapeDtypeStruct):
            return leaf
        sharding = getattr(leaf, "sharding", None)
        return jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype, sharding=sharding)

    return jax.tree.map(abstract, state)


def _without_frozen(state: Any) -> Any:
    """What a checkpoint stores of ``state``: a ``TrainState`` without its frozen parameters."""
    return state.replace(frozen=None) if isinstance(state, TrainState) else state


def _without_params_level(opt_state: Any) -> Any:
    """``opt_state`` over ``{"params": params}`` as it was over ``params`` (layout 1)."""
    def is_params_dict(x):
        return type(x) is dict and list(x) == ["params"]

    return jax.tree.map(lambda x: x["params"] if is_params_dict(x) else x, opt_state,
                        is_leaf=is_params_dict)


def _as_path(directory: str | os.PathLike) -> epath.Path:
    text = os.fspath(directory)
    return epath.Path(text if "://" in text else os.path.abspath(text))


def _check_not_deleted(frozen: Any, where: epath.Path) -> None:
    for leaf in jax.tree.leaves(frozen):
        if isinstance(leaf, jax.Array) and leaf.is_deleted():
            raise ValueError(
                f"restoring {where}: the target's frozen parameters were deleted (donated to a "
                "step?); pass a freshly initialised state")


class Checkpointer:
    """Saves a run's state every ``save_every`` steps and restores the latest checkpoint.

    Args:
      directory: the run's checkpoint directory (local path or a ``gs://`` URI).
      save_every: :meth:`should_save` is true at positive multiples of this step count.
      max_to_keep: how many of the newest checkpoints are kept.
      fingerprint: the run's :func:`config_fingerprint`; checkpoints already in ``directory``
        with another (or none) raise a ValueError here, before anything is written.
      async_save: write in a background thread (the arrays are copied to host memory before
        :meth:`save` returns, so the caller may donate them at once); :meth:`wait` and
        :meth:`close` block until the writes are committed.
    """

    def __init__(self, directory: str | os.PathLike, *, save_every: int, max_to_keep: int = 3,
                 fingerprint: str | None = None, async_save: bool = True):
        if save_every < 1:
            raise ValueError(f"save_every must be >= 1, got {save_every}")
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
        self.directory = _as_path(directory)
        self.save_every = save_every
        self.fingerprint = fingerprint
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save)
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        latest = self._manager.latest_step()
        if latest is not None:
            self._read_data(latest)

    @property
    def latest_step(self) -> int | None:
        """The newest committed (or, in this process, started) checkpoint's step."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def should_save(self, step: int) -> bool:
        return step > 0 and step % self.save_every == 0

    def save(self, step: int, state: Any, data_position: int, meta: Mapping[str, Any] | None = None,
             *, force: bool = False) -> bool:
        """Saves ``state`` as the checkpoint of ``step`` when due (or ``force``); True if saved.

        A ``TrainState`` is saved without ``state.frozen`` (see the module docstring).
        ``data_position`` is where the data stream continues after this state; ``meta`` is any
        JSON-serialisable record (stored as given, returned by :meth:`restore_latest`). A step
        that already has a checkpoint is not saved again.
        """
        if not force and not self.should_save(step):
            return False
        if step in self._manager.all_steps():
            return False
        record = {"data_position": int(data_position), "fingerprint": self.fingerprint,
                  "meta": dict(meta or {}), "frozen_saved": False, "state_layout": STATE_LAYOUT}
        try:
            json.dumps(record)
        except TypeError as err:
            raise ValueError(f"checkpoint meta must be JSON-serialisable: {err}") from err
        return self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_without_frozen(state)),
            data=ocp.args.JsonSave(record)), force=True)

    def _read_data(self, step: int) -> dict[str, Any]:
        record = self._manager.restore(
            step, args=ocp.args.Composite(data=ocp.args.JsonRestore())).data
        stored = record.get("fingerprint")
        if self.fingerprint is not None and stored != self.fingerprint:
            raise ValueError(
                f"checkpoint directory {self.directory} holds checkpoints of another config "
                f"(fingerprint {stored!r} at step {step}; this run's is {self.fingerprint!r}): "
                "resume with the original config or use a fresh directory")
        return record

    def restore_latest(self, target: Any) -> tuple[Any, int, dict[str, Any]] | None:
        """(state, data position, meta) of the newest checkpoint, or None when there is none.

        ``target`` gives the shapes, dtypes and shardings to restore into: the freshly
        initialised state, or its :func:`abstract_like`, or a mix (arrays and
        ``jax.ShapeDtypeStruct`` leaves). The restored arrays take the target's shardings,
        whatever the layout they were saved from. For a ``TrainState``, the restored state's
        ``frozen`` is ``target.frozen`` itself (not a copy), which must hold arrays, not
        ``jax.ShapeDtypeStruct``, unless it is empty or the checkpoint was written with its frozen
        parameters.
        """
        self.wait()
        step = self._manager.latest_step()
        if step is None:
            return None
        record = self._read_data(step)
        frozen_saved = bool(record.get("frozen_saved", True))
        layout_1 = (isinstance(target, TrainState) and not target.extra
                    and record.get("state_layout", 1) == 1)
        if layout_1:  # restored as written, then given the "params" level it lacks
            opt_tree = jax.tree.structure(target.opt_state)
            target = target.replace(opt_state=_without_params_level(target.opt_state))
        if not isinstance(target, TrainState):
            state = self._restore_state(step, abstract_like(target))
        elif any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(target.frozen)):
            if not frozen_saved:
                raise ValueError(
                    f"checkpoint {self.directory / str(step)} holds no frozen parameters (they "
                    "are rebuilt with the fresh state, not saved): pass restore_latest the "
                    "freshly initialised state, whose frozen arrays it keeps, not an abstract "
                    "target")
            state = self._restore_state(step, abstract_like(target))
        else:
            _check_not_deleted(target.frozen, self.directory / str(step))
            skeleton = abstract_like(_without_frozen(target))
            if frozen_saved:
                state = self._restore_state_leaving_out_frozen(step, skeleton)
            else:
                state = self._restore_state(step, skeleton)
            state = state.replace(frozen=target.frozen)
        if layout_1:
            state = state.replace(opt_state=jax.tree.unflatten(
                opt_tree, jax.tree.leaves(state.opt_state)))
        return state, int(record["data_position"]), dict(record["meta"])

    def _restore_state(self, step: int, abstract_state: Any) -> Any:
        return self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state))).state

    def _restore_state_leaving_out_frozen(self, step: int, skeleton: TrainState) -> TrainState:
        """A checkpoint written with ``frozen``, restored without reading it (orbax partial
        restore of the ``state`` item, outside the manager, whose handler for it is fixed)."""
        args = ocp.args.PyTreeRestore(
            item=skeleton, restore_args=ocp.checkpoint_utils.construct_restore_args(skeleton),
            partial_restore=True)
        checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
        try:
            return checkpointer.restore(self.directory / str(step) / "state", args=args)
        finally:
            checkpointer.close()

    def wait(self) -> None:
        """Blocks until every started save is committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
