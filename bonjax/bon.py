"""Best-of-N: selection of the best and worst of N completions, and the mathematics of BoN.

Selection rule, the one every best/worst choice of the library follows (`select_best_and_worst`;
`bonjax.objectives.best_worst_pair` for BoNBoN/DPO/IPO pairs and J-BOND's better anchor; the
training methods' Best-of-N and preference pairs). Per prompt, the best completion is the one with
the largest reward and the worst the one with the smallest; among tied rewards the LOWEST DRAW
INDEX wins, for best and worst alike. Rewards are compared in the total order of
`bonjax.ecdf.order_keys`: NaN ranks below every value (so a NaN is never best unless all N are
NaN, and is the worst), NaNs tie with each other, `-0.0 == +0.0`, and +/-inf are ordinary ordered
values. With rewards [1, NaN, 2, 0.5] the best is draw 2 and the worst draw 1 (a plain
argmax/argmin picks the NaN as both, and a method would train towards it).

Because the N draws are i.i.d., "the first of the tied draws wins" is the same as a uniformly
random tie-break, so the selected completion follows rule (a) below (BOND, Theorem 1), which
`bon_distribution_draw_index` computes exactly. Rule (b), a fixed order on outcomes, is
`bon_distribution_fixed_order`. With the reference-policy quantities for one prompt

    p_lt(y) = P_{y' ~ pi_ref}[r(y') < r(y)],    p_le(y) = P_{y' ~ pi_ref}[r(y') <= r(y)],

  (a) ties broken by draw index, G the outcomes with reward r(y) (Sessa et al. 2024, Thm. 1):
        pi_BoN(y) = pi_ref(y) / pi_ref(G) * (p_le(y)^N - p_lt(y)^N)
  (b) ties broken by a fixed order on outcomes, F(y) the mass strictly below y in that order
      (Amini et al. 2025):
        pi_BoN(y) = (F(y) + pi_ref(y))^N - F(y)^N.

They agree when no two outcomes share a reward. For continuous rewards (no ties)
`pi_N(y) = N Q(r(y))^(N-1) pi_ref(y)` with `Q` the reward CDF under pi_ref, so

    win rate of BoN against one pi_ref sample = N / (N + 1),
    KL(pi_N || pi_ref) = log N - (N - 1) / N,

and with ties both are upper bounds (Beirami et al. 2024, arXiv 2401.01879).
The exact-distribution and analytic functions are float64 numpy: they are reference oracles and
plot curves, not training-time code.

Soft Best-of-n (Verdun, Oesterling, Lakkaraju, Calmon 2025, arXiv 2505.03156) keeps
draw i of the n with probability ``softmax(r / lambda)_i`` instead of the argmax
(`select_soft`, `soft_best_of_n`). Its law on a discrete outcome space (derived here, checked by
enumeration of n-tuples) is

    pi_{n,lambda}(y) = n pi_ref(y) E_{y_2..y_n ~ pi_ref}[ w(y) / (w(y) + sum_{j>=2} w(y_j)) ],
    w(y) = exp(r(y) / lambda),

`soft_bon_distribution`: n = 1 (or lambda -> inf) gives pi_ref, lambda -> 0+ gives Best-of-N
with ties shared uniformly (the law of the draw-index rule above), and n -> inf gives the tilted
law `pi_ref exp(r / lambda) / Z` (`tilted_distribution`), the optimum of
``E r - lambda KL(. || pi_ref)``.

Provenance of soft Best-of-n (checked with the search tool): the rule (n i.i.d. draws, one kept
with probability proportional to ``exp(r / lambda)``, temperature lambda) and the claimed O(1/n)
convergence to the tilted law in KL and relative reward are confirmed from the paper's abstract
(arXiv 2505.03156; v1, 6 May 2025, is the only version the stored copies show). Unconfirmed:
the paper's equation and section numbers (its body was not readable) and whether it writes the
law above: here it is derived and checked by enumeration.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from scipy import integrate

from bonjax.checks import check_int, check_positive
from bonjax.ecdf import order_keys

__all__ = [
    "BestOfN",
    "SoftBestOfN",
    "best_of_n",
    "bon_distribution_draw_index",
    "bon_distribution_fixed_order",
    "bon_kl",
    "bon_win_rate",
    "select_best_and_worst",
    "select_soft",
    "soft_best_of_n",
    "soft_bon_distribution",
    "take_selected",
    "tilted_distribution",
]


def _check_rewards_BxN(rewards_BxN) -> jax.Array:
    rewards_BxN = jnp.asarray(rewards_BxN)
    if rewards_BxN.ndim != 2:
        raise ValueError(f"rewards must have shape [B, N], got shape {rewards_BxN.shape}")
    if rewards_BxN.shape[0] == 0:
        raise ValueError(f"rewards have an empty batch: B = 0 (shape {rewards_BxN.shape})")
    if rewards_BxN.shape[1] < 1:
        raise ValueError(f"Best-of-N needs N >= 1 completions, got N = {rewards_BxN.shape[1]}")
    if not jnp.issubdtype(rewards_BxN.dtype, jnp.floating):
        raise ValueError(f"rewards must have a floating dtype, got {rewards_BxN.dtype}")
    return rewards_BxN


@jax.jit
def _best_and_worst(rewards_BxN: jax.Array) -> tuple[jax.Array, jax.Array]:
    keys_BxN = order_keys(rewards_BxN)
    # argmax/argmin return the first occurrence: the lowest draw index among ties.
    best_B = jnp.argmax(keys_BxN, axis=1).astype(jnp.int32)
    worst_B = jnp.argmin(keys_BxN, axis=1).astype(jnp.int32)
    return best_B, worst_B


def select_best_and_worst(rewards_BxN: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Indices (int32 [B], [B]) of the best and the worst of N completions of every prompt.

    Ties: the lowest draw index wins, for both. Non-finite rewards: NaN ranks lowest, +/-inf
    are ordered values (see the module docstring). jit- and shard-compatible.

    Raises:
      ValueError: if `rewards_BxN` is not 2-D, has B = 0 or N < 1, or is not floating point.
    """
    return _best_and_worst(_check_rewards_BxN(rewards_BxN))


