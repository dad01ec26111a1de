"""The experiment's inference-time points, computed from the test prompts' cached reference
samples alone (no sampling, no training): Best-of-N at each N of ``config.bon.ns``
(:func:`~bonjax.evaluation.bon_reference_points`) and soft Best-of-n at each (n, lambda) of
``config.soft_bon`` (:func:`~bonjax.evaluation.soft_bon.soft_bon_reference_points`: the
unbiased U-statistic of its reward and the plug-in KL of the empirical reward law).

Regularised Best-of-N is no point here. RBoN_KL ranks by ``r + beta log pi_ref(y)``, and the
reference cache keeps rewards only: its points need the reference samples' sequence
log-probabilities as well. MBR-BoN ranks by the mean similarity to the other members of the
drawn subset, which needs every reference completion's sentence embedding.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bonjax.checks import is_int
from bonjax.evaluation import BoNCurve, EvalPoint, bon_reference_points
from bonjax.evaluation.soft_bon import soft_bon_reference_points
from bonjax.experiment.evaluate import bon_gap

__all__ = ["check_reference_settings", "reference_points", "selection_records"]


def check_reference_settings(bon_ns: tuple, soft_ns: tuple, soft_lambdas: tuple, m: int) -> None:
    """Checks ``config.bon.ns``, ``config.soft_bon.ns`` and ``config.soft_bon.lambdas`` against
    ``M = config.reference.samples``.

    Raises:
      ValueError: naming the field: BoN's N outside ``[1, M - 1]`` (one sample plays the
        opponent of the win rate), soft BoN's n outside ``[1, M]``, a lambda that is not a
        finite number > 0, or no lambda for a non-empty ``soft_bon.ns``.
    """
    if not bon_ns or any(not is_int(n) or not 1 <= n <= m - 1 for n in bon_ns):
        raise ValueError(f"config.bon.ns = {bon_ns} must be integers in [1, M - 1 = {m - 1}] "
                         f"(M = config.reference.samples; one sample plays the opponent)")
    if any(not is_int(n) or not 1 <= n <= m for n in soft_ns):
        raise ValueError(f"config.soft_bon.ns = {soft_ns} must be integers in [1, M = {m}] "
                         f"(M = config.reference.samples)")
    if (soft_ns and not soft_lambdas) or any(
            not isinstance(lam, int | float) or isinstance(lam, bool) or not math.isfinite(lam)
            or lam <= 0 for lam in soft_lambdas):
        raise ValueError(f"config.soft_bon.lambdas = {soft_lambdas} must be finite numbers > 0, "
                         f"at least one when config.soft_bon.ns = {soft_ns} is not empty")


def reference_points(config: Any, test_refs_PxM: np.ndarray) -> tuple[list[EvalPoint],
                                                                     list[EvalPoint]]:
    """``(bon_points, selection_points)``: the Best-of-N points, then the soft Best-of-n points
    (none when ``config.soft_bon.ns`` is empty)."""
    bon_points = bon_reference_points(test_refs_PxM, tuple(config.bon.ns))
    selection = []
    if tuple(config.soft_bon.ns):
        selection += soft_bon_reference_points(test_refs_PxM, tuple(config.soft_bon.ns),
                                               tuple(config.soft_bon.lambdas))
    return bon_points, selection


def selection_records(points: list[EvalPoint], curve: BoNCurve) -> list[dict]:
    """The selection rules' points as ``results.json`` records, each with its distance to the
    BoN curve at its KL (``bon_gap``; None beyond the curve)."""
    return [{"method": p.method, "setting": p.setting, "reward": list(p.reward),
             "kl": list(p.kl), "win_rate": None if p.win_rate is None else list(p.win_rate),
             "bon_gap": bon_gap(p, curve)} for p in points]
