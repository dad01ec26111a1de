"""The generic training loop: resume, step, log, checkpoint, stop cleanly on a signal.

::

    step_fn = jax.jit(step, donate_argnums=0)       # (state, batch) -> (state, metrics)
    with Checkpointer(run_dir / "checkpoints", save_every=500, fingerprint=fp) as ckpt, \\
         MetricsWriter(run_dir) as writer:
        state = train_loop(step_fn, state, batches, num_steps=10_000, checkpointer=ckpt,
                           metrics=writer, log_every=10)

``batches(position)`` returns the batch at data position ``position`` and must be a pure
function of it: the loop consumes positions ``p, p + 1, ...`` from where the restored checkpoint
left off, so a killed and resumed run sees exactly the batches an uninterrupted one would (and,
with the RNG key in the state, computes bit for bit the same parameters).

Metrics stay on device and are fetched every ``log_every`` steps in one transfer, then written
one line per step. A step whose ``skipped`` metric is set (see ``update.apply_updates``) is
reported by a warning naming it.

SIGINT and SIGTERM (a preempted machine) stop the loop at the next step boundary: it saves a
checkpoint and raises ``KeyboardInterrupt`` (SIGINT) or ``SystemExit(128 + SIGTERM)``. A second
signal interrupts at once, without saving. With several JAX processes, the processes agree on
stopping at the next multiple of ``log_every``, so they all save the same step.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from bonjax import distributed
from bonjax.training.checkpoint import Checkpointer
from bonjax.training.metrics import MetricsWriter

__all__ = ["train_loop"]

logger = logging.getLogger(__name__)

StepFn = Callable[[Any, Any], tuple[Any, Mapping[str, jax.Array]]]


class _StopSignals:
    """Turns SIGINT/SIGTERM into a stop request while installed (main thread only)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.received is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.received = signum
        logger.warning("received %s: stopping after the current step and saving a checkpoint",
                       signal.Signals(signum).name)

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def should_stop(self, step: int, sync_every: int) -> bool:
        """Whether to stop before ``step + 1``; with several processes, a collective decision."""
        if jax.process_count() == 1:
            return self.received is not None
        if step % sync_every:
            return False
        flags = multihost_utils.process_allgather(np.int32(self.received is not None))
        return bool(np.asarray(flags).any())

    def raise_for_signal(self) -> None:
        if self.received == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + (self.received or signal.SIGTERM))


class _MetricsLog:
    """Device metrics of recent steps, fetched together; skipped steps counted and reported."""

    def __init__(self, writer: MetricsWriter | None, bar, progress_keys: Sequence[str]):
        self.writer = writer
        self.bar = bar
        self.progress_keys = tuple(progress_keys)
        self.pending: list[tuple[int, Mapping[str, jax.Array]]] = []
        self.skipped_steps: list[int] = []

    def add(self, step: int, metrics: Mapping[str, jax.Array]) -> None:
        self.pending.append((step, metrics))

    def flush(self) -> None:
        if not self.pending:
            return
        fetched = jax.device_get(self.pending)
        self.pending = []
        for step, values in fetched:
            if "skipped" in values and int(np.asarray(values["skipped"])):
                self.skipped_steps.append(step)
                logger.warning("step %d skipped: non-finite loss or gradient (%s)", step,
                               ", ".join(f"{k}={float(np.asarray(v))}" for k, v in values.items()
                                         if np.asarray(v).size == 1))
        if self.writer is not None:
            self.writer.write_many(fetched)
        last = fetched[-1][1]
        postfix = {k: float(np.asarray(last[k])) for k in self.progress_keys if k in last}
        if self.skipped_steps:
            postfix["skipped"] = len(self.skipped_steps)
        self.bar.set_postfix(postfix, refresh=False)


def _save(checkpointer: Checkpointer, step: int, state: Any, position: int,
          meta: Mapping[str, Any] | None, force: bool) -> None:
    state_step = int(jax.device_get(state.step))
    if state_step != step:
        raise ValueError(f"step_fn must advance state.step by one per call: after {step} steps "
                         f"state.step is {state_step}")
    checkpointer.save(step, state, position, meta, force=force)


def train_loop(step_fn: StepFn, state: Any, batches: Callable[[int], Any], *, num_steps: int,
               checkpointer: Checkpointer | None = None, metrics: MetricsWriter | None = None,
               log_every: int = 1, progress: bool = True, meta: Mapping[str, Any] | None = None,
               progress_keys: Sequence[str] = ("loss", "reward", "kl", "grad_norm")) -> Any:
    """Runs ``step_fn`` until ``state.step == num_steps``, resuming from the latest checkpoint.

    Args:
      step_fn: ``(state, batch) -> (state, metrics)``, jitted by the caller (donating the state
        is safe); it must advance ``state.step`` by one. ``metrics`` is a dict of device scalars.
      state: the initial state (a ``TrainState``); when ``checkpointer`` holds a checkpoint, the
        state is restored from it into this state's shapes and shardings instead, keeping this
        state's frozen parameters (checkpoints leave them out).
      batches: ``position -> batch``, deterministic in ``position``. A fresh run starts at data
        position ``state.step``; a resumed one at its checkpoint's data position.
      num_steps: the total number of steps of the run (not the number left).
      checkpointer: saves every ``checkpointer.save_every`` steps, at the end and on a stop
        signal; None runs without checkpoints.
      metrics: receives every step's metrics; on start it is rewound to the starting step.
      log_every: steps between metric fetches (one device-to-host transfer for all of them).
      progress: show a progress bar (process 0 only).
      meta: JSON-serialisable record saved with every checkpoint.
      progress_keys: metrics shown on the progress bar, when present.

    Returns:
      The final state, after every started checkpoint write has committed.
    """
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    position = None
    if checkpointer is not None:
        restored = checkpointer.restore_latest(state)
        if restored is not None:
            state, position, _ = restored
    step = int(jax.device_get(state.step))
    if position is None:
        position = step
    else:
        logger.info("resuming from the checkpoint of step %d at data position %d", step, position)
    if step > num_steps:
        raise ValueError(f"the state is at step {step}, past num_steps={num_steps}")
    if metrics is not None:
        metrics.rewind(step)

    bar = tqdm(total=num_steps, initial=step, desc="train", dynamic_ncols=True,
               disable=not progress or not distributed.is_main_process())
    log = _MetricsLog(metrics, bar, progress_keys)
    first_step = step
    with _StopSignals() as stop:
        try:
            while step < num_steps and not stop.should_stop(step, log_every):
                state, step_metrics = step_fn(state, batches(position))
                step += 1
                position += 1
                log.add(step, step_metrics)
                bar.update(1)
                if step % log_every == 0:
                    log.flush()
                if checkpointer is not None and checkpointer.should_save(step):
                    log.flush()
                    _save(checkpointer, step, state, position, meta, force=False)
            log.flush()
            if checkpointer is not None:
                _save(checkpointer, step, state, position, meta, force=True)
                checkpointer.wait()
        finally:
            bar.close()
        if log.skipped_steps:
            logger.warning("%d of %d steps skipped for non-finite values: %s",
                           len(log.skipped_steps), step - first_step, log.skipped_steps)
        if step < num_steps:
            stop.raise_for_signal()
    return state