def take_selected(values_BxNx: jax.Array, index_B: jax.Array) -> jax.Array:
    """`values_BxNx[b, index_B[b]]` for every prompt b: the chosen completions, shape [B, ...].

    Works for any trailing shape (tokens `[B, N, T]`, log-probabilities `[B, N, T]`, rewards
    `[B, N]`).

    Raises:
      ValueError: if `values_BxNx` has fewer than 2 axes, `index_B` is not 1-D, or their B differ.
    """
    values_BxNx = jnp.asarray(values_BxNx)
    index_B = jnp.asarray(index_B)
    if values_BxNx.ndim < 2:
        raise ValueError(f"values must have shape [B, N, ...], got shape {values_BxNx.shape}")
    if index_B.ndim != 1 or index_B.shape[0] != values_BxNx.shape[0]:
        raise ValueError(
            f"index must have shape [B] = [{values_BxNx.shape[0]}], got shape {index_B.shape}"
        )
    if not jnp.issubdtype(index_B.dtype, jnp.integer):
        raise ValueError(f"index must be an integer array, got dtype {index_B.dtype}")
    return jax.vmap(lambda values_Nx, index: values_Nx[index])(values_BxNx, index_B)


def _check_n(n) -> int:
    return check_int("N", n)


def _check_outcomes(pi_ref_Y, reward_Y) -> tuple[np.ndarray, np.ndarray]:
    pi_ref_Y = np.asarray(pi_ref_Y, np.float64)
    reward_Y = np.asarray(reward_Y, np.float64)
    if pi_ref_Y.ndim != 1 or pi_ref_Y.shape != reward_Y.shape or pi_ref_Y.size == 0:
        raise ValueError(
            f"pi_ref and reward must be 1-D over the same non-empty outcome space, got shapes "
            f"{pi_ref_Y.shape} and {reward_Y.shape}"
        )
    if not np.isfinite(pi_ref_Y).all() or (pi_ref_Y < 0).any():
        raise ValueError(f"pi_ref must be finite and non-negative, got {pi_ref_Y}")
    if abs(pi_ref_Y.sum() - 1.0) > 1e-9:
        raise ValueError(f"pi_ref must sum to 1, sums to {float(pi_ref_Y.sum())!r}")
    return pi_ref_Y, reward_Y


