"""Soft Best-of-n as a point of the reward-KL plot, estimated from reference rewards alone.

Soft Best-of-n (:func:`bonjax.bon.select_soft`; Verdun et al. 2025, arXiv 2505.03156) draws
``y_1..y_n ~ pi_ref`` i.i.d. and keeps ``y_i`` with probability ``w_i / sum_j w_j``,
``w = exp(r / lambda)``. The n draws are exchangeable, so the law of the kept completion is

    p(y) = n pi_ref(y) E_{y_2..y_n ~ pi_ref}[ w(y) / (w(y) + sum_{j=2..n} w(y_j)) ],

and its density ratio to pi_ref depends on y only through its reward s = r(y):

    rho(s) = p(y) / pi_ref(y)
           = n E_{r_2..r_n ~ F}[ e^{s/lambda} / (e^{s/lambda} + sum_{j=2..n} e^{r_j/lambda}) ],

F the law of the reward under pi_ref. Hence the point's coordinates are functionals of F:

    E_p[r] = E_{pi_ref}[rho(r) r],    KL(p || pi_ref) = E_p[log rho(r)] = E_{pi_ref}[rho log rho]

(exact with ties too: the ratio is the same for every outcome of one reward). The softmax is a
Gumbel race, ``w_1 / sum_j w_j = P(s/lambda + G_1 > r_j/lambda + G_j for all j)`` with i.i.d.
standard Gumbel G; conditioning on ``G_1 = g``,

    rho(s) = n int phi(g) E[ prod_{j=2..n} Lambda(g + (s - r_j) / lambda) ] dg,
    Lambda(z) = exp(-e^{-z}),  phi = Lambda',

and for i.i.d. ``r_j`` the expectation is ``(E_F Lambda(g + (s - r) / lambda))^(n-1)``
(:func:`soft_bon_ratio`; on a discrete law it equals ``bon.soft_bon_distribution / pi_ref``).

From the M reference rewards ``r_1..r_M`` of a prompt (:func:`soft_bon_estimates`):

- reward, unbiased: soft Best-of-n run on n of the M samples drawn WITHOUT replacement and
  averaged over all ``C(M, n)`` subsets (a U-statistic: each subset's softmax-weighted reward is
  an unbiased estimate of ``E_p[r]``), written as ``(1/M) sum_m rho_hat_m r_m`` with
  ``rho_hat_m = n int phi(g) e_{n-1}({Lambda(g + (r_m - r_j)/lambda)}_{j != m}) / C(M-1, n-1) dg``
  (:func:`soft_bon_ratio_without_replacement`; ``e_k`` the elementary symmetric polynomial:
  the mean over the (n-1)-subsets of the other samples). ``lambda -> 0`` gives
  :func:`~bonjax.evaluation.bon_expected_max` (the BoN points' reward), large lambda the mean.
- KL, plug-in: ``(1/M) sum_m rho_m log rho_m`` with the ratio of the empirical law (n draws
  WITH replacement, :func:`soft_bon_ratio` with uniform weights), consistent as M grows (no
  unbiased estimator of a KL exists). ``lambda -> 0`` gives ``sum_j q_j log(M q_j)``,
  ``q_j = (j/M)^n - ((j-1)/M)^n``: the binned BoN KL, below the analytic ``log n - (n-1)/n`` of
  the BoN points by 0.010 nats at M = 32, n = 16 (0.001 at M = 100, n = 16; 0.017 at M = 100,
  n = 64).

Each is the right one for its quantity: with replacement the reward is biased low (duplicates;
normal rewards, M = 32, n = 16: -0.11), without replacement the plug-in KL is biased high (the
same case at lambda -> 0: 2.12 nats against 1.835). Win rates are not estimated (an unbiased
one needs the U-statistic once per opponent, M times the cost).

Numerics (float64 numpy). Each integral over g is the trapezoid rule on g in [-3.6, 36] with
step 0.3 (the integrand is entire and decays doubly exponentially to the left, exponentially to
the right: error below 1e-11 against enumeration of the subsets). All samples share one lattice
in ``z = g + s_m``, ``s = (r - median) / lambda``, so ``Lambda(z - s_j)`` does not depend on m:
the subset means without sample m combine prefix and suffix means over the other samples
(``E_k(c) = (1 - k/c) E_k(c-1) + (k/c) x_c E_{k-1}(c-1)``, convex combinations of numbers in
[0, 1], nothing overflows) with hypergeometric weights, ``O(M n)`` per node. The lattice spans
the samples' windows: about ``(spread of r) / (0.3 lambda) + 133`` nodes, at most 133 M. One
(n, lambda) for 128 prompts x M = 80 takes about a second on one CPU core (M = 300 and 512
prompts: 10-100 s, more for smaller lambda).
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

from bonjax.checks import check_int, check_positive
from bonjax.evaluation.metrics import (
    EvalPoint,
    _check_ns,
    _check_reference_rewards,
    _np_estimate,
)

__all__ = ["SOFT_BON_METHOD", "soft_bon_estimates", "soft_bon_ratio",
           "soft_bon_ratio_without_replacement", "soft_bon_reference_points"]

SOFT_BON_METHOD = "Soft BoN"  # the method family of the points in tables and plots

_STEP = 0.3  # trapezoid step in g (and in z = g + r_m / lambda)
_G_LO, _G_HI = -3.6, 36.0  # where the Gumbel density matters: phi(-3.6), phi(36) < 5e-15
_MAX_SCALED = 1e10  # |r - median| / lambda beyond this: soft BoN is BoN in float64
_ELEMENTS_PER_CHUNK = 1 << 22  # bounds the [M, nodes, n] work arrays (32 MB each)


def _check_lambda(lam) -> float:
    check_positive("lambda", lam)
    return float(lam)


def _check_rewards(reward_M) -> np.ndarray:
    reward_M = np.asarray(reward_M, np.float64)
    if reward_M.ndim != 1 or reward_M.size == 0:
        raise ValueError(f"rewards must be 1-D and non-empty, got shape {reward_M.shape}")
    if not np.isfinite(reward_M).all():
        raise ValueError(f"rewards must be finite, got {reward_M}")
    return reward_M


def _scaled(reward_M: np.ndarray, lam: float) -> np.ndarray:
    """``s = (r - median) / lambda``; refused where float64 could not resolve the nodes."""
    s_M = (reward_M - np.median(reward_M)) / lam
    if np.abs(s_M).max() > _MAX_SCALED:
        raise ValueError(f"lambda = {lam} is below 1e-10 of the rewards' spread "
                         f"{float(np.ptp(reward_M))}: soft Best-of-n is Best-of-n there")
    return s_M


def _nodes(s_M: np.ndarray) -> np.ndarray:
    """The lattice ``z = k * step`` inside some sample's window ``s_m + [-3.6, 36]``: the
    trapezoid rule of every sample's integral in ``g = z - s_m`` over its window."""
    k_lo = np.ceil((s_M + _G_LO) / _STEP).astype(np.int64)
    k_hi = np.floor((s_M + _G_HI) / _STEP).astype(np.int64)
    k_Z = np.unique(np.concatenate([np.arange(lo, hi + 1) for lo, hi in zip(k_lo, k_hi,
                                                                               strict=True)]))
    return k_Z * _STEP


