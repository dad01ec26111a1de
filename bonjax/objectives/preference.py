"""Pairwise preference objectives on best-vs-worst pairs: DPO and IPO.

A pair is stacked on axis 1 of every per-token array, ``x_Bx2xT``: index 0 is the preferred
completion ``y_w`` (in bonjax the best of n samples, ``y_(n)``), index 1 the other one ``y_l``
(the worst, ``y_(1)``). The margin is the difference of sequence-summed log-ratios

    h = log[pi_theta(y_w|x) / pi_ref(y_w|x)] - log[pi_theta(y_l|x) / pi_ref(y_l|x)].

DPO (Rafailov et al., arXiv 2305.18290):  L = -log sigmoid(beta h).
IPO (Azar et al., arXiv 2310.12036):      L = (h - 1/(2 beta))^2.

Length-normalised variants (``DPOConfig(length_normalised=True)``, the same for IPO) divide
each completion's log-ratio by its length ``|y|``, the number of completion tokens (EOS
included):

    h_norm = log[pi_theta(y_w|x) / pi_ref(y_w|x)] / |y_w|
           - log[pi_theta(y_l|x) / pi_ref(y_l|x)] / |y_l|,

the per-token mean log-ratio, as in the length-normalised DPO of Tulu 3 (Lambert et al., arXiv
2411.15124). With every completion of length L it is ``h / L``, so ``beta`` means ``beta / L``
of the sequence-sum loss; the default is the sequence sum of the papers. BoNBoN keeps the
sequence sum: ``beta*_n`` is derived for it (:mod:`bonjax.objectives.bonbon`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from bonjax.bon import select_best_and_worst
from bonjax.checks import check_positive
from bonjax.objectives._logprob import as_float, as_mask, check_inputs, masked_sum

__all__ = [
    "DPOConfig",
    "IPOConfig",
    "best_worst_pair",
    "log_ratio_margin",
    "dpo_loss",
    "ipo_loss",
    "ipo_loss_from_margin",
]


def _check_length_normalised(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    """DPO hyperparameters.

    Attributes:
      beta: inverse temperature of the implicit reward (> 0).
      length_normalised: divide each completion's log-ratio by its length (the margin
        ``h_norm`` of the module docstring); False (default): the sequence sum ``h``.
    """

    beta: float = 0.1
    length_normalised: bool = False

    def __post_init__(self):
        check_positive("DPOConfig.beta", self.beta)
        _check_length_normalised("DPOConfig.length_normalised", self.length_normalised)


@dataclasses.dataclass(frozen=True)
class IPOConfig:
    """IPO hyperparameters.

    Attributes:
      beta: the regularisation, target margin ``1/(2 beta)`` (> 0).
      length_normalised: divide each completion's log-ratio by its length (the margin
        ``h_norm`` of the module docstring); False (default): the sequence sum ``h``.
    """

    beta: float = 0.1
    length_normalised: bool = False

    def __post_init__(self):
        check_positive("IPOConfig.beta", self.beta)
        _check_length_normalised("IPOConfig.length_normalised", self.length_normalised)


def best_worst_pair(x_BxNx: jax.Array, reward_BxN: jax.Array) -> jax.Array:
    """Stack the best and the worst of N samples per prompt: ``x_Bx2x...``, best first.

    ``x_BxNx`` has the samples on axis 1 (e.g. ``logp_BxNxT``). The selection is
    :func:`bonjax.bon.select_best_and_worst`, the library's one rule: NaN ranks below every
    reward (never best unless all are NaN, always worst), and among equal rewards the lowest
    sample index is chosen, for the best and for the worst alike (so if all rewards tie, both
    entries are sample 0 and the pair carries no preference).
    """
    reward_BxN = jnp.asarray(reward_BxN)
    if reward_BxN.ndim != 2 or jnp.shape(x_BxNx)[:2] != reward_BxN.shape:
        raise ValueError(
            f"reward_BxN {reward_BxN.shape} must be [B, N] and match the first two axes of "
            f"x_BxNx {jnp.shape(x_BxNx)}"
        )
    best_B, worst_B = select_best_and_worst(as_float(reward_BxN))
    idx_Bx2 = jnp.stack([best_B, worst_B], axis=1)
    idx_Bx2x = idx_Bx2.reshape(idx_Bx2.shape + (1,) * (jnp.ndim(x_BxNx) - 2))
    return jnp.take_along_axis(jnp.asarray(x_BxNx), idx_Bx2x, axis=1)


def _check_pair(logp_Bx2xT, logp_ref_Bx2xT, mask_Bx2xT):
    check_inputs(
        {"logp_Bx2xT": logp_Bx2xT, "logp_ref_Bx2xT": logp_ref_Bx2xT, "mask_Bx2xT": mask_Bx2xT},
        mask_name="mask_Bx2xT",
        sequence_ndim=2,
    )
    if jnp.shape(logp_Bx2xT)[1] != 2:
        raise ValueError(f"logp_Bx2xT must hold pairs on axis 1, got shape {jnp.shape(logp_Bx2xT)}")


def log_ratio_margin(
    logp_Bx2xT: jax.Array,
    logp_ref_Bx2xT: jax.Array,
    mask_Bx2xT: jax.Array,
    length_normalised: bool = False,
) -> jax.Array:
    """``h = log pi_theta/pi_ref (y_w) - log pi_theta/pi_ref (y_l)`` (sequence sums), ``[B]``.

    With ``length_normalised`` each log-ratio is divided by its completion's length first
    (``h_norm``; an empty completion, possible only under ``jit``, counts as length 1).
    """
    _check_pair(logp_Bx2xT, logp_ref_Bx2xT, mask_Bx2xT)
    log_ratio_Bx2 = masked_sum(logp_Bx2xT, mask_Bx2xT) - masked_sum(logp_ref_Bx2xT, mask_Bx2xT)
    if length_normalised:
        length_Bx2 = jnp.maximum(as_mask(mask_Bx2xT).sum(-1), 1).astype(log_ratio_Bx2.dtype)
        log_ratio_Bx2 = log_ratio_Bx2 / length_Bx2
    return log_ratio_Bx2[:, 0] - log_ratio_Bx2[:, 1]


def dpo_loss(
    logp_Bx2xT: jax.Array,
    logp_ref_Bx2xT: jax.Array,
    mask_Bx2xT: jax.Array,
    config: DPOConfig,
) -> jax.Array:
    """Per-pair DPO loss ``-log sigmoid(beta h)`` (Rafailov et al., arXiv 2305.18290, Eq. 7);
    ``h_norm`` in place of ``h`` when ``config.length_normalised``."""
    h_B = log_ratio_margin(logp_Bx2xT, logp_ref_Bx2xT, mask_Bx2xT, config.length_normalised)
    return jax.nn.softplus(-config.beta * h_B)


def ipo_loss_from_margin(h_B: jax.Array, beta: float) -> jax.Array:
    """The squared IPO loss ``(h - 1/(2 beta))^2`` of a log-ratio margin ``h``."""
    check_positive("beta", beta)
    return jnp.square(as_float(h_B) - 1.0 / (2.0 * beta))


def ipo_loss(
    logp_Bx2xT: jax.Array,
    logp_ref_Bx2xT: jax.Array,
    mask_Bx2xT: jax.Array,
    config: IPOConfig,
) -> jax.Array:
    """Per-pair IPO loss ``(h - 1/(2 beta))^2`` (Azar et al., arXiv 2310.12036); ``h_norm`` in
    place of ``h`` when ``config.length_normalised``."""
    h_B = log_ratio_margin(logp_Bx2xT, logp_ref_Bx2xT, mask_Bx2xT, config.length_normalised)
    return ipo_loss_from_margin(h_B, config.beta)
