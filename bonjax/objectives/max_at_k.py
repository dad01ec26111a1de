"""max@k policy optimisation, PKPO (Walder & Karkhanis, arXiv 2505.15201, continuous
rewards): unbiased estimates of ``maxg@k = E_{y_1..y_k ~ pi}[max_i g(y_i)]`` and of its
gradient from n >= k i.i.d. samples, as a joint transformation of the n rewards.

With the n rewards sorted ascending, ``g_(1) <= ... <= g_(n)`` (1-based), averaging
``max_I g`` over all ``C(n, k)`` k-subsets ``I`` gives the unbiased estimate

    rho = (1 / C(n,k)) sum_{i=k..n} C(i-1, k-1) g_(i)          (k = 1: the mean; k = n: the max)

and the gradient ``sum_i s_i grad log pi(y_i)`` with the per-sample weights

    s_(i) = (1 / C(n,k)) sum_{|I| = k, i in I} max_I g = (1 / C(n,k)) sum_{j >= i} m_ij g_(j),
    m_ii = C(i-1, k-1),   m_ij = C(j-2, k-2)  (j > i, k >= 2; 0 for k = 1),

so that ``sum_i s_i = k rho``. The leave-one-out variant subtracts from every subset term the
maximum of the subset without sample i (a baseline that does not depend on ``y_i``: the expected
gradient is unchanged):

    s_(i)^loo = (1 / C(n,k)) sum_{|I| = k, i in I} (max_I g - max_{I \\ i} g)
              = s_(i) - (1 / C(n,k)) sum_{(k-1)-subsets J of the others} max_J g,

which is ``>= 0``, and 0 for every sample that is never a subset's strict maximum. At ``k = n``
only the best sample gets weight, ``g_(n) - g_(n-1)``. At ``k = 1`` the subsets without i are
empty; there the leave-one-out baseline is the mean of the other n - 1 rewards (RLOO).
Ties: sorting breaks ties arbitrarily, and every formula above is symmetric in tied values, so
the weights of tied samples are equal.

Trained with a KL penalty, the objective ``maxg@k(pi) - beta KL(pi || pi_ref)`` has stationary
points (derived here; the functional derivative of ``maxg@k`` at ``pi(y)`` is ``k h(y)``)

    pi*(y) ∝ pi_ref(y) exp(k h(y) / beta),   h(y) = E_{y_2..y_k ~ pi*}[max(g(y), g(y_2), ..)],

solved by damped fixed-point iteration in :func:`max_at_k_optimal_policy` (k = 1: the tilt
``pi_ref e^{g / beta}``).

The coefficient matrices depend only on (n, k) and are built once in float64 with exact
binomials (``math.comb``), divided by ``C(n, k)`` before the cast to the rewards' dtype.

Provenance (checked with the search tool): the paper has versions v1 (21 May 2025), v3 (30 Oct
2025) and v4 (14 Dec 2025); the continuous-reward estimators and gradient weights are confirmed
from the abstract and from third-party summaries. Two independent public implementations cite
``s^(loo-1)`` as Eq. 33 (one as "Listing 1" too); one of them cites ``rho`` as Eq. 12, the
stable form of ``m_ij`` as Eq. 14 and ``s^loo`` as Eq. 29, for "the NeurIPS 2025 version".
Unconfirmed (the paper's body was not readable): those numbers in the paper itself, which arXiv
version they belong to (``shared/SCIENCE.md`` notes corrections to Eqs. 14, 31, 32 in a later
version), and the section number. The formulas are checked here by enumeration of subsets
instead.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from bonjax.checks import check_int, check_positive

__all__ = [
    "MaxAtKConfig",
    "check_k",
    "max_at_k_estimate",
    "max_at_k_exact",
    "max_at_k_optimal_policy",
    "max_at_k_weights",
]


def check_k(k, n) -> int:
    """``int(k)``, or a ``ValueError`` naming k unless ``1 <= k <= n``."""
    n = check_int("n", n)
    k = check_int("k", k)
    if k > n:
        raise ValueError(f"k must be <= n = {n} (max@k from n samples), got k = {k}")
    return k


@dataclasses.dataclass(frozen=True)
class MaxAtKConfig:
    """Policy optimisation of ``maxg@k - beta KL(pi || pi_ref)`` from n samples per prompt.

    Attributes:
      k: the subset size of max@k (``1 <= k <= n``, n = the method's samples per prompt).
      beta: the KL coefficient (>= 0).
      leave_one_out: the leave-one-out weights ``s^loo`` (lower variance, same expectation).
    """

    k: int = 2
    beta: float = 0.1
    leave_one_out: bool = True

    def __post_init__(self):
        check_int("k", self.k)
        check_positive("beta", self.beta, allow_zero=True)


@functools.lru_cache(maxsize=64)
def _coefficients(n: int, k: int, leave_one_out: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(rho_N, s_NxN)``: ``rho = rho_N @ g_sorted``, ``s_sorted = s_NxN @ g_sorted``."""
    total = math.comb(n, k)
    rho_N = np.array([math.comb(i - 1, k - 1) for i in range(1, n + 1)], np.float64) / total
    s_NxN = np.zeros((n, n), np.float64)
    for i in range(1, n + 1):
        s_NxN[i - 1, i - 1] = math.comb(i - 1, k - 1)
        for j in range(i + 1, n + 1):
            s_NxN[i - 1, j - 1] = math.comb(j - 2, k - 2) if k >= 2 else 0
            if leave_one_out and k >= 2:
                # (k-1)-subsets of the others whose maximum is g_(j): the others below j
                # number j - 2 when i < j, j - 1 when i > j.
                s_NxN[i - 1, j - 1] -= math.comb(j - 2, k - 2)
        if leave_one_out and k >= 2:
            for j in range(1, i):
                s_NxN[i - 1, j - 1] -= math.comb(j - 1, k - 2)
    s_NxN /= total
    if leave_one_out and k == 1:  # RLOO: g_i / n - mean of the others / n
        s_NxN = (np.eye(n) - (1 - np.eye(n)) / max(n - 1, 1)) / n
    return rho_N, s_NxN


def _check_rewards(rewards_BxN) -> jax.Array:
    rewards_BxN = jnp.asarray(rewards_BxN)
    if rewards_BxN.ndim != 2 or rewards_BxN.shape[1] < 1:
        raise ValueError(f"rewards must have shape [B, n] with n >= 1, got {rewards_BxN.shape}")
    if not jnp.issubdtype(rewards_BxN.dtype, jnp.floating):
        raise ValueError(f"rewards must have a floating dtype, got {rewards_BxN.dtype}")
    return rewards_BxN


def max_at_k_estimate(rewards_BxN: jax.Array, k: int) -> jax.Array:
    """The unbiased estimate ``rho`` of ``maxg@k`` from n samples per prompt, shape [B]."""
    rewards_BxN = _check_rewards(rewards_BxN)
    k = check_k(k, rewards_BxN.shape[1])
    rho_N, _ = _coefficients(rewards_BxN.shape[1], k, False)
    return jnp.sort(rewards_BxN, axis=1) @ jnp.asarray(rho_N, rewards_BxN.dtype)


def max_at_k_weights(rewards_BxN: jax.Array, k: int, leave_one_out: bool = True) -> jax.Array:
    """Per-sample weights ``s_i`` (or ``s_i^loo``), [B, n] in draw order: the gradient of
    ``maxg@k`` is estimated without bias by ``sum_i s_i grad log pi(y_i)``.

    Rewards must be finite (a NaN has no place in the sorted order the weights are built on).
    """
    rewards_BxN = _check_rewards(rewards_BxN)
    n = rewards_BxN.shape[1]
    k = check_k(k, n)
    _, s_NxN = _coefficients(n, k, bool(leave_one_out))
    order_BxN = jnp.argsort(rewards_BxN, axis=1)
    sorted_BxN = jnp.take_along_axis(rewards_BxN, order_BxN, axis=1)
    s_sorted_BxN = jnp.einsum("ij,bj->bi", jnp.asarray(s_NxN, rewards_BxN.dtype), sorted_BxN)
    # Scatter back to draw order: draw order_BxN[b, i] has sorted rank i.
    return jnp.zeros_like(s_sorted_BxN).at[
        jnp.arange(rewards_BxN.shape[0])[:, None], order_BxN].set(s_sorted_BxN)


def max_at_k_exact(pi_Y, reward_Y, k: int) -> float:
    """``E_{y_1..y_k ~ pi}[max_i g(y_i)]`` over a discrete outcome space, float64 (ties are
    harmless: ``sum_y g(y) (P[g <= g(y)]^k - P[g < g(y)]^k) / #tied``, grouped by value)."""
    k = check_int("k", k)
    pi_Y = np.asarray(pi_Y, np.float64)
    reward_Y = np.asarray(reward_Y, np.float64)
    values = np.unique(reward_Y)
    le = np.array([pi_Y[reward_Y <= v].sum() for v in values])
    lt = np.array([pi_Y[reward_Y < v].sum() for v in values])
    return float(np.sum(values * (le**k - lt**k)))


def _max_with_others(pi_Y: np.ndarray, reward_Y: np.ndarray, k: int) -> np.ndarray:
    """``h(y) = E[max(g(y), max of k - 1 draws of pi)]`` for every outcome y."""
    if k == 1:
        return reward_Y.copy()
    values = np.unique(reward_Y)
    cdf_V = np.array([pi_Y[reward_Y <= v].sum() for v in values])
    below_V = np.concatenate([[0.0], cdf_V[:-1]])
    mass_V = cdf_V ** (k - 1) - below_V ** (k - 1)  # law of the max of the k - 1 others
    return (np.maximum(reward_Y[:, None], values[None, :]) * mass_V[None, :]).sum(1)


def max_at_k_optimal_policy(pi_ref_Y, reward_Y, k: int, beta: float, *, steps: int = 5000,
                            damping: float = 0.5, tol: float = 1e-13) -> np.ndarray:
    """The stationary policy of ``maxg@k(pi) - beta KL(pi || pi_ref)`` over a discrete outcome
    space (float64), by damped iteration of ``log pi <- (1 - d) log pi + d log(pi_ref e^{k h /
    beta} / Z)`` from ``pi_ref``.

    Raises:
      ValueError: on ``beta <= 0``, ``k < 1``, or when the iteration has not converged.
    """
    k = check_int("k", k)
    check_positive("beta", beta)
    pi_ref_Y = np.asarray(pi_ref_Y, np.float64)
    reward_Y = np.asarray(reward_Y, np.float64)
    log_ref_Y = np.log(pi_ref_Y)
    log_pi_Y = log_ref_Y.copy()
    for _ in range(steps):
        logits_Y = log_ref_Y + k * _max_with_others(np.exp(log_pi_Y), reward_Y, k) / beta
        new_Y = (1 - damping) * log_pi_Y + damping * (logits_Y - np.logaddexp.reduce(logits_Y))
        new_Y -= np.logaddexp.reduce(new_Y)
        if np.abs(new_Y - log_pi_Y).max() < tol:
            return np.exp(new_Y)
        log_pi_Y = new_Y
    raise ValueError(f"the fixed point of max@k (k = {k}, beta = {beta}) did not converge in "
                     f"{steps} steps; raise beta or lower the damping")
