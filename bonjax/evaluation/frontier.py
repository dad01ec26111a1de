"""How far each method family sits from Best-of-N's reward-KL curve, with paired bootstrap
intervals and a verdict per pair of families.

Every evaluated policy gives, for each of the same P test prompts, its mean reward and its
mean KL(pi || pi_ref) over its samples of that prompt (``PolicyPoint``). Best-of-N gives, per
prompt, its expected reward at each N of a grid (from the prompt's reference samples) at the
analytic KL ``log N - (N-1)/N``.

A family's *frontier* is the piecewise-linear curve through its points sorted by KL. Its *gap*
is the mean over KL in ``[lo, hi]`` of ``family(kl) - BoN(kl)``: the signed area between the two
curves per unit KL (negative: below Best-of-N). ``[lo, hi]`` is the KL range every compared
family covers (fixed from the full data, so each bootstrap resample estimates the same
quantity). A family with one point has the gap of that point. A family whose every point lies
beyond the end of the Best-of-N curve (KL above its largest N's) has no gap: the curve is not
measured there, so it is left out of the gaps and verdicts and named in ``beyond``.

Intervals resample the P test prompts with replacement, the same prompts for every policy and
for Best-of-N (paired: the methods share their prompts, so prompt difficulty cancels in the
differences). Verdict for families A, B: "yes" (A closer to BoN than B) when the 95 % interval
of ``gap_A - gap_B`` lies above 0, "no" when it lies below, "undecided" otherwise; ``p`` is the
two-sided bootstrap p-value ``2 min(P*(d <= 0), P*(d >= 0))`` (Efron & Tibshirani 1993, Ch. 16).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np

from bonjax.checks import check_int

__all__ = ["BoNPerPrompt", "Comparison", "FamilyGap", "FrontierStats", "PolicyPoint",
           "frontier_stats"]


@dataclasses.dataclass(frozen=True)
class PolicyPoint:
    """One trained policy on the P test prompts: its per-prompt mean reward and KL."""

    family: str
    setting: str
    reward_P: np.ndarray
    kl_P: np.ndarray


@dataclasses.dataclass(frozen=True)
class BoNPerPrompt:
    """Best-of-N on the same prompts: expected reward ``reward_PxQ`` at analytic KL ``kl_Q``
    (increasing), one column per N."""

    kl_Q: np.ndarray
    reward_PxQ: np.ndarray


@dataclasses.dataclass(frozen=True)
class FamilyGap:
    """A family's mean gap to Best-of-N over the shared KL range, with its interval."""

    family: str
    gap: float
    low: float
    high: float


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``gap_a - gap_b`` with its paired interval, p-value and verdict ("a closer to BoN")."""

    a: str
    b: str
    difference: float
    low: float
    high: float
    p_value: float
    verdict: str
    num_resamples: int = 0  # the bootstrap's size: p is a multiple of 2 / num_resamples
    level: float = 0.95  # the interval's coverage

    def line(self) -> str:
        # No resample on the other side of 0 bounds p by the resolution, not by 0.
        p = (f"p < {2 / self.num_resamples:.2g}" if self.p_value == 0 and self.num_resamples
             else f"p = {self.p_value:.3f}")
        return (f"{self.a} closer to BoN than {self.b}: {self.verdict} (gap difference "
                f"{self.difference:+.3f}, {100 * self.level:g} % CI [{self.low:+.3f}, "
                f"{self.high:+.3f}], {p})")


@dataclasses.dataclass(frozen=True)
class FrontierStats:
    """Per-point intervals, per-family gaps and pairwise verdicts (see the module docstring).

    ``point_ci`` maps ``(family, setting)`` to ``((reward_low, reward_high), (kl_low,
    kl_high))``.
    """

    kl_range: tuple[float, float]
    families: list[FamilyGap]
    comparisons: list[Comparison]
    point_ci: dict[tuple[str, str], tuple[tuple[float, float], tuple[float, float]]]
    num_resamples: int
    level: float
    beyond: tuple[str, ...] = ()  # families left out: every point beyond the BoN curve's end


def _check(points: Sequence[PolicyPoint], bon: BoNPerPrompt) -> int:
    if not points:
        raise ValueError("frontier_stats needs at least one policy point")
    kl_Q, reward_PxQ = np.asarray(bon.kl_Q, np.float64), np.asarray(bon.reward_PxQ, np.float64)
    if kl_Q.ndim != 1 or reward_PxQ.ndim != 2 or reward_PxQ.shape[1] != kl_Q.size or \
            kl_Q.size < 2:
        raise ValueError(f"BoN kl_Q {kl_Q.shape} and reward_PxQ {reward_PxQ.shape} must be [Q] "
                         "and [P, Q] with Q >= 2")
    if np.any(np.diff(kl_Q) <= 0):
        raise ValueError("BoN kl_Q must increase strictly")
    P = reward_PxQ.shape[0]
    for p in points:
        for name in ("reward_P", "kl_P"):
            x = np.asarray(getattr(p, name))
            if x.shape != (P,):
                raise ValueError(f"{p.family} {p.setting}: {name} has shape {x.shape}; every "
                                 f"policy needs one value per test prompt, ({P},) as BoN has")
            if not np.all(np.isfinite(x)):
                raise ValueError(f"{p.family} {p.setting}: {name} has non-finite values")
    if not np.all(np.isfinite(reward_PxQ)):
        raise ValueError("BoN reward_PxQ has non-finite values")
    return P


def _family_curve(kl_S: np.ndarray, reward_S: np.ndarray, grid_G: np.ndarray) -> np.ndarray:
    order = np.argsort(kl_S, kind="stable")
    return np.interp(grid_G, kl_S[order], reward_S[order])


def _gaps(families: dict[str, list[int]], kl_X: np.ndarray, reward_X: np.ndarray,
          bon_kl_Q: np.ndarray, bon_reward_Q: np.ndarray, grid_G: np.ndarray) -> np.ndarray:
    """Each family's mean gap for one set of point estimates, ``[F]``."""
    bon_G = np.interp(grid_G, bon_kl_Q, bon_reward_Q)
    out = []
    for members in families.values():
        if len(members) == 1:
            i = members[0]
            out.append(reward_X[i] - np.interp(kl_X[i], bon_kl_Q, bon_reward_Q))
            continue
        diff_G = _family_curve(kl_X[members], reward_X[members], grid_G) - bon_G
        out.append(np.trapezoid(diff_G, grid_G) / (grid_G[-1] - grid_G[0]))
    return np.asarray(out)


