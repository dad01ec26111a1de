"""Regularised Best-of-N (RBoN_KL) as a point of the reward-KL plot, from reference samples.

RBoN_KL (:func:`bonjax.rbon.select_regularised`; Jinnai et al. 2024, arXiv 2404.01054) keeps,
of n i.i.d. samples of pi_ref, the one of largest score ``s(y) = r(y) + beta log pi_ref(y|x)``.
That is Best-of-n under another ranking, so its law is Best-of-n's with s in place of r:

    p(y) = pi_ref(y) (F_s(s(y))^n - F_s^-(s(y))^n) / pi_ref(tie group of y),

``F_s`` / ``F_s^-`` the reference law's CDF of s with ``<=`` / ``<``. Without ties in s,
``p(y) = n F_s(s(y))^(n-1) pi_ref(y)`` and ``F_s(s(y))`` follows Beta(n, 1) under p, so

    KL(p || pi_ref) = log n - (n - 1) / n,

the BoN KL whatever beta is (an upper bound with ties, as for BoN). With beta > 0 the ranking
is no longer by reward, so RBoN's reward is at most BoN's at the same KL: on this plot its
points lie on the vertical through BoN's point of the same n, below it. (RBoN is meant for
robustness to a misspecified reward, measured with another reward than the one it selects by.)

From the M reference samples of a prompt, their rewards and sequence log-probabilities
(:func:`rbon_estimates`):

- reward, unbiased: the U-statistic over the ``C(M, n)`` n-subsets of the reward of the
  subset's top-scoring sample. With the samples sorted by score, the j-th lowest tops exactly
  ``C(j-1, n-1)`` subsets: ``sum_j r_(j) C(j-1, n-1) / C(M, n)``
  (:func:`~bonjax.evaluation.bon_expected_max` with the score's order). Ties in the score
  between samples of different rewards (identical completions tie in both) count the higher
  reward as the top.
- win rate against one pi_ref sample, unbiased: each sample j plays the opponent once, against
  RBoN over n of the other M - 1 samples; sample i tops a random such subset with probability
  ``C(b_ij, n-1) / C(M-1, n)``, ``b_ij`` the other samples besides j scored below i:

      W = (1/M) sum_j sum_{i != j} C(b_ij, n-1) / C(M-1, n) (1[r_i > r_j] + c 1[r_i = r_j]).

  beta = 0 gives :func:`~bonjax.evaluation.bon_win_rate_empirical`.

float64 numpy; ``O(M^2)`` per prompt and setting.
"""

from __future__ import annotations

import numpy as np

from bonjax.bon import bon_kl
from bonjax.checks import check_positive
from bonjax.evaluation.metrics import (
    Estimate,
    EvalPoint,
    _check_finite,
    _check_ns,
    _check_reference_rewards,
    _check_tie_credit,
    _log_binom_table,
    _np_estimate,
)

__all__ = ["RBON_METHOD", "rbon_estimates", "rbon_reference_points"]

RBON_METHOD = "RBoN"  # the method family of the points in tables and plots


def _check_log_ref(log_ref_BxM, shape: tuple[int, ...]) -> np.ndarray:
    log_ref_BxM = np.asarray(log_ref_BxM, np.float64)
    if log_ref_BxM.shape != shape:
        raise ValueError(f"log_ref_BxM must have the rewards' shape {shape}, got "
                         f"{log_ref_BxM.shape}")
    _check_finite("log_ref_BxM", log_ref_BxM)
    return log_ref_BxM


def rbon_estimates(reward_ref_BxM, log_ref_BxM, n: int, beta: float, *,
                   tie_credit: float = 0.5) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-prompt RBoN_KL reward and win rate, float64 ``[B]`` each (module docstring); the win
    rate is None for ``n = M`` (no sample is left to play the opponent).

    Raises:
      ValueError: on rewards or log-probabilities that are not finite ``[B, M]`` arrays of one
        shape, ``n`` outside ``[1, M]``, ``beta < 0``, a tie credit outside ``[0, 1]``.
    """
    reward_ref_BxM = _check_reference_rewards(reward_ref_BxM)
    log_ref_BxM = _check_log_ref(log_ref_BxM, reward_ref_BxM.shape)
    B, M = reward_ref_BxM.shape
    (n,) = _check_ns(n, M, f"RBoN on the reference samples needs n <= M = {M}")
    n = int(n)
    check_positive("beta", beta, allow_zero=True)
    _check_tie_credit(tie_credit)
    score_BxM = reward_ref_BxM + float(beta) * log_ref_BxM
    # Sorted by score, ties by reward: row b's j-th sample tops C(j-1, n-1) of the n-subsets.
    order_BxM = np.lexsort((reward_ref_BxM, score_BxM), axis=1)
    sorted_reward_BxM = np.take_along_axis(reward_ref_BxM, order_BxM, axis=1)
    log_binom = _log_binom_table(M)
    j_M = np.arange(M)
    reward_B = sorted_reward_BxM @ np.exp(log_binom(j_M, n - 1) - log_binom(M, n))
    if n == M:
        return reward_B, None
    # In sorted order, the others besides opponent j scored below candidate i number i - 1
    # when j lies below i, else i (0-based ranks).
    below_MxM = j_M[:, None] - (j_M[None, :] < j_M[:, None])  # [candidate i, opponent j]
    tops_MxM = np.exp(log_binom(below_MxM, n - 1) - log_binom(M - 1, n))
    np.fill_diagonal(tops_MxM, 0.0)
    r_BxMx1, r_Bx1xM = sorted_reward_BxM[:, :, None], sorted_reward_BxM[:, None, :]
    score_BxMxM = (r_BxMx1 > r_Bx1xM) + tie_credit * (r_BxMx1 == r_Bx1xM)
    win_B = np.einsum("ij,bij->b", tops_MxM, score_BxMxM) / M
    return reward_B, win_B


def rbon_reference_points(reward_ref_BxM, log_ref_BxM, ns, betas, *,
                          tie_credit: float = 0.5) -> list[EvalPoint]:
    """The RBoN_KL points of the reward-KL plot and table, one per (n, beta).

    Method ``"RBoN"``, setting ``"n=<n>, beta=<beta>"``; reward and win rate from
    :func:`rbon_estimates` (mean over prompts, standard error across prompts, B >= 2), KL the
    analytic ``log n - (n - 1) / n`` with stderr 0.
    """
    reward_ref_BxM = _check_reference_rewards(reward_ref_BxM)
    M = reward_ref_BxM.shape[1]
    ns_Q = _check_ns(ns, M, f"RBoN on the reference samples needs n <= M = {M}")
    betas = list(np.atleast_1d(np.asarray(betas, np.float64)))
    if not betas:
        raise ValueError("betas is empty: RBoN needs at least one regularisation weight")
    for beta in betas:
        check_positive("beta", beta, allow_zero=True)
    points = []
    for n in ns_Q:
        for beta in betas:
            reward_B, win_B = rbon_estimates(reward_ref_BxM, log_ref_BxM, int(n), beta,
                                             tie_credit=tie_credit)
            points.append(EvalPoint(
                method=RBON_METHOD, setting=f"n={int(n)}, beta={beta:g}",
                reward=_np_estimate(reward_B, "reward_ref_BxM"),
                kl=Estimate(float(bon_kl(n)), 0.0),
                win_rate=None if win_B is None else _np_estimate(win_B, "reward_ref_BxM")))
    return points
