"""Whether a training curve has settled: its relative change over the last quarter of the steps.

For a metric logged at steps ``1..S`` (reward, KL), the last quarter's steps are split in two
halves ``a`` (earlier) and ``b`` (later); the change is

    (mean(b) - mean(a)) / |mean(a ∪ b)|,

signed (positive: still rising). Means over half-quarters rather than single steps keep one
noisy rollout from deciding it; a curve counts as settled below a tolerance (the frontier study
uses 5 %).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["last_quarter_change", "curve_changes"]


def last_quarter_change(values_S: Sequence[float]) -> float:
    """Signed relative change of ``values_S`` (in step order) over its last quarter.

    Raises:
      ValueError: with fewer than 4 values (a quarter needs two halves of at least one step).
    """
    values_S = np.asarray(values_S, dtype=np.float64)
    if values_S.ndim != 1 or values_S.size < 4:
        raise ValueError(f"a curve needs at least 4 values, got shape {values_S.shape}")
    quarter = values_S[-max(2, values_S.size // 4):]
    half = quarter.size // 2
    a, b = quarter[:half], quarter[half:]
    scale = abs(quarter.mean())
    return float((b.mean() - a.mean()) / scale) if scale > 0 else float("inf")


def curve_changes(records: Sequence[Mapping], keys: Sequence[str]) -> dict[str, float]:
    """``last_quarter_change`` of each metric in ``keys`` over metric records (one per logged
    step, as ``bonjax.training.metrics`` writes them), for the keys with at least 4 values. A
    step logged twice (re-run after a resume) counts once, with its last record."""
    by_step = {int(r["step"]): r for r in records if "step" in r}
    out = {}
    for key in keys:
        values = [by_step[s][key] for s in sorted(by_step) if key in by_step[s]]
        if len(values) >= 4:
            out[key] = last_quarter_change(values)
    return out
