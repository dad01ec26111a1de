"""Evaluation metrics: reward, KL(pi_theta || pi_ref), win rate, Best-of-N reference points and
the Pareto frontier of (KL, reward) points (Amini et al., arXiv 2407.06057, Sec. 5).

Units and standard errors. Prompts are the independent units. Values of shape ``[B]`` (one per
prompt) or ``[B, K]`` (K samples for each of B prompts) are summarised by their grand mean and
the standard error of the mean of the B per-prompt means,

    mean = (1/B) sum_b m_b,    se = sqrt( sum_b (m_b - mean)^2 / (B (B - 1)) ),
    m_b  = (1/K) sum_k x_bk,

which stays right when the K samples of a prompt are correlated (they share the prompt, and in
the win rate they share one reference sample); the naive ``std(x) / sqrt(B K)`` does not.

Device and host. :func:`mean_and_stderr`, :func:`kl_summary`, :func:`win_rate` and
:func:`bootstrap_ci` are jnp functions that work under ``jit`` (value checks run only on
concrete inputs). The Best-of-N estimators and :func:`pareto_frontier` are float64 numpy: they
take binomial coefficients of the reference sample size and run once per evaluation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bonjax.bon import bon_kl
from bonjax.checks import check_int, is_concrete
from bonjax.objectives.kl_rl import kl_k1, kl_k3

__all__ = [
    "BoNCurve",
    "Estimate",
    "EvalPoint",
    "KLSummary",
    "bon_curve",
    "bon_expected_max",
    "bon_reference_points",
    "bon_reward",
    "bon_win_rate_empirical",
    "bootstrap_ci",
    "kl_summary",
    "mean_and_stderr",
    "pareto_frontier",
    "win_rate",
]


class Estimate(NamedTuple):
    """A mean and its standard error (scalars: jax arrays from jnp functions, floats otherwise)."""

    mean: Any
    stderr: Any


class KLSummary(NamedTuple):
    """Monte-Carlo estimates of ``KL(pi_theta || pi_ref)`` in nats from the k1 and k3 estimators."""

    k1: Estimate
    k3: Estimate


@dataclasses.dataclass(frozen=True)
class EvalPoint:
    """One evaluated setting of one method: a point of the reward-vs-KL plot, a row of the table.

    Attributes:
      method: the method's name (``"BoN"``, ``"vBoN"``, ``"PPO"``, ...); plots group by it.
      setting: what distinguishes the point within the method (``"N=4"``, ``"beta=0.1"``).
      reward: mean reward of the method's samples, with its standard error.
      kl: ``KL(pi || pi_ref)`` in nats, with its standard error (0 for an analytic value).
      win_rate: win rate against one reference sample per prompt, or None if not measured.
    """

    method: str
    setting: str
    reward: Estimate
    kl: Estimate
    win_rate: Estimate | None = None

    def __post_init__(self):
        if not self.method:
            raise ValueError(f"EvalPoint.method must be a non-empty name, got {self.method!r}")
        for name in ("reward", "kl", "win_rate"):
            value = getattr(self, name)
            if value is None and name == "win_rate":
                continue
            if len(value) != 2:
                raise ValueError(f"EvalPoint.{name} must be an Estimate(mean, stderr), got {value}")
            mean, stderr = float(value[0]), float(value[1])
            if not math.isfinite(mean) or not math.isfinite(stderr) or stderr < 0:
                raise ValueError(
                    f"EvalPoint.{name} of {self.method} {self.setting} must have a finite mean "
                    f"and a finite stderr >= 0, got {value}"
                )
            object.__setattr__(self, name, Estimate(mean, stderr))


def _check_finite(name: str, x) -> None:
    """Raise ``ValueError`` naming the first non-finite entry of a concrete array."""
    if not is_concrete(x):
        return
    bad = ~np.isfinite(np.asarray(x))
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite value(s), first at index {first}: "
            f"{np.asarray(x)[first]}"
        )


def _check_per_prompt(name: str, shape: tuple[int, ...]) -> None:
    if len(shape) not in (1, 2) or 0 in shape:
        raise ValueError(f"{name} must have shape [B] or [B, K] with B, K > 0, got shape {shape}")
    if shape[0] < 2:
        raise ValueError(
            f"{name} has B = {shape[0]} prompt(s); a standard error needs B >= 2 (shape {shape})"
        )


def _cluster_estimate(x_BxK, xp) -> Estimate:
    """Grand mean and the standard error of the mean of per-prompt means (module docstring)."""
    m_B = x_BxK.reshape(x_BxK.shape[0], -1).mean(axis=1)
    b = m_B.shape[0]
    return Estimate(m_B.mean(), m_B.std(ddof=1) / xp.sqrt(float(b)))


def mean_and_stderr(values_BxK: jax.Array) -> Estimate:
    """Mean of ``[B]`` or ``[B, K]`` values (rewards, per-sequence KLs, win indicators) and the
    standard error across prompts, ``std_b(m_b, ddof=1) / sqrt(B)`` with ``m_b`` the mean of
    prompt b's K values. jit-compatible.

    Raises:
      ValueError: if the shape is not ``[B]``/``[B, K]`` with B >= 2 and K >= 1, or a concrete
        input has a non-finite value.
    """
    values_BxK = jnp.asarray(values_BxK)
    _check_per_prompt("values_BxK", values_BxK.shape)
    _check_finite("values_BxK", values_BxK)
    return _cluster_estimate(
        values_BxK.astype(jnp.promote_types(values_BxK.dtype, jnp.float32)), jnp
    )


def kl_summary(
    logp_BxKxT: jax.Array, logp_ref_BxKxT: jax.Array, mask_BxKxT: jax.Array
) -> KLSummary:
    """Monte-Carlo ``KL(pi_theta || pi_ref)`` over policy samples, with standard errors.

    Per sequence (Schulman 2020; :func:`bonjax.objectives.kl_k1`, :func:`~bonjax.objectives.kl_k3`),
    with ``d_t = log pi_ref(y_t|.) - log pi_theta(y_t|.)`` over the completion tokens (EOS
    included, padding after it masked):

        k1(y) = sum_t -d_t,        k3(y) = sum_t (exp(d_t) - 1 - d_t),

    both unbiased for the KL when ``y ~ pi_theta``; k3 is never negative and has lower variance.
    The per-sequence values are averaged as in :func:`mean_and_stderr`. jit-compatible.

    Args:
      logp_BxKxT: per-token log-probabilities of the samples under the policy, ``[B, T]`` or
        ``[B, K, T]`` (K samples per prompt).
      logp_ref_BxKxT: the same tokens scored by the reference policy.
      mask_BxKxT: completion mask (bool or 0/1).
    """
    shape = jnp.shape(logp_BxKxT)
    if len(shape) not in (2, 3):
        raise ValueError(f"logp_BxKxT must have shape [B, T] or [B, K, T], got shape {shape}")
    k1_BxK = kl_k1(logp_BxKxT, logp_ref_BxKxT, mask_BxKxT)
    k3_BxK = kl_k3(logp_BxKxT, logp_ref_BxKxT, mask_BxKxT)
    _check_per_prompt("per-sequence KL", k1_BxK.shape)
    _check_finite("per-sequence k1 KL", k1_BxK)
    _check_finite("per-sequence k3 KL", k3_BxK)
    return KLSummary(_cluster_estimate(k1_BxK, jnp), _cluster_estimate(k3_BxK, jnp))


def _check_tie_credit(tie_credit) -> None:
    if is_concrete(tie_credit) and not 0.0 <= float(tie_credit) <= 1.0:
        raise ValueError(f"tie_credit must lie in [0, 1], got {tie_credit}")


def win_rate(
    reward_BxK: jax.Array, reward_ref_B: jax.Array, *, tie_credit: float = 0.5
) -> Estimate:
    """Win rate of policy samples against one reference sample per prompt, with standard error.

        W = (1/(B K)) sum_{b,k} ( 1[r_bk > r_ref_b] + c 1[r_bk = r_ref_b] )

    with tie credit ``c``: 0.5 (the default) counts a tie as half a win, 0 counts it as a loss.
    All K samples of a prompt meet the same reference sample, so the standard error is taken
    across prompts (:func:`mean_and_stderr`). jit-compatible.

    Args:
      reward_BxK: rewards of the policy's samples, ``[B]`` or ``[B, K]``.
      reward_ref_B: reward of one ``pi_ref`` sample for each prompt, ``[B]``.
      tie_credit: the score of a tie, in ``[0, 1]``.
    """
    reward_BxK = jnp.asarray(reward_BxK)
    reward_ref_B = jnp.asarray(reward_ref_B)
    _check_per_prompt("reward_BxK", reward_BxK.shape)
    if reward_ref_B.shape != reward_BxK.shape[:1]:
        raise ValueError(
            f"reward_ref_B must have shape [B] = {reward_BxK.shape[:1]} to match reward_BxK "
            f"{reward_BxK.shape}, got {reward_ref_B.shape}"
        )
    _check_tie_credit(tie_credit)
    _check_finite("reward_BxK", reward_BxK)
    _check_finite("reward_ref_B", reward_ref_B)
    ref_BxK = reward_ref_B.reshape((-1,) + (1,) * (reward_BxK.ndim - 1))
    score_BxK = (reward_BxK > ref_BxK).astype(jnp.float32) + tie_credit * (
        reward_BxK == ref_BxK
    ).astype(jnp.float32)
    return _cluster_estimate(score_BxK, jnp)


def bootstrap_ci(
    values_BxK: jax.Array, key: jax.Array, *, num_resamples: int = 2000, level: float = 0.95
) -> tuple[jax.Array, jax.Array]:
    """Percentile bootstrap confidence interval ``(low, high)`` for the mean, resampling prompts.

    Each resample draws B prompts with replacement and averages their per-prompt means
    (Efron & Tibshirani 1993, Ch. 13); the interval is the ``(1 -/+ level) / 2`` quantiles of the
    ``num_resamples`` resampled means. Useful for heavy-tailed values such as per-sequence k1 KL.
    jit-compatible with ``num_resamples`` static.
    """
    values_BxK = jnp.asarray(values_BxK)
    _check_per_prompt("values_BxK", values_BxK.shape)
    _check_finite("values_BxK", values_BxK)
    check_int("num_resamples", num_resamples, minimum=2)
    if is_concrete(level) and not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    m_B = values_BxK.reshape(values_BxK.shape[0], -1).astype(jnp.float32).mean(axis=1)
    b = m_B.shape[0]
    index_RxB = jax.random.randint(key, (num_resamples, b), 0, b)
    means_R = m_B[index_RxB].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = jnp.quantile(means_R, jnp.stack([tail, 1.0 - tail]))
    return low, high


# ---- Best-of-N reference points (float64 numpy) ----


def _check_reference_rewards(reward_ref_BxM) -> np.ndarray:
    reward_ref_BxM = np.asarray(reward_ref_BxM, np.float64)
    if reward_ref_BxM.ndim != 2 or 0 in reward_ref_BxM.shape:
        raise ValueError(
            f"reward_ref_BxM must have shape [B, M] with B, M > 0, got shape {reward_ref_BxM.shape}"
        )
    _check_finite("reward_ref_BxM", reward_ref_BxM)
    return reward_ref_BxM


def _check_ns(ns, max_n: int, what: str) -> np.ndarray:
    """N values as int64 [Q]; each an integer with ``1 <= N <= max_n``."""
    ns_Q = np.atleast_1d(np.asarray(ns))
    if ns_Q.ndim != 1 or ns_Q.size == 0:
        raise ValueError(f"N must be an integer or a non-empty 1-D list of integers, got {ns!r}")
    if ns_Q.dtype == bool or not (
        np.issubdtype(ns_Q.dtype, np.integer)
        or (np.issubdtype(ns_Q.dtype, np.floating) and np.all(ns_Q == np.round(ns_Q)))
    ):
        raise ValueError(f"N must be integers, got {ns!r}")
    bad = (ns_Q < 1) | (ns_Q > max_n)
    if bad.any():
        raise ValueError(f"N = {ns_Q[bad][0]} is outside [1, {max_n}]: {what}")
    return ns_Q.astype(np.int64)


def _log_binom_table(m: int):
    """``log C(a, n)`` for integer arrays ``0 <= a <= m``, ``0 <= n``; ``-inf`` where ``a < n``."""
    log_factorial = np.array([math.lgamma(k + 1.0) for k in range(m + 1)])

    def log_binom(a, n):
        a, n = np.broadcast_arrays(np.asarray(a), np.asarray(n))
        valid = (n >= 0) & (a >= n)
        a_ok, n_ok = np.where(valid, a, 0), np.where(valid, n, 0)
        value = log_factorial[a_ok] - log_factorial[n_ok] - log_factorial[a_ok - n_ok]
        return np.where(valid, value, -np.inf)

    return log_binom


def bon_expected_max(reward_ref_BxM, ns) -> np.ndarray:
    """Unbiased per-prompt estimate of ``E[max of N draws from pi_ref]``: the BoN reward.

    With prompt b's M reference rewards sorted, ``r_(1) <= ... <= r_(M)``, the mean of the maximum
    over all ``C(M, N)`` subsets of N of them is (the U-statistic of the kernel max; ties are
    harmless, the maximum of a subset is a value, not an index)

        E_hat[max of N] = sum_{j=N..M} r_(j) C(j - 1, N - 1) / C(M, N),

    since ``r_(j)`` is the maximum of exactly ``C(j - 1, N - 1)`` subsets. The weights are
    computed as ``exp(log C(j - 1, N - 1) - log C(M, N))`` from float64 log-factorials, so
    ``M`` in the tens of thousands neither overflows nor loses precision. N = 1 gives the mean
    and N = M the maximum.

    Args:
      reward_ref_BxM: rewards of M i.i.d. ``pi_ref`` samples per prompt, ``[B, M]``, finite.
      ns: one N or a 1-D list of them, each ``1 <= N <= M``.

    Returns:
      float64 ``[B]`` for a scalar N, ``[B, Q]`` for Q values of N.
    """
    reward_ref_BxM = _check_reference_rewards(reward_ref_BxM)
    m = reward_ref_BxM.shape[1]
    ns_Q = _check_ns(ns, m, f"Best-of-N needs N <= M = {m} reference samples per prompt")
    log_binom = _log_binom_table(m)
    j_M = np.arange(1, m + 1)
    log_weight_QxM = log_binom(j_M[None, :] - 1, ns_Q[:, None] - 1) - log_binom(m, ns_Q)[:, None]
    weight_QxM = np.exp(log_weight_QxM)
    sorted_BxM = np.sort(reward_ref_BxM, axis=1)
    expected_BxQ = np.einsum("bm,qm->bq", sorted_BxM, weight_QxM)
    return expected_BxQ[:, 0] if np.ndim(ns) == 0 else expected_BxQ


def _np_estimate(per_prompt_B: np.ndarray, name: str) -> Estimate:
    """Estimate across prompts; per-prompt values equal up to float64 rounding (e.g. the BoN win
    rate without ties, N / (N + 1) on every prompt) have a standard error of exactly 0."""
    _check_per_prompt(name, per_prompt_B.shape)
    mean, stderr = _cluster_estimate(per_prompt_B, np)
    scale = float(np.abs(per_prompt_B).max())
    if float(np.ptp(per_prompt_B)) <= 64 * np.finfo(np.float64).eps * scale:
        stderr = 0.0
    return Estimate(float(mean), float(stderr))


def bon_reward(reward_ref_BxM, n: int) -> Estimate:
    """Mean over prompts of :func:`bon_expected_max` at one N, with its standard error across
    prompts (needs B >= 2)."""
    return _np_estimate(bon_expected_max(reward_ref_BxM, n), "reward_ref_BxM")


def bon_win_rate_empirical(reward_ref_BxM, n: int, *, tie_credit: float = 0.5) -> Estimate:
    """Unbiased estimate of the win rate of BoN_N against one independent ``pi_ref`` sample.

    Each reference sample j of a prompt plays the opponent once, against BoN over N of the other
    M - 1 samples (all ``C(M - 1, N)`` subsets), with tie credit ``c``:

        W_hat = (1/M) sum_j [ 1 - C(le_j, N) / C(M-1, N)
                              + c (C(le_j, N) - C(lt_j, N)) / C(M-1, N) ],

    ``lt_j`` / ``le_j`` the numbers of other samples with reward ``<`` / ``<=`` ``r_j``
    (``C(a, N) / C(M-1, N)`` is the chance that all N picks lie in a set of size a). Without ties
    this is exactly ``N / (N + 1)`` (:func:`bonjax.bon.bon_win_rate`); ties lower it. Needs
    ``M >= N + 1``; the standard error is across prompts (B >= 2).
    """
    reward_ref_BxM = _check_reference_rewards(reward_ref_BxM)
    m = reward_ref_BxM.shape[1]
    (n_value,) = _check_ns(n, m - 1, f"the BoN win rate needs N <= M - 1 = {m - 1}")
    _check_tie_credit(tie_credit)
    sorted_BxM = np.sort(reward_ref_BxM, axis=1)
    index_BxM = np.broadcast_to(np.arange(m), sorted_BxM.shape)
    new_run_BxM = np.ones(sorted_BxM.shape, bool)
    new_run_BxM[:, 1:] = sorted_BxM[:, 1:] != sorted_BxM[:, :-1]
    run_end_BxM = np.ones(sorted_BxM.shape, bool)
    run_end_BxM[:, :-1] = new_run_BxM[:, 1:]
    # Sorted rows: the samples below r_j are those before its run, the others <= r_j are the
    # rest of its run (the index of the run's last element counts them, j itself excluded).
    lt_BxM = np.maximum.accumulate(np.where(new_run_BxM, index_BxM, 0), axis=1)
    le_BxM = np.flip(
        np.minimum.accumulate(np.flip(np.where(run_end_BxM, index_BxM, m - 1), 1), axis=1), 1
    )
    log_binom = _log_binom_table(m)
    log_total = log_binom(m - 1, n_value)
    all_le_BxM = np.exp(log_binom(le_BxM, n_value) - log_total)
    all_lt_BxM = np.exp(log_binom(lt_BxM, n_value) - log_total)
    score_BxM = 1.0 - all_le_BxM + float(tie_credit) * (all_le_BxM - all_lt_BxM)
    return _np_estimate(score_BxM.mean(axis=1), "reward_ref_BxM")


def bon_reference_points(reward_ref_BxM, ns, *, tie_credit: float = 0.5) -> list[EvalPoint]:
    """The BoN points of the reward-vs-KL plot and table, one per N in ``ns``.

    Reward: :func:`bon_reward` (order statistics of the reference samples). KL: the analytic
    ``log N - (N - 1) / N`` (:func:`bonjax.bon.bon_kl`; exact for continuous rewards, an upper
    bound with ties), reported with stderr 0. Win rate: :func:`bon_win_rate_empirical` when
    ``N <= M - 1``, else None. Method name ``"BoN"``, setting ``"N=<n>"``.
    """
    reward_ref_BxM = _check_reference_rewards(reward_ref_BxM)
    m = reward_ref_BxM.shape[1]
    ns_Q = _check_ns(ns, m, f"Best-of-N needs N <= M = {m} reference samples per prompt")
    expected_BxQ = bon_expected_max(reward_ref_BxM, ns_Q)
    points = []
    for q, n in enumerate(ns_Q):
        win = None  # N = M leaves no sample to play the opponent
        if n < m:
            win = bon_win_rate_empirical(reward_ref_BxM, int(n), tie_credit=tie_credit)
        points.append(
            EvalPoint(
                method="BoN",
                setting=f"N={int(n)}",
                reward=_np_estimate(expected_BxQ[:, q], "reward_ref_BxM"),
                kl=Estimate(float(bon_kl(n)), 0.0),
                win_rate=win,
            )
        )
    return points


class BoNCurve(NamedTuple):
    """Best-of-N reward as a function of its analytic KL, parametrised by N (float64 ``[Q]``)."""

    n: np.ndarray
    kl: np.ndarray
    reward: np.ndarray


def bon_curve(reward_ref_BxM, *, num: int = 256) -> BoNCurve:
    """BoN reward (mean over prompts of :func:`bon_expected_max`) against ``bon_kl(N)`` on a grid
    of about ``num`` distinct integers N from 1 to M, spaced geometrically (all of 1..M when
    ``M <= num``)."""
    reward_ref_BxM = _check_reference_rewards(reward_ref_BxM)
    check_int("num", num, minimum=2)
    m = reward_ref_BxM.shape[1]
    ns_Q = np.unique(np.round(np.geomspace(1, m, num)).astype(np.int64))
    reward_Q = bon_expected_max(reward_ref_BxM, ns_Q).mean(axis=0)
    return BoNCurve(ns_Q.astype(np.float64), bon_kl(ns_Q), reward_Q)


# ---- Pareto frontier ----


def pareto_frontier(kl_P, reward_P) -> np.ndarray:
    """Indices of the non-dominated points of a (KL, reward) cloud, in order of increasing KL.

    Point i is dominated when some point j has ``kl_j <= kl_i`` and ``reward_j >= reward_i``, one
    of them strictly: lower KL and higher reward are better (the upper-left frontier). Duplicated
    non-dominated points are all returned (neither dominates the other), in index order.

    Returns:
      int64 ``[F]``: sorted by KL ascending (then index); rewards strictly increase along it
      between distinct points.
    """
    kl_P = np.asarray(kl_P, np.float64)
    reward_P = np.asarray(reward_P, np.float64)
    if kl_P.ndim != 1 or kl_P.shape != reward_P.shape or kl_P.size == 0:
        raise ValueError(
            f"kl_P and reward_P must be 1-D with the same non-zero length, got shapes "
            f"{kl_P.shape} and {reward_P.shape}"
        )
    _check_finite("kl_P", kl_P)
    _check_finite("reward_P", reward_P)
    order = np.lexsort((np.arange(kl_P.size), -reward_P, kl_P))  # KL up, reward down, index up
    frontier = []
    best_below = -np.inf  # the best reward among points of strictly smaller KL
    group_best = -np.inf
    for i, p in enumerate(order):
        if i == 0 or kl_P[p] != kl_P[order[i - 1]]:
            best_below = max(best_below, group_best)
            group_best = reward_P[p]  # the first of a KL group has the group's highest reward
        if reward_P[p] == group_best and group_best > best_below:
            frontier.append(p)
    return np.asarray(frontier, np.int64)
