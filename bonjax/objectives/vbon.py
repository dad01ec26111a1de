"""vBoN: variational Best-of-N alignment (Amini, Vieira, Ash, Cotterell; arXiv 2407.06057).

Fine-tune ``pi_theta`` to minimise the backward KL to the Best-of-N distribution,

    KL(pi_theta || pi_BoN),   pi_BoN(y) = sum_{i=1..N} C(N,i) F(y)^(N-i) pi_ref(y)^i,

with ``F(y)`` the reference mass strictly below ``y`` (rewards ordered, ties broken by a fixed
order). Keeping only the ``i = 1`` term gives the lower bound

    log pi_BoN(y) >= log N + (N-1) log F(y) + log pi_ref(y),

so ``KL(pi_theta || pi_BoN) <= (N-1) [ beta KL(pi_theta || pi_ref) - E_{pi_theta} log F ] - log N``
with ``beta = 1/(N-1)``: vBoN is KL-regularised RL with reward ``log F_hat(r(y))`` (an empirical
CDF of reference rewards, computed elsewhere) and KL coefficient ``1/(N-1)``. Its optimum is
``pi*(y) ∝ pi_ref(y) F(y)^(N-1)``.

The exact objective is the same RL problem with the reward

    R_exact(y) = (1/N) [ logsumexp_i( log C(N,i) + (N-i) log F(y) + i log pi_ref(y) )
                         - log pi_ref(y) ] = (1/N) log( pi_BoN(y) / pi_ref(y) )

and KL coefficient ``1/N``: ``KL(pi_theta || pi_BoN) = N [ (1/N) KL(pi_theta || pi_ref) -
E R_exact ]``, whose optimum is ``pi_BoN`` itself. ``log pi_ref(y)`` is the sequence sum of the
reference log-probs.

N = 1. BoN of one sample is ``pi_ref``: the lower-bound coefficient ``1/(N-1)`` is infinite and
the objective divided by it is ``-KL(pi_theta || pi_ref)``, maximised at ``pi_theta = pi_ref``.
bonjax represents that limit as reward weight 0 and KL coefficient 1 (see
:attr:`VBoNConfig.reward_weight`); the exact variant gives the same objective (``R_exact = 0``,
coefficient 1).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from bonjax.checks import check_int
from bonjax.objectives._logprob import as_float, check_inputs, masked_sum

__all__ = ["VBoNConfig", "vbon_exact_reward", "vbon_reward"]


def check_bon_n(name: str, n: int, minimum: int = 1) -> None:
    """Raise ``ValueError`` unless ``n`` is an integer ``>= minimum``."""
    check_int(name, n, minimum=minimum)


@dataclasses.dataclass(frozen=True)
class VBoNConfig:
    """Configuration of the vBoN objective.

    Attributes:
      n: N, the number of samples of the Best-of-N distribution to match (>= 1).
      exact: False for the lower-bound reward ``log F_hat`` with ``beta = 1/(N-1)`` (the paper's
        main method); True for the exact reward ``R_exact`` with ``beta = 1/N``.
    """

    n: int = 8
    exact: bool = False

    def __post_init__(self):
        check_bon_n("VBoNConfig.n", self.n)

    @property
    def beta(self) -> float:
        """The paper's KL coefficient: ``1/(N-1)`` (``inf`` at N = 1), or ``1/N`` if exact."""
        if self.exact:
            return 1.0 / self.n
        return math.inf if self.n == 1 else 1.0 / (self.n - 1)

    @property
    def kl_coef(self) -> float:
        """The finite KL coefficient used in returns: ``beta``, or 1 when ``beta`` is infinite."""
        return 1.0 if math.isinf(self.beta) else self.beta

    @property
    def reward_weight(self) -> float:
        """The weight of the reward in returns: 1, or 0 when ``beta`` is infinite (N = 1)."""
        return 0.0 if math.isinf(self.beta) else 1.0


def vbon_exact_reward(log_F_B: jax.Array, log_pi_ref_B: jax.Array, n: int) -> jax.Array:
    """The exact vBoN reward, ``(1/N) log(pi_BoN(y) / pi_ref(y))``:

        R_exact = (1/N) [ logsumexp_{i=1..N}( log C(N,i) + (N-i) log F + i log pi_ref )
                          - log pi_ref ]

    ``log_F_B`` may be ``-inf`` (nothing below ``y``): the ``i = N`` term stays finite.
    ``log_pi_ref_B`` is the sequence log-probability under ``pi_ref``. Shape of ``log_F_B``.
    """
    check_bon_n("n", n)
    if jnp.shape(log_F_B) != jnp.shape(log_pi_ref_B):
        raise ValueError(
            f"log_F_B {jnp.shape(log_F_B)} and log_pi_ref_B {jnp.shape(log_pi_ref_B)} must match"
        )
    i_N = np.arange(1, n + 1)
    log_binom_N = np.array(
        [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in i_N]
    )
    log_F_BxN = as_float(log_F_B)[..., None]
    log_pi_ref_BxN = as_float(log_pi_ref_B)[..., None]
    dtype = jnp.promote_types(log_F_BxN.dtype, log_pi_ref_BxN.dtype)
    i_N, log_binom_N = jnp.asarray(i_N, dtype), jnp.asarray(log_binom_N, dtype)
    below_BxN = jnp.where(i_N < n, (n - i_N) * log_F_BxN, 0.0)
    terms_BxN = log_binom_N + below_BxN + i_N * log_pi_ref_BxN
    return (jax.nn.logsumexp(terms_BxN, axis=-1) - log_pi_ref_BxN[..., 0]) / n


def vbon_reward(
    log_F_B: jax.Array, logp_ref_BxT: jax.Array, mask_BxT: jax.Array, config: VBoNConfig
) -> jax.Array:
    """The vBoN sequence reward: ``log F_hat(r(y))`` (lower bound) or ``R_exact`` (exact).

    ``log_F_B`` is the log of the estimated reference CDF at the sample's reward; leading axes
    ``[B]`` or ``[B, K]`` match those of the per-token arrays.
    """
    check_inputs(
        {"logp_ref_BxT": logp_ref_BxT, "mask_BxT": mask_BxT},
        {"log_F_B": log_F_B},
        mask_name="mask_BxT",
    )
    if not config.exact:
        return as_float(log_F_B)
    log_pi_ref_B = masked_sum(logp_ref_BxT, mask_BxT)
    return vbon_exact_reward(log_F_B, log_pi_ref_B, config.n)