def _race_ZxJ(z_Z: np.ndarray, s_J: np.ndarray) -> np.ndarray:
    """``Lambda(z - s_j)``: the chance that sample j's Gumbel score stays below z."""
    with np.errstate(over="ignore"):
        return np.exp(-np.exp(-(z_Z[:, None] - s_J[None, :])))


def _weight_MxZ(s_M: np.ndarray, z_Z: np.ndarray) -> np.ndarray:
    """``step * phi(z - s_m)``: the trapezoid weight of node z in sample m's integral."""
    g_MxZ = z_Z[None, :] - s_M[:, None]
    with np.errstate(over="ignore"):
        return _STEP * np.exp(-g_MxZ - np.exp(-g_MxZ))


def soft_bon_ratio(reward_Y, n: int, lam: float, weights_Y=None) -> np.ndarray:
    """``rho(r_y) = p(y) / pi_ref(y)`` of soft Best-of-n on a discrete law, float64 ``[Y]``.

        rho(s) = n int phi(g) ( sum_z pi(z) Lambda(g + (s - r_z) / lambda) )^(n-1) dg

    (module docstring). ``weights_Y`` is pi (default uniform: the empirical law of Y samples,
    n draws with replacement). ``sum_y pi(y) rho(r_y) = 1`` to quadrature accuracy.

    Raises:
      ValueError: on ``n < 1``, ``lambda`` not finite and > 0 (or below 1e-10 of the rewards'
        spread), non-finite rewards, or weights that are not a distribution over the rewards.
    """
    n = check_int("n", n)
    lam = _check_lambda(lam)
    reward_Y = _check_rewards(reward_Y)
    if weights_Y is None:
        weights_Y = np.full(reward_Y.shape, 1.0 / reward_Y.size)
    weights_Y = np.asarray(weights_Y, np.float64)
    if weights_Y.shape != reward_Y.shape or (weights_Y < 0).any() \
            or abs(weights_Y.sum() - 1.0) > 1e-9:
        raise ValueError(f"weights must be non-negative, sum to 1 and match the rewards' shape "
                         f"{reward_Y.shape}, got shape {weights_Y.shape}, sum "
                         f"{float(weights_Y.sum())!r}")
    s_Y = _scaled(reward_Y, lam)
    if n == 1:
        return np.ones_like(reward_Y)
    z_Z = _nodes(s_Y)
    rho_Y = np.zeros_like(reward_Y)
    chunk = max(1, _ELEMENTS_PER_CHUNK // reward_Y.size)
    for start in range(0, z_Z.size, chunk):
        z_C = z_Z[start:start + chunk]
        below_C = _race_ZxJ(z_C, s_Y) @ weights_Y  # P(one other draw's score < z)
        rho_Y += n * (_weight_MxZ(s_Y, z_C) @ below_C ** (n - 1))
    return rho_Y


def soft_bon_ratio_without_replacement(reward_M, n: int, lam: float) -> np.ndarray:
    """``rho_hat_m``, float64 ``[M]``: M times the probability that soft Best-of-n run on a
    uniformly random n-subset of the M samples keeps sample m.

        rho_hat_m = n int phi(g) e_{n-1}({Lambda(g + (r_m - r_j)/lambda)}_{j != m})
                    / C(M-1, n-1) dg

    ``(1/M) sum_m rho_hat_m r_m`` is the unbiased U-statistic of the soft BoN reward;
    ``mean(rho_hat) = 1`` (to quadrature accuracy).

    Raises:
      ValueError: on ``n`` outside ``[1, M]``, ``lambda`` not finite and > 0 (or below 1e-10 of
        the rewards' spread), non-finite rewards.
    """
    n = check_int("n", n)
    lam = _check_lambda(lam)
    reward_M = _check_rewards(reward_M)
    M = reward_M.size
    if n > M:
        raise ValueError(f"n = {n} exceeds the M = {M} reference samples per prompt")
    s_M = _scaled(reward_M, lam)
    if n == 1:
        return np.ones_like(reward_M)
    # Without sample m, the others are the a = m samples before it and the M - 1 - m after
    # it: the mean over their (n-1)-subsets mixes the prefix's k-subset mean and the suffix's
    # (n-1-k)-subset mean with hypergeometric weights C(a, k) C(b, n-1-k) / C(M-1, n-1).
    k_K = np.arange(n)
    a_M = np.arange(M)
    log_c = _log_binomial
    log_hyp_MxK = (log_c(a_M[:, None], k_K[None, :]) + log_c(M - 1 - a_M[:, None],
                                                              n - 1 - k_K[None, :])
                   - log_c(np.array(M - 1), np.array(n - 1)))
    hyp_MxK = np.exp(log_hyp_MxK)
    z_Z = _nodes(s_M)
    rho_M = np.zeros(M)
    chunk = max(1, _ELEMENTS_PER_CHUNK // (M * n))
    for start in range(0, z_Z.size, chunk):
        z_C = z_Z[start:start + chunk]
        x_CxM = _race_ZxJ(z_C, s_M)
        prefix_MxCxK = _subset_means(x_CxM[:, :-1], n)  # [a]: over samples 0..a-1
        suffix_MxCxK = _subset_means(x_CxM[:, :0:-1], n)  # [b]: over the last b samples
        # others_MxC[m]: the mean over the (n-1)-subsets of the samples other than m.
        others_MxC = np.einsum("mk,mck,mck->mc", hyp_MxK, prefix_MxCxK,
                               suffix_MxCxK[::-1, :, ::-1])
        rho_M += n * np.einsum("mc,mc->m", _weight_MxZ(s_M, z_C), others_MxC)
    return rho_M


def _log_binomial(a, k) -> np.ndarray:
    """``log C(a, k)``, ``-inf`` where ``k < 0`` or ``k > a``."""
    a, k = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(k, np.float64))
    valid = (k >= 0) & (k <= a)
    a_ok, k_ok = np.where(valid, a, 0.0), np.where(valid, k, 0.0)
    value = gammaln(a_ok + 1) - gammaln(k_ok + 1) - gammaln(a_ok - k_ok + 1)
    return np.where(valid, value, -np.inf)


def _subset_means(x_CxL: np.ndarray, n: int) -> np.ndarray:
    """``[c, :, k]``: the mean over the k-subsets of the first c of the L columns of the
    product of their entries (``c = 0..L``, ``k = 0..n-1``; 0 while ``k > c``), by
    ``E_k(c) = (1 - k/c) E_k(c-1) + (k/c) x_c E_{k-1}(c-1)``."""
    C, L = x_CxL.shape
    k_K = np.arange(1, n)
    means_LxCxK = np.zeros((L + 1, C, n))
    means_LxCxK[:, :, 0] = 1.0
    for c in range(1, L + 1):
        previous_CxK = means_LxCxK[c - 1]
        means_LxCxK[c, :, 1:] = ((1.0 - k_K / c) * previous_CxK[:, 1:]
                                 + (k_K / c) * x_CxL[:, c - 1:c] * previous_CxK[:, :-1])
    return means_LxCxK


def soft_bon_estimates(reward_ref_BxM, n: int, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt estimates of soft Best-of-n's reward and ``KL(p || pi_ref)``, float64 ``[B]``
    each: the unbiased U-statistic of the reward and the plug-in KL of the empirical law
    (module docstring).

    Raises:
      ValueError: on rewards that are not a finite ``[B, M]`` array, ``n`` outside ``[1, M]``,
        ``lambda`` not finite and > 0.
    """
    reward_ref_BxM = _check_reference_rewards(reward_ref_BxM)
    M = reward_ref_BxM.shape[1]
    (n,) = _check_ns(n, M, f"soft Best-of-n on the reference samples needs n <= M = {M}")
    n, lam = int(n), _check_lambda(lam)
    rho_hat_BxM = np.stack([soft_bon_ratio_without_replacement(r_M, n, lam)
                            for r_M in reward_ref_BxM])
    reward_B = (rho_hat_BxM * reward_ref_BxM).mean(axis=1)
    rho_BxM = np.stack([soft_bon_ratio(r_M, n, lam) for r_M in reward_ref_BxM])
    kl_B = np.where(rho_BxM > 0, rho_BxM * np.log(np.where(rho_BxM > 0, rho_BxM, 1.0)),
                    0.0).mean(axis=1)
    return reward_B, np.maximum(kl_B, 0.0)


def soft_bon_reference_points(reward_ref_BxM, ns, lambdas) -> list[EvalPoint]:
    """The soft Best-of-n points of the reward-KL plot and table, one per (n, lambda).

    Method ``"Soft BoN"``, setting ``"n=<n>, lambda=<lambda>"``; reward and KL from
    :func:`soft_bon_estimates`, each the mean over prompts with its standard error across
    prompts (needs B >= 2); no win rate.
    """
    reward_ref_BxM = _check_reference_rewards(reward_ref_BxM)
    M = reward_ref_BxM.shape[1]
    ns_Q = _check_ns(ns, M, f"soft Best-of-n on the reference samples needs n <= M = {M}")
    lambdas = [_check_lambda(lam) for lam in np.atleast_1d(lambdas)]
    if not lambdas:
        raise ValueError("lambdas is empty: soft Best-of-n needs at least one temperature")
    points = []
    for n in ns_Q:
        for lam in lambdas:
            reward_B, kl_B = soft_bon_estimates(reward_ref_BxM, int(n), lam)
            points.append(EvalPoint(method=SOFT_BON_METHOD, setting=f"n={int(n)}, lambda={lam:g}",
                                    reward=_np_estimate(reward_B, "reward_ref_BxM"),
                                    kl=_np_estimate(kl_B, "reward_ref_BxM")))
    return points