def frontier_stats(points: Sequence[PolicyPoint], bon: BoNPerPrompt, *, num_resamples: int = 2000,
                   level: float = 0.95, seed: int = 0, grid: int = 257) -> FrontierStats:
    """Gaps to Best-of-N per family, paired-bootstrap intervals and verdicts.

    Raises:
      ValueError: on mismatched shapes, non-finite values, fewer than 2 resamples, a level
        outside (0, 1), families whose KL ranges do not overlap each other and BoN's, or every
        family beyond the end of the BoN curve.
    """
    P = _check(points, bon)
    check_int("num_resamples", num_resamples, minimum=2)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    reward_XxP = np.stack([np.asarray(p.reward_P, np.float64) for p in points])
    kl_XxP = np.stack([np.asarray(p.kl_P, np.float64) for p in points])
    bon_kl_Q = np.asarray(bon.kl_Q, np.float64)
    bon_reward_PxQ = np.asarray(bon.reward_PxQ, np.float64)
    families: dict[str, list[int]] = {}
    for i, p in enumerate(points):
        families.setdefault(p.family, []).append(i)

    kl_X = kl_XxP.mean(1)
    end = bon_kl_Q[-1]
    beyond = tuple(f for f, m in families.items() if kl_X[m].min() > end)
    if len(beyond) == len(families):
        raise ValueError(f"every family lies beyond the Best-of-N curve, which ends at KL "
                         f"{end:.3f}: " + ", ".join(f"{f} from {kl_X[families[f]].min():.3f}"
                                                    for f in beyond))
    families = {f: m for f, m in families.items() if f not in beyond}
    compared = [i for m in families.values() for i in m]
    spans = {f: (kl_X[m].min(), kl_X[m].max()) for f, m in families.items()}
    lo = max([0.0] + [s[0] for f, s in spans.items() if len(families[f]) > 1])
    hi = min([end] + [s[1] for f, s in spans.items() if len(families[f]) > 1])
    multi = [f for f in families if len(families[f]) > 1]
    if multi and lo >= hi:
        raise ValueError("the families' KL ranges do not overlap (each other and BoN's up to "
                         f"{end:.3f}): " + ", ".join(
                             f"{f} [{spans[f][0]:.3f}, {spans[f][1]:.3f}]" for f in multi))
    grid_G = np.linspace(lo, hi, grid) if multi else np.array([0.0, 1.0])

    def estimate(index_P):
        reward_X = reward_XxP[:, index_P].mean(1)
        kl_X = kl_XxP[:, index_P].mean(1)
        gaps_F = _gaps(families, kl_X, reward_X, bon_kl_Q, bon_reward_PxQ[index_P].mean(0),
                       grid_G)
        return gaps_F, reward_X, kl_X

    full_F, _, _ = estimate(np.arange(P))
    rng = np.random.default_rng(seed)
    boot = [estimate(rng.integers(0, P, P)) for _ in range(num_resamples)]
    gaps_RxF = np.stack([b[0] for b in boot])
    reward_RxX = np.stack([b[1] for b in boot])
    kl_RxX = np.stack([b[2] for b in boot])
    tail = (1.0 - level) / 2.0

    def ci(x_R):
        low, high = np.quantile(x_R, [tail, 1.0 - tail])
        return float(low), float(high)

    names = list(families)
    family_gaps = [FamilyGap(f, float(full_F[j]), *ci(gaps_RxF[:, j]))
                   for j, f in enumerate(names)]
    comparisons = []
    for (ja, a), (jb, b) in itertools.combinations(enumerate(names), 2):
        d_R = gaps_RxF[:, ja] - gaps_RxF[:, jb]
        low, high = ci(d_R)
        p_value = min(1.0, 2.0 * min(np.mean(d_R <= 0), np.mean(d_R >= 0)))
        verdict = "yes" if low > 0 else "no" if high < 0 else "undecided"
        comparisons.append(Comparison(a, b, float(full_F[ja] - full_F[jb]), low, high,
                                      float(p_value), verdict, num_resamples, level))
    point_ci = {(p.family, p.setting): (ci(reward_RxX[:, i]), ci(kl_RxX[:, i]))
                for i, p in enumerate(points)}
    return FrontierStats((float(lo), float(hi)) if multi else (float(kl_X[compared].min()),
                                                               float(kl_X[compared].max())),
                         family_gaps, comparisons, point_ci, num_resamples, level, beyond)
