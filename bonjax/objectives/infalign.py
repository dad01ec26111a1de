"""InfAlign-CTRL: calibrate-and-transform RL (Balashankar, Sun, et al.; ICML 2025,
arXiv 2412.19792v5, 21 Aug 2025).

InfAlign maximises the win rate of an inference-time procedure applied to the aligned policy
(Best-of-N, worst-of-N) against the same procedure on the reference, under a KL constraint; the
optimum is KL-regularised RL on a transformed reward (Sec. 3). CTRL does it in two steps (Sec. 4):

1. Calibrate: ``C(x, y) = P_{z ~ pi_ref}[r(z) < r(y)] + 1/2 P_{z ~ pi_ref}[r(z) = r(y)]``, the
   reference quantile of the reward with ties counted half (Uniform(0, 1) under pi_ref without
   ties); `calibrated_reward` estimates it from a prompt's M reference rewards
   (:mod:`bonjax.ecdf`: the mean of the strict and the non-strict empirical CDFs).
2. Transform and optimise ``E_pi[Phi(C)] - beta KL(pi || pi_ref)`` (:class:`Exponential`:
   ``Phi_t(u) = e^(t u)`` with ``t > 0`` for Best-of-N, ``-e^(-|t| u)`` with ``t < 0`` for
   worst-of-N; :class:`Logarithm` and :class:`Identity` for the identities below).

The KL-RL optimum ``pi* ∝ pi_ref exp(Phi(C) / beta)`` makes C follow (as we derive; 1-D, by
quadrature in `ctrl_curves`)

    q(u) = exp(Phi(u) / beta) / int_0^1 exp(Phi(s) / beta) ds,   G its CDF,
    KL(pi* || pi_ref) = int q log q,   win rate vs pi_ref = int u q(u) du,
    Best-of-N(pi*) vs Best-of-N(pi_ref) win rate W_N = int_0^1 N G(u)^(N-1) q(u) u^N du,

from which `choose_exponent` picks ``t`` for (N, KL budget). Identity: ``Phi = log u`` with
``beta = 1/(N-1)`` gives ``q(u) = N u^(N-1)``: the optimum is exactly Best-of-N, vBoN's target.
The closed forms of q, KL and W_N are derived here.

Provenance (checked with the search tool, v5 of 21 Aug 2025, the ICML 2025 version): confirmed
are the section titles (Sec. 3 "Reinforcement learning with reward transformation", Sec. 4
"InfAlign-CTRL: Calibrate-and-transform reinforcement learning") and, from the abstract, that
the optimal aligned policy solves KL-regularised RL on a transformed reward and that CTRL is a
reward calibration step followed by KL-regularised maximisation of a transformed calibrated
reward, with specific transformations for Best-of-N sampling and jailbreaking. Unconfirmed
(the paper's body was not readable): the equation numbers, the calibration rule with ties
counted half, the exponential transforms ``e^(t u)`` / ``-e^(-t u)`` and the choice of t by the
1-D curves, all taken from ``shared/SCIENCE.md`` section 8.3 (marked [uncertain] there).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate, optimize

from bonjax import ecdf
from bonjax.checks import check_int, check_nonzero, check_positive

__all__ = ["CTRLConfig", "Exponential", "Identity", "Logarithm", "calibrated_reward",
           "choose_exponent", "ctrl_curves", "ctrl_optimal_policy", "exact_calibrated_reward"]


@dataclasses.dataclass(frozen=True)
class Exponential:
    """``Phi_t(u) = sign(t) e^(t u)``: ``t > 0`` for Best-of-N, ``t < 0`` for worst-of-N."""

    t: float = 5.0

    def __post_init__(self):
        check_nonzero("t", self.t)

    def __call__(self, u):
        xp = jnp if isinstance(u, jax.Array) else np
        return math.copysign(1.0, self.t) * xp.exp(self.t * u)


@dataclasses.dataclass(frozen=True)
class Logarithm:
    """``Phi(u) = log u`` (with ``beta = 1/(N-1)``: Best-of-N exactly)."""

    def __call__(self, u):
        xp = jnp if isinstance(u, jax.Array) else np
        return xp.log(u)


@dataclasses.dataclass(frozen=True)
class Identity:
    """``Phi(u) = u``: calibration alone."""

    def __call__(self, u):
        return u


Transform = Exponential | Logarithm | Identity


@dataclasses.dataclass(frozen=True)
class CTRLConfig:
    """KL-regularised RL on ``Phi(C)``.

    Attributes:
      transform: ``Phi``.
      beta: the KL coefficient (> 0).
    """

    transform: Transform = Exponential()
    beta: float = 0.1

    def __post_init__(self):
        if not isinstance(self.transform, Exponential | Logarithm | Identity):
            raise ValueError(f"transform must be Exponential, Logarithm or Identity, got "
                             f"{self.transform!r}")
        check_positive("beta", self.beta)


def calibrated_reward(refs: ecdf.ReferenceRewards, reward_BxK: jax.Array) -> jax.Array:
    """``C_hat = (#{r_m < r} + #{r_m <= r}) / (2M)`` per query reward, ``[B, K]`` in [0, 1]."""
    below_BxK = ecdf.count_below(refs, reward_BxK, ecdf.Inequality.LESS)
    at_or_below_BxK = ecdf.count_below(refs, reward_BxK, ecdf.Inequality.LESS_EQUAL)
    return (below_BxK + at_or_below_BxK).astype(jnp.float32) / (2 * refs.num_refs)


def exact_calibrated_reward(pi_ref_Y, reward_Y) -> np.ndarray:
    """``C(y) = P_ref[r < r(y)] + 1/2 P_ref[r = r(y)]`` over a discrete outcome space."""
    pi_ref_Y = np.asarray(pi_ref_Y, np.float64)
    reward_Y = np.asarray(reward_Y, np.float64)
    below_Y = (reward_Y[None, :] < reward_Y[:, None]) @ pi_ref_Y
    tied_Y = (reward_Y[None, :] == reward_Y[:, None]) @ pi_ref_Y
    return below_Y + tied_Y / 2


def ctrl_optimal_policy(pi_ref_Y, reward_Y, config: CTRLConfig) -> np.ndarray:
    """``pi* ∝ pi_ref exp(Phi(C) / beta)`` over a discrete outcome space, float64."""
    pi_ref_Y = np.asarray(pi_ref_Y, np.float64)
    with np.errstate(divide="ignore"):
        logits_Y = config.transform(exact_calibrated_reward(pi_ref_Y, reward_Y)) / config.beta
    weight_Y = pi_ref_Y * np.exp(logits_Y - logits_Y[pi_ref_Y > 0].max())
    return weight_Y / weight_Y.sum()


def _log_density(config: CTRLConfig):
    """``(log q, breakpoints)``: ``u -> log q(u)`` of C under pi*, shifted by ``Phi(1) / beta``
    against overflow (Phi is increasing), and the points where the shifted log-density crosses
    -1, -10, -100, ... (a sharp peak at u = 1 that adaptive quadrature must not miss)."""
    def shifted(u):
        with np.errstate(divide="ignore"):
            return (config.transform(u) - config.transform(1.0)) / config.beta

    points = []
    for level in (-1.0, -10.0, -100.0, -1000.0):
        if shifted(1e-300) < level:
            points.append(optimize.brentq(lambda u, level=level: shifted(u) - level, 1e-300, 1.0,
                                          xtol=1e-14, maxiter=500))
    points = sorted(p for p in points if 0.0 < p < 1.0)
    norm = _quad(lambda u: np.exp(shifted(u)), 0.0, 1.0, points)
    log_norm = math.log(norm)
    return (lambda u: shifted(u) - log_norm), points


def _quad(fn, a: float, b: float, points) -> float:
    inside = [p for p in points if a < p < b]
    return integrate.quad(fn, a, b, points=inside or None, epsabs=1e-14, epsrel=1e-11,
                          limit=500)[0]


def ctrl_curves(config: CTRLConfig, n: int) -> dict[str, float]:
    """KL to pi_ref, standard win rate and Best-of-n win rate of the CTRL optimum (adaptive
    quadrature, relative error ~1e-10), float64.

    Returns:
      ``{"kl": ..., "win_rate": ..., "bon_win_rate": ...}``.
    """
    n = check_int("N", n)
    log_q, points = _log_density(config)

    def q(u):
        return math.exp(log_q(u))

    kl = _quad(lambda u: q(u) * log_q(u) if q(u) > 0 else 0.0, 0.0, 1.0, points)
    win_rate = _quad(lambda u: u * q(u), 0.0, 1.0, points)
    bon_win_rate = _quad(lambda u: n * _quad(q, 0.0, u, points) ** (n - 1) * q(u) * u**n,
                         0.0, 1.0, points)
    return {"kl": kl, "win_rate": win_rate, "bon_win_rate": bon_win_rate}


def choose_exponent(n: int, kl_budget: float, ts=(1.0, 2.0, 5.0, 10.0, 20.0)) -> dict[str, float]:
    """For each ``t`` the ``beta`` whose CTRL optimum has ``KL = kl_budget`` (Brent's method in
    log beta; budgets up to ~5 nats), and the ``t`` of the largest Best-of-n win rate among them.

    Returns:
      ``{"t": ..., "beta": ..., "bon_win_rate": ..., "kl": ...}`` of the best ``t``.
    """
    n = check_int("N", n)
    check_positive("kl_budget", kl_budget)
    best = None
    for t in ts:
        transform = Exponential(t)

        def excess(log_beta, transform=transform):
            return ctrl_curves(CTRLConfig(transform, math.exp(log_beta)), 1)["kl"] - kl_budget

        # Phi / beta spans (e^|t| - 1) / beta: bracket beta around that range.
        log_span = math.log(math.expm1(abs(t)))
        log_beta = optimize.brentq(excess, log_span - 8.0, log_span + 8.0, xtol=1e-8)
        curves = ctrl_curves(CTRLConfig(transform, math.exp(log_beta)), n)
        if best is None or curves["bon_win_rate"] > best["bon_win_rate"]:
            best = {"t": float(t), "beta": math.exp(log_beta), **curves}
    return best
