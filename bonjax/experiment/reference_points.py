"""The experiment's inference-time points, computed from the test prompts' cached reference
samples alone (no sampling, no training): Best-of-N at each N of ``config.bon.ns``
(:func:`~bonjax.evaluation.bon_reference_points`), soft Best-of-n at each (n, lambda) of
``config.soft_bon`` (:mod:`bonjax.evaluation.soft_bon`: the unbiased U-statistic of its reward
and the plug-in KL of the empirical reward law) and regularised Best-of-N (RBoN_KL) at each
(n, beta) of ``config.rbon`` (:mod:`bonjax.evaluation.rbon`: the samples ranked by
``r + beta log pi_ref``, from the sequence log-probabilities the reference cache keeps; its KL
is BoN's).

A reference cache written before the log-probabilities were kept gives no RBoN points (a
warning says so; delete ``run_dir/references`` to redraw it). MBR-BoN is no point here: it
ranks by the mean similarity to the other members of the drawn subset, which needs every
reference completion's sentence embedding.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from bonjax.checks import is_int
from bonjax.evaluation import BoNCurve, EvalPoint, bon_reference_points
from bonjax.evaluation.rbon import rbon_reference_points
from bonjax.evaluation.soft_bon import soft_bon_reference_points
from bonjax.experiment.evaluate import bon_gap
from bonjax.training.reference import ReferenceSamples

__all__ = ["FIELDS", "check_reference_settings", "reference_points", "selection_records"]

logger = logging.getLogger(__name__)

# The config fields read here: each rule's sizes, then its swept setting.
FIELDS = ("bon.ns", "soft_bon.ns", "soft_bon.lambdas", "rbon.ns", "rbon.betas")


def _check_sweep(rule: str, ns: tuple, name: str, values: tuple, m: int, *,
                 allow_zero: bool) -> None:
    if any(not is_int(n) or not 1 <= n <= m for n in ns):
        raise ValueError(f"config.{rule}.ns = {ns} must be integers in [1, M = {m}] "
                         f"(M = config.reference.samples)")
    bound = ">= 0" if allow_zero else "> 0"
    if (ns and not values) or any(
            not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v)
            or v < 0 or (v == 0 and not allow_zero) for v in values):
        raise ValueError(f"config.{rule}.{name} = {values} must be finite numbers {bound}, at "
                         f"least one when config.{rule}.ns = {ns} is not empty")


def check_reference_settings(settings: dict[str, tuple], m: int) -> None:
    """Checks the fields of :data:`FIELDS` (``settings[field]``) against
    ``M = config.reference.samples``.

    Raises:
      ValueError: naming the field: BoN's N outside ``[1, M - 1]`` (one sample plays the
        opponent of the win rate), soft BoN's or RBoN's n outside ``[1, M]``, a lambda that is
        not a finite number > 0 or a beta that is not one >= 0, or none of them for non-empty ns.
    """
    bon_ns = settings["bon.ns"]
    if not bon_ns or any(not is_int(n) or not 1 <= n <= m - 1 for n in bon_ns):
        raise ValueError(f"config.bon.ns = {bon_ns} must be integers in [1, M - 1 = {m - 1}] "
                         f"(M = config.reference.samples; one sample plays the opponent)")
    _check_sweep("soft_bon", settings["soft_bon.ns"], "lambdas", settings["soft_bon.lambdas"], m,
                 allow_zero=False)
    _check_sweep("rbon", settings["rbon.ns"], "betas", settings["rbon.betas"], m,
                 allow_zero=True)


def reference_points(config: Any, test_refs: ReferenceSamples) -> tuple[list[EvalPoint],
                                                                      list[EvalPoint]]:
    """``(bon_points, selection_points)``: the Best-of-N points, then the soft Best-of-n and the
    RBoN points (none for an empty ``ns``; no RBoN points without cached log-probabilities)."""
    rewards_PxM = test_refs.rewards_PxM
    bon_points = bon_reference_points(rewards_PxM, tuple(config.bon.ns))
    selection = []
    if tuple(config.soft_bon.ns):
        selection += soft_bon_reference_points(rewards_PxM, tuple(config.soft_bon.ns),
                                               tuple(config.soft_bon.lambdas))
    if tuple(config.rbon.ns) and test_refs.log_ref_PxM is None:
        logger.warning("the cached reference samples predate their log-probabilities: no RBoN "
                       "points (delete run_dir/references to redraw them)")
    elif tuple(config.rbon.ns):
        selection += rbon_reference_points(rewards_PxM, test_refs.log_ref_PxM,
                                           tuple(config.rbon.ns), tuple(config.rbon.betas))
    return bon_points, selection


def selection_records(points: list[EvalPoint], curve: BoNCurve) -> list[dict]:
    """The selection rules' points as ``results.json`` records, each with its distance to the
    BoN curve at its KL (``bon_gap``; None beyond the curve)."""
    return [{"method": p.method, "setting": p.setting, "reward": list(p.reward),
             "kl": list(p.kl), "win_rate": None if p.win_rate is None else list(p.win_rate),
             "bon_gap": bon_gap(p, curve)} for p in points]