def _below_YxY(reward_Y: np.ndarray) -> np.ndarray:
    """`below[i, j]`: outcome j's reward is strictly below outcome i's (NaN lowest, NaNs tie)."""
    nan_Y = np.isnan(reward_Y)
    with np.errstate(invalid="ignore"):
        less = reward_Y[None, :] < reward_Y[:, None]
    return less | (nan_Y[None, :] & ~nan_Y[:, None])


def bon_distribution_draw_index(pi_ref_Y, reward_Y, n: int) -> np.ndarray:
    """Exact BoN distribution when ties go to the lowest draw index (rule (a); BOND Thm. 1).

        pi_BoN(y) = pi_ref(y) / pi_ref(G) * (p_le(y)^N - p_lt(y)^N)

    This is the distribution of the completion `select_best_and_worst` picks as best.

    Args:
      pi_ref_Y: reference probabilities of the Y outcomes (sum to 1).
      reward_Y: their rewards (ties allowed; NaN ranks lowest).
      n: N >= 1.

    Returns:
      float64 [Y], the probability that Best-of-N returns each outcome.
    """
    n = _check_n(n)
    pi_ref_Y, reward_Y = _check_outcomes(pi_ref_Y, reward_Y)
    below_YxY = _below_YxY(reward_Y)
    p_lt_Y = below_YxY @ pi_ref_Y
    p_le_Y = (~below_YxY.T) @ pi_ref_Y  # j not above i
    mass_of_group_Y = p_le_Y - p_lt_Y
    share_Y = np.divide(pi_ref_Y, mass_of_group_Y, out=np.zeros_like(pi_ref_Y), where=pi_ref_Y > 0)
    return share_Y * (p_le_Y**n - p_lt_Y**n)


def bon_distribution_fixed_order(pi_ref_Y, reward_Y, n: int) -> np.ndarray:
    """Exact BoN distribution when ties go to a fixed order on outcomes (rule (b)).

        pi_BoN(y) = (F(y) + pi_ref(y))^N - F(y)^N

    with `F(y)` the reference mass strictly below y in the order "higher reward first, then
    lower outcome index first" (among outcomes with equal rewards, the lower index wins).

    Args and returns as `bon_distribution_draw_index`.
    """
    n = _check_n(n)
    pi_ref_Y, reward_Y = _check_outcomes(pi_ref_Y, reward_Y)
    below_YxY = _below_YxY(reward_Y)
    tied_YxY = ~below_YxY & ~below_YxY.T
    index_Y = np.arange(reward_Y.size)
    below_YxY = below_YxY | (tied_YxY & (index_Y[None, :] > index_Y[:, None]))
    f_Y = below_YxY @ pi_ref_Y
    return (f_Y + pi_ref_Y) ** n - f_Y**n


def _check_n_curve(n) -> np.ndarray:
    n = np.asarray(n, np.float64)
    bad = ~np.isfinite(n) | (n < 1)
    if bad.any():
        raise ValueError(f"N must be finite and >= 1, got {n[bad] if n.ndim else n}")
    return n


def bon_kl(n) -> np.ndarray:
    """`KL(pi_BoN || pi_ref) = log N - (N - 1) / N` for continuous rewards (an upper bound with
    ties; Beirami et al. 2024). Elementwise over an array of N, float64."""
    n = _check_n_curve(n)
    return np.log(n) - (n - 1) / n


def bon_win_rate(n) -> np.ndarray:
    """Win rate `N / (N + 1)` of Best-of-N against one pi_ref sample, continuous rewards.
    Elementwise over an array of N, float64."""
    n = _check_n_curve(n)
    return n / (n + 1)


@struct.dataclass
class BestOfN:
    """The outcome of Best-of-N sampling for B prompts.

    Attributes:
      tokens_BxT, mask_BxT: the best completion of each prompt and its completion mask.
      worst_tokens_BxT, worst_mask_BxT: the worst completion (BoNBoN's pair).
      best_B, worst_B: their draw indices in ``0..N-1`` (ties: the lowest index).
      rewards_BxN: the rewards of all N completions.
      samples: the sampler's full result (``tokens_BxNxT``, ``logp_BxNxT``, ``mask_BxNxT``).
    """

    tokens_BxT: jax.Array
    mask_BxT: jax.Array
    worst_tokens_BxT: jax.Array
    worst_mask_BxT: jax.Array
    best_B: jax.Array
    worst_B: jax.Array
    rewards_BxN: jax.Array
    samples: object


