"""Off-target effects of alignment: how a policy's samples change in what the reward does not
measure, completion length above all (Gui, Garbacea, Veitch 2024, arXiv 2406.00832, Sec. 5:
BoNBoN changes length less than DPO and IPO at the same win rate).

Any per-sample value ``x_bk`` (a completion's length, its score under a second, held-out reward
model) of K samples for each of B prompts is summarised by :func:`summarize`: the mean with its
standard error across prompts (the prompts are the independent units, as in
:mod:`bonjax.evaluation.metrics`) and quantiles of the distribution of all samples. A sample may
carry a weight ``w_bk`` (each prompt's weights summing to 1): the summary is then that of the
weighted distribution,

    m_b = sum_k w_bk x_bk,    mean = (1/B) sum_b m_b,    se = std_b(m_b, ddof=1) / sqrt(B),
    q-quantile = min { x : (1/B) sum_{b,k} w_bk 1[x_bk <= x] >= q }    (the inverse CDF),

which with equal weights ``w_bk = 1/K`` is the plain sample summary (``np.quantile(...,
method="inverted_cdf")``).

Best-of-n is summarised without sampling it: given M reference samples of a prompt and their
rewards, :func:`bon_selection_weights` gives the probability that each is BoN_n's choice when n
of the M are drawn uniformly without replacement, the same U-statistic as the BoN reward
(:func:`bonjax.evaluation.bon_expected_max`). With the rewards sorted, ``r_(1) <= ... <= r_(M)``,
and no ties, sample ``(j)`` is the maximum of ``C(j-1, n-1)`` of the ``C(M, n)`` subsets. Tied
rewards occupying sorted positions ``a..b`` share the chance that the subset's maximum lies
among them, ``[C(b, n) - C(a-1, n)] / C(M, n)``, evenly (the tie broken uniformly at random), so
a value that differs between tied samples is averaged over them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from bonjax.checks import check_int
from bonjax.evaluation.metrics import Estimate, _log_binom_table

__all__ = [
    "QUANTILES",
    "ValueSummary",
    "bon_selection_weights",
    "completion_lengths",
    "reaches_limit",
    "summarize",
]

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclasses.dataclass(frozen=True)
class ValueSummary:
    """The weighted distribution of a per-sample value over B prompts.

    Attributes:
      mean: the mean and its standard error across prompts.
      quantiles: ``(q, value)`` pairs, the inverse CDF of all samples' values at each q.
    """

    mean: Estimate
    quantiles: tuple[tuple[float, float], ...]

    def quantile(self, q: float) -> float:
        for level, value in self.quantiles:
            if level == q:
                return value
        levels = [p for p, _ in self.quantiles]
        raise ValueError(f"no {q}-quantile in this summary; it has {levels}")

    def to_json(self) -> dict:
        return {"mean": list(self.mean), "quantiles": [list(p) for p in self.quantiles]}


def completion_lengths(mask_BxKxT) -> np.ndarray:
    """``[B, K]`` completion lengths in tokens: the completion mask's sum (EOS included)."""
    mask_BxKxT = np.asarray(mask_BxKxT, bool)
    if mask_BxKxT.ndim != 3:
        raise ValueError(f"mask_BxKxT must have shape [B, K, T], got {mask_BxKxT.shape}")
    return mask_BxKxT.sum(-1).astype(np.int64)


def reaches_limit(tokens_BxKxT, mask_BxKxT, eos_id: int) -> np.ndarray:
    """``[B, K]`` bool: the completion fills all T tokens without an EOS (cut at the limit)."""
    tokens_BxKxT, mask_BxKxT = np.asarray(tokens_BxKxT), np.asarray(mask_BxKxT, bool)
    if tokens_BxKxT.shape != mask_BxKxT.shape or tokens_BxKxT.ndim != 3:
        raise ValueError(f"tokens and mask must share one [B, K, T] shape, got "
                         f"{tokens_BxKxT.shape} and {mask_BxKxT.shape}")
    return mask_BxKxT[..., -1] & (tokens_BxKxT[..., -1] != eos_id)


