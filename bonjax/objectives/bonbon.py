"""BoNBoN alignment (Gui, Garbacea, Veitch; arXiv 2406.00832).

For each prompt draw n samples from ``pi_ref``; ``y_(n)`` is the best and ``y_(1)`` the worst.

    L       = alpha L_SFT + (1 - alpha) L_IPO
    L_SFT   = -log pi_theta(y_(n) | x)
    L_IPO   = ( h - 1/(2 beta) )^2
    h       = log[pi_theta(y_(n))/pi_ref(y_(n))] - log[pi_theta(y_(1))/pi_ref(y_(1))]
    beta*_n = 1 / ( 2 (n-1) H_{n-1} ),   H_k = sum_{j=1..k} 1/j

Log-probabilities and log-ratios are sequence sums (a per-token mean would change the scale that
``beta*_n`` is derived for). ``beta*_n`` makes ``1/(2 beta)`` equal ``E[h]`` under the BoN
policy ``pi_n`` for continuous rewards: there ``log(pi_n/pi_ref)(y) = log n + (n-1) log Q(r(y))``
and ``E[log Q(y_(n))] - E[log Q(y_(1))] = H_{n-1}``. The IPO term is the squared loss written
above (not a logistic surrogate).

Pairs are stacked on axis 1, ``x_Bx2xT``, best first (see
:func:`bonjax.objectives.best_worst_pair`).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import jax

from bonjax.checks import check_positive, check_unit_interval
from bonjax.objectives._logprob import sft_loss
from bonjax.objectives.preference import ipo_loss_from_margin, log_ratio_margin
from bonjax.objectives.vbon import check_bon_n

__all__ = ["BoNBoNConfig", "bonbon_beta", "bonbon_loss"]


def bonbon_beta(n: int) -> float:
    """``beta*_n = 1 / (2 (n-1) H_{n-1})``: 0.5 at n = 2, 1/11 at n = 4, ~0.0275482 at n = 8."""
    check_bon_n("n", n, minimum=2)
    harmonic = sum(Fraction(1, j) for j in range(1, n))
    return float(1 / (2 * (n - 1) * harmonic))


@dataclasses.dataclass(frozen=True)
class BoNBoNConfig:
    """Configuration of the BoNBoN loss.

    Attributes:
      n: samples per prompt the best/worst pair is drawn from (>= 2).
      alpha: weight of the SFT term, in [0, 1] (paper default 0.005).
      beta: IPO coefficient; None means ``bonbon_beta(n)``.
    """

    n: int = 8
    alpha: float = 0.005
    beta: float | None = None

    def __post_init__(self):
        check_bon_n("BoNBoNConfig.n", self.n, minimum=2)
        check_unit_interval("BoNBoNConfig.alpha", self.alpha)
        if self.beta is not None:
            check_positive("BoNBoNConfig.beta", self.beta)

    @property
    def ipo_beta(self) -> float:
        """The IPO coefficient in use: ``beta``, or ``beta*_n`` when it is None."""
        return bonbon_beta(self.n) if self.beta is None else float(self.beta)


def bonbon_loss(
    logp_Bx2xT: jax.Array,
    logp_ref_Bx2xT: jax.Array,
    mask_Bx2xT: jax.Array,
    config: BoNBoNConfig,
) -> jax.Array:
    """Per-prompt BoNBoN loss ``alpha L_SFT + (1 - alpha) (h - 1/(2 beta))^2``, shape ``[B]``.

    ``[:, 0]`` holds the best sample ``y_(n)``, ``[:, 1]`` the worst ``y_(1)``; ``logp`` are the
    policy's per-token log-probs of those samples, ``logp_ref`` the reference's.
    """
    h_B = log_ratio_margin(logp_Bx2xT, logp_ref_Bx2xT, mask_Bx2xT)
    sft_B = sft_loss(logp_Bx2xT[:, 0], mask_Bx2xT[:, 0])
    ipo_B = ipo_loss_from_margin(h_B, config.ipo_beta)
    return config.alpha * sft_B + (1.0 - config.alpha) * ipo_B