def best_of_n(sampler, params, prompt_tokens_BxP, prompt_mask_BxP, key, n: int,
              reward) -> BestOfN:
    """Samples ``n`` completions per prompt, scores them and keeps the best and the worst.

    ``sampler`` is a :class:`bonjax.sampling.Sampler`; ``reward(prompt_tokens, prompt_mask,
    tokens_BxNxT, mask_BxNxT) -> [B, N]`` (see :mod:`bonjax.rewards`). Selection follows
    :func:`select_best_and_worst`.
    """
    _check_n(n)
    samples = sampler.sample(params, prompt_tokens_BxP, prompt_mask_BxP, key, n)
    rewards_BxN = jnp.asarray(reward(prompt_tokens_BxP, prompt_mask_BxP, samples.tokens_BxNxT,
                                     samples.mask_BxNxT))
    best_B, worst_B = select_best_and_worst(rewards_BxN)
    return BestOfN(
        tokens_BxT=take_selected(samples.tokens_BxNxT, best_B),
        mask_BxT=take_selected(samples.mask_BxNxT, best_B),
        worst_tokens_BxT=take_selected(samples.tokens_BxNxT, worst_B),
        worst_mask_BxT=take_selected(samples.mask_BxNxT, worst_B),
        best_B=best_B, worst_B=worst_B, rewards_BxN=rewards_BxN, samples=samples)


# ---------------------------------------------------------------------------------------------
# Soft Best-of-n (arXiv 2505.03156; equation numbers unconfirmed, see the module docstring)


def _check_lambda(lam) -> float:
    check_positive("lambda", lam)
    return float(lam)


@jax.jit
def _soft_choice(rewards_BxN: jax.Array, key: jax.Array, lam: jax.Array) -> jax.Array:
    best_B, _ = _best_and_worst(rewards_BxN)
    finite_BxN = jnp.isfinite(rewards_BxN)
    # Shift by the largest finite reward before dividing: the best draw's logit is exactly 0,
    # so a tiny lambda cannot overflow, only underflow the others to -inf (their limit).
    top_B = jnp.max(jnp.where(finite_BxN, rewards_BxN, -jnp.inf), axis=1)
    logits_BxN = jnp.where(finite_BxN, (rewards_BxN - top_B[:, None]) / lam, -jnp.inf)
    # +inf rewards: the limit of equal, growing rewards shares the draw uniformly among them.
    pos_inf_BxN = rewards_BxN == jnp.inf
    logits_BxN = jnp.where(pos_inf_BxN.any(1, keepdims=True),
                           jnp.where(pos_inf_BxN, 0.0, -jnp.inf), logits_BxN)
    gumbel_BxN = jax.random.gumbel(key, rewards_BxN.shape, jnp.float32)
    chosen_B = jnp.argmax(logits_BxN + gumbel_BxN, axis=1).astype(jnp.int32)
    # NaN and -inf get weight 0; where every draw has weight 0, the hard rule decides.
    no_weight_B = jnp.all(logits_BxN == -jnp.inf, axis=1)
    return jnp.where(no_weight_B, best_B, chosen_B)


def select_soft(rewards_BxN: jax.Array, key: jax.Array, lam: float) -> jax.Array:
    """Soft Best-of-n choice (int32 [B]): draw i with probability ``softmax(r / lambda)_i``.

    Gumbel-max over ``r / lambda`` (shifted by the row's largest finite reward, so that
    ``lambda = 1e-3`` cannot overflow). Non-finite rewards follow the module's order as limits:
    NaN and -inf get probability 0; +inf rewards share the probability uniformly; a row whose
    draws all have probability 0 (only NaN and -inf) falls back to :func:`select_best_and_worst`.

    Raises:
      ValueError: on ``lambda`` that is not finite and > 0, and as `select_best_and_worst`.
    """
    lam = _check_lambda(lam)
    rewards_BxN = _check_rewards_BxN(rewards_BxN)
    return _soft_choice(rewards_BxN, key, jnp.asarray(lam, rewards_BxN.dtype))