def _check_weights(weight_BxK, shape: tuple[int, ...]) -> np.ndarray:
    if weight_BxK is None:
        return np.full(shape, 1.0 / shape[1])
    weight_BxK = np.asarray(weight_BxK, np.float64)
    if weight_BxK.shape != shape:
        raise ValueError(f"weight_BxK has shape {weight_BxK.shape}, the values {shape}")
    if not np.all(np.isfinite(weight_BxK)) or weight_BxK.min() < 0 or \
            not np.allclose(weight_BxK.sum(1), 1.0, atol=1e-9):
        raise ValueError("weight_BxK must be finite, >= 0 and sum to 1 over each prompt's samples")
    return weight_BxK


def summarize(value_BxK, weight_BxK=None, *, quantiles=QUANTILES) -> ValueSummary:
    """Mean (standard error across prompts) and quantiles of ``[B, K]`` values, each prompt's K
    samples weighted by ``weight_BxK`` (None: equally); see the module docstring.

    Raises:
      ValueError: for fewer than 2 prompts, a non-finite value, weights of another shape or not
        summing to 1 per prompt, or a quantile level outside [0, 1].
    """
    value_BxK = np.asarray(value_BxK, np.float64)
    if value_BxK.ndim != 2 or value_BxK.shape[0] < 2 or value_BxK.shape[1] < 1:
        raise ValueError(f"value_BxK must have shape [B, K] with B >= 2 prompts and K >= 1, got "
                         f"{value_BxK.shape}")
    if not np.all(np.isfinite(value_BxK)):
        raise ValueError(f"value_BxK has {int((~np.isfinite(value_BxK)).sum())} non-finite "
                         "value(s)")
    weight_BxK = _check_weights(weight_BxK, value_BxK.shape)
    levels = tuple(float(q) for q in quantiles)
    if any(not 0.0 <= q <= 1.0 for q in levels):
        raise ValueError(f"quantile levels must lie in [0, 1], got {levels}")
    B = value_BxK.shape[0]
    m_B = (weight_BxK * value_BxK).sum(1)
    mean = Estimate(float(m_B.mean()), float(m_B.std(ddof=1) / math.sqrt(B)))
    order = np.argsort(value_BxK, axis=None, kind="stable")
    sorted_X = value_BxK.ravel()[order]
    cdf_X = np.cumsum(weight_BxK.ravel()[order]) / B
    at = np.minimum(np.searchsorted(cdf_X, np.asarray(levels) - 1e-12, side="left"),
                    len(sorted_X) - 1)
    return ValueSummary(mean, tuple((q, float(sorted_X[i])) for q, i in zip(levels, at,
                                                                            strict=True)))


def bon_selection_weights(reward_ref_BxM, n: int) -> np.ndarray:
    """``[B, M]`` float64: the probability that each reference sample is Best-of-n's choice
    among n of the M drawn uniformly without replacement (ties shared evenly; module docstring).
    Each row sums to 1; n = 1 gives ``1/M`` everywhere, n = M puts all mass on the maximum."""
    reward_ref_BxM = np.asarray(reward_ref_BxM, np.float64)
    if reward_ref_BxM.ndim != 2 or 0 in reward_ref_BxM.shape:
        raise ValueError(f"reward_ref_BxM must have shape [B, M] with B, M > 0, got "
                         f"{reward_ref_BxM.shape}")
    if not np.all(np.isfinite(reward_ref_BxM)):
        raise ValueError("reward_ref_BxM has non-finite values")
    B, M = reward_ref_BxM.shape
    n = check_int("n", n)
    if n > M:
        raise ValueError(f"Best-of-n needs n <= M = {M} reference samples per prompt, got n = {n}")
    log_binom = _log_binom_table(M)
    order_BxM = np.argsort(reward_ref_BxM, axis=1, kind="stable")
    sorted_BxM = np.take_along_axis(reward_ref_BxM, order_BxM, axis=1)
    weight_BxM = np.zeros((B, M))
    for b in range(B):
        # each run of tied rewards: its first and last sorted positions a..b (1-based)
        starts = np.flatnonzero(np.r_[True, sorted_BxM[b, 1:] != sorted_BxM[b, :-1]])
        stops = np.r_[starts[1:], M]
        first_M = np.repeat(starts + 1, stops - starts)
        last_M = np.repeat(stops, stops - starts)
        mass_M = (np.exp(log_binom(last_M, n) - log_binom(M, n))
                  - np.exp(log_binom(first_M - 1, n) - log_binom(M, n)))
        weight_BxM[b, order_BxM[b]] = mass_M / (last_M - first_M + 1)
    return weight_BxM