def tilted_distribution(pi_ref_Y, reward_Y, lam: float) -> np.ndarray:
    """``pi_ref exp(r / lambda) / Z`` over a discrete outcome space (float64, finite rewards):
    the maximiser of ``E_pi r - lambda KL(pi || pi_ref)`` and the n -> inf limit of soft BoN."""
    lam = _check_lambda(lam)
    pi_ref_Y, reward_Y = _check_finite_outcomes(pi_ref_Y, reward_Y)
    logits_Y = np.where(pi_ref_Y > 0, reward_Y / lam, -np.inf)
    weight_Y = pi_ref_Y * np.exp(logits_Y - logits_Y.max())
    return weight_Y / weight_Y.sum()


def _check_finite_outcomes(pi_ref_Y, reward_Y) -> tuple[np.ndarray, np.ndarray]:
    pi_ref_Y, reward_Y = _check_outcomes(pi_ref_Y, reward_Y)
    if not np.isfinite(reward_Y).all():
        raise ValueError(f"rewards must be finite here, got {reward_Y}")
    return pi_ref_Y, reward_Y


def soft_bon_distribution(pi_ref_Y, reward_Y, n: int, lam: float) -> np.ndarray:
    """Exact law of soft Best-of-n over a discrete outcome space (finite rewards), float64.

    With ``1 / (a + S) = int_0^inf exp(-t (a + S)) dt`` and the n - 1 other draws i.i.d.,

        pi_{n,lambda}(y) = n pi_ref(y) int_0^inf e^{-t} M_y(t)^(n-1) dt,
        M_y(t) = sum_z pi_ref(z) exp(-t exp((r(z) - r(y)) / lambda)),

    one adaptive quadrature (``scipy.integrate.quad_vec``, absolute error below 1e-13) for all
    outcomes. Weights are relative to ``w(y)``, so a tiny ``lambda`` underflows only the
    negligible terms.
    """
    n = _check_n(n)
    lam = _check_lambda(lam)
    pi_ref_Y, reward_Y = _check_finite_outcomes(pi_ref_Y, reward_Y)
    if n == 1:
        return pi_ref_Y.copy()
    with np.errstate(over="ignore"):
        relative_YxZ = np.exp((reward_Y[None, :] - reward_Y[:, None]) / lam)

    def integrand(t):
        with np.errstate(over="ignore"):
            m_Y = np.exp(-t * relative_YxZ) @ pi_ref_Y
        return np.exp(-t) * m_Y ** (n - 1)

    integral_Y, _ = integrate.quad_vec(integrand, 0.0, np.inf, epsabs=1e-14, epsrel=1e-12)
    return n * pi_ref_Y * integral_Y


@struct.dataclass
class SoftBestOfN:
    """The outcome of soft Best-of-n sampling for B prompts.

    Attributes:
      tokens_BxT, mask_BxT: the chosen completion of each prompt and its completion mask.
      chosen_B: its draw index in ``0..n-1``.
      rewards_BxN: the rewards of all n completions.
      samples: the sampler's full result (``tokens_BxNxT``, ``logp_BxNxT``, ``mask_BxNxT``).
    """

    tokens_BxT: jax.Array
    mask_BxT: jax.Array
    chosen_B: jax.Array
    rewards_BxN: jax.Array
    samples: object


def soft_best_of_n(sampler, params, prompt_tokens_BxP, prompt_mask_BxP, key, n: int, reward,
                   lam: float) -> SoftBestOfN:
    """Samples ``n`` completions per prompt, scores them and keeps one by :func:`select_soft`.

    As :func:`best_of_n`; ``lam`` is the temperature lambda of the choice (> 0; lambda -> 0 is
    Best-of-N, lambda -> inf one plain sample).
    """
    _check_n(n)
    _check_lambda(lam)
    key_sample, key_choice = jax.random.split(key)
    samples = sampler.sample(params, prompt_tokens_BxP, prompt_mask_BxP, key_sample, n)
    rewards_BxN = jnp.asarray(reward(prompt_tokens_BxP, prompt_mask_BxP, samples.tokens_BxNxT,
                                     samples.mask_BxNxT))
    chosen_B = select_soft(rewards_BxN, key_choice, lam)
    return SoftBestOfN(tokens_BxT=take_selected(samples.tokens_BxNxT, chosen_B),
                       mask_BxT=take_selected(samples.mask_BxNxT, chosen_B),
                       chosen_B=chosen_B, rewards_BxN=rewards_BxN, samples=samples)
