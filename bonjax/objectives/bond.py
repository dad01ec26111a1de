"""BOND and J-BOND: Best-of-N distillation (Sessa et al., arXiv 2407.14622).

BOND minimises the Jeffreys divergence between the policy and the BoN distribution of an anchor
policy ``pi_a`` (``pi_ref`` at first),

    J_b(pi_theta, pi_BoN) = (1 - b) KL(pi_BoN || pi_theta) + b KL(pi_theta || pi_BoN),

``b`` in [0, 1] (the paper's beta). The forward part is SFT on BoN samples of the anchor,
``-log pi_theta(y_BoN)``. The backward part is policy gradient (here RLOO over K policy
samples per prompt) on the return ``log p_le_hat(y) - (1/(N-1)) sum_t (log pi_theta - log
pi_a)``, ``p_le_hat(y)`` the estimated anchor probability of a reward ``<= r(y)``: by the vBoN
lower bound this is ``KL(pi_theta || pi_BoN) / (N-1)`` up to a constant (reward ``log p_le_hat``
with KL coefficient ``1/(N-1)``, as the paper writes the backward term). N = 1 is handled as in
:class:`bonjax.objectives.VBoNConfig`.

J-BOND (n = 2): per prompt one policy sample ``y`` and two anchor samples ``y'_1, y'_2``. The
forward term is SFT on the better anchor sample; the backward term is REINFORCE with the reward

    r_J-BOND(y) = -log 16   if r(y) < min(r(y'_1), r(y'_2)),   else 0

and KL coefficient ``1/(n-1) = 1`` towards the anchor. Ties count as not worse (the condition
is strict).

Iterative BOND. The anchor moves: ``theta_a <- (1 - eta) theta_a + eta theta`` (:func:`ema_update`).
Distilling BoN_n of the anchor and then moving the anchor to the result, M times, targets
BoN_n applied M times to ``pi_ref``, which is BoN_{n^M} of ``pi_ref`` exactly for continuous
rewards (the reward CDF of BoN_n is ``Q^n``) and with ties broken by a fixed order (tested in
``tests/test_objectives_bon.py``).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from bonjax.checks import check_unit_interval
from bonjax.objectives._logprob import as_float, check_inputs, sft_loss
from bonjax.objectives.kl_rl import kl_regularised_return, reinforce_loss, rloo_loss
from bonjax.objectives.preference import best_worst_pair
from bonjax.objectives.vbon import VBoNConfig, check_bon_n

__all__ = [
    "BONDConfig",
    "JBONDConfig",
    "JBOND_PENALTY",
    "bond_backward_return",
    "bond_loss",
    "jbond_reward",
    "jbond_loss",
    "ema_update",
]

JBOND_PENALTY = -math.log(16.0)
"""The J-BOND reward of a policy sample worse than both anchor samples."""


@dataclasses.dataclass(frozen=True)
class BONDConfig:
    """Configuration of BOND.

    Attributes:
      n: N of the anchor's Best-of-N distribution to distil (>= 1).
      jeffreys_b: weight ``b`` of the backward KL in the Jeffreys divergence, in [0, 1].
    """

    n: int = 4
    jeffreys_b: float = 0.5

    def __post_init__(self):
        check_bon_n("BONDConfig.n", self.n)
        check_unit_interval("BONDConfig.jeffreys_b", self.jeffreys_b)

    @property
    def kl_coef(self) -> float:
        """KL coefficient of the backward return: ``1/(N-1)``, or 1 at N = 1."""
        return VBoNConfig(self.n).kl_coef

    @property
    def reward_weight(self) -> float:
        """Weight of ``log p_le_hat`` in the backward return: 1, or 0 at N = 1."""
        return VBoNConfig(self.n).reward_weight


@dataclasses.dataclass(frozen=True)
class JBONDConfig:
    """Configuration of J-BOND (n = 2 anchor samples per prompt).

    Attributes:
      jeffreys_b: weight ``b`` of the backward KL, in [0, 1].
      anchor_eta: the EMA rate ``eta`` of the anchor, in [0, 1] (for :func:`ema_update`).
    """

    jeffreys_b: float = 0.5
    anchor_eta: float = 0.02

    def __post_init__(self):
        check_unit_interval("JBONDConfig.jeffreys_b", self.jeffreys_b)
        check_unit_interval("JBONDConfig.anchor_eta", self.anchor_eta)

    @property
    def kl_coef(self) -> float:
        """KL coefficient of the backward term, ``1/(n-1) = 1``."""
        return 1.0


def bond_backward_return(
    log_p_le_BxK: jax.Array,
    logp_BxKxT: jax.Array,
    logp_anchor_BxKxT: jax.Array,
    mask_BxKxT: jax.Array,
    config: BONDConfig,
) -> jax.Array:
    """Backward-KL return ``log p_le_hat(y) - (1/(N-1)) sum_t (log pi_theta - log pi_a)``."""
    return kl_regularised_return(
        log_p_le_BxK,
        logp_BxKxT,
        logp_anchor_BxKxT,
        mask_BxKxT,
        kl_coef=config.kl_coef,
        reward_weight=config.reward_weight,
    )


def bond_loss(
    logp_bon_BxT: jax.Array,
    mask_bon_BxT: jax.Array,
    logp_BxKxT: jax.Array,
    logp_anchor_BxKxT: jax.Array,
    mask_BxKxT: jax.Array,
    log_p_le_BxK: jax.Array,
    config: BONDConfig,
) -> jax.Array:
    """Per-prompt BOND loss ``(1 - b) L_forward + b L_backward``, shape ``[B]``.

    Args:
      logp_bon_BxT, mask_bon_BxT: the policy's log-probs of a BoN_N sample of the anchor
        (forward term ``-log pi_theta(y_BoN)``).
      logp_BxKxT, logp_anchor_BxKxT, mask_BxKxT: policy and anchor log-probs of K >= 2 policy
        samples per prompt.
      log_p_le_BxK: ``log p_le_hat(r(y))`` of those samples against anchor rewards.
      config: N and ``b``.

    The gradient of the backward term is the RLOO estimate of ``-grad`` of
    ``E[log p_le_hat] - (1/(N-1)) KL(pi_theta || pi_a)``.
    """
    check_inputs({"logp_bon_BxT": logp_bon_BxT, "mask_bon_BxT": mask_bon_BxT}, sequence_ndim=1)
    if jnp.shape(logp_bon_BxT)[0] != jnp.shape(logp_BxKxT)[0]:
        raise ValueError(
            f"logp_bon_BxT {jnp.shape(logp_bon_BxT)} and logp_BxKxT {jnp.shape(logp_BxKxT)} "
            "must have the same batch size"
        )
    forward_B = sft_loss(logp_bon_BxT, mask_bon_BxT)
    return_BxK = bond_backward_return(
        log_p_le_BxK, logp_BxKxT, logp_anchor_BxKxT, mask_BxKxT, config
    )
    backward_B = rloo_loss(logp_BxKxT, mask_BxKxT, return_BxK)
    return (1.0 - config.jeffreys_b) * forward_B + config.jeffreys_b * backward_B


def jbond_reward(reward_B: jax.Array, anchor_reward_Bx2: jax.Array) -> jax.Array:
    """``r_J-BOND(y) = -log 16`` if ``r(y) < min(r(y'_1), r(y'_2))``, else 0. Shape ``[B]``."""
    reward_B = jnp.asarray(reward_B)
    anchor_reward_Bx2 = jnp.asarray(anchor_reward_Bx2)
    if anchor_reward_Bx2.shape != reward_B.shape + (2,) or reward_B.ndim != 1:
        raise ValueError(
            f"anchor_reward_Bx2 {anchor_reward_Bx2.shape} must be [B, 2] with reward_B "
            f"{reward_B.shape} of shape [B]"
        )
    worse_B = reward_B < anchor_reward_Bx2.min(axis=1)
    return jnp.where(worse_B, JBOND_PENALTY, 0.0).astype(as_float(reward_B).dtype)


def jbond_loss(
    logp_of_anchor_samples_Bx2xT: jax.Array,
    mask_anchor_samples_Bx2xT: jax.Array,
    anchor_reward_Bx2: jax.Array,
    logp_BxT: jax.Array,
    logp_anchor_BxT: jax.Array,
    mask_BxT: jax.Array,
    reward_B: jax.Array,
    config: JBONDConfig,
    baseline_B: jax.Array | None = None,
) -> jax.Array:
    """Per-prompt J-BOND loss ``(1 - b) L_forward + b L_backward``, shape ``[B]``.

    Args:
      logp_of_anchor_samples_Bx2xT, mask_anchor_samples_Bx2xT: the policy's log-probs of the two
        anchor samples; the forward term is ``-log pi_theta`` of the better one (ties: the first).
      anchor_reward_Bx2: rewards of the anchor samples.
      logp_BxT, logp_anchor_BxT, mask_BxT: policy and anchor log-probs of the policy sample.
      reward_B: reward of the policy sample.
      config: ``b``.
      baseline_B: optional baseline subtracted from the backward return (not differentiated).

    Backward term: REINFORCE on ``r_J-BOND(y) - sum_t (log pi_theta - log pi_a)``.
    """
    check_inputs(
        {
            "logp_of_anchor_samples_Bx2xT": logp_of_anchor_samples_Bx2xT,
            "mask_anchor_samples_Bx2xT": mask_anchor_samples_Bx2xT,
        },
        {"anchor_reward_Bx2": anchor_reward_Bx2},
        mask_name="mask_anchor_samples_Bx2xT",
        sequence_ndim=2,
    )
    if jnp.shape(anchor_reward_Bx2)[1] != 2:
        raise ValueError(
            f"J-BOND takes 2 anchor samples, got anchor_reward_Bx2 {jnp.shape(anchor_reward_Bx2)}"
        )
    better_logp_BxT = best_worst_pair(logp_of_anchor_samples_Bx2xT, anchor_reward_Bx2)[:, 0]
    better_mask_BxT = best_worst_pair(mask_anchor_samples_Bx2xT, anchor_reward_Bx2)[:, 0]
    forward_B = sft_loss(better_logp_BxT, better_mask_BxT)
    return_B = kl_regularised_return(
        jbond_reward(reward_B, anchor_reward_Bx2),
        logp_BxT,
        logp_anchor_BxT,
        mask_BxT,
        kl_coef=config.kl_coef,
    )
    if baseline_B is not None:
        if jnp.shape(baseline_B) != jnp.shape(return_B):
            raise ValueError(
                f"baseline_B {jnp.shape(baseline_B)} must have shape {jnp.shape(return_B)}"
            )
        return_B = return_B - as_float(baseline_B)
    backward_B = reinforce_loss(logp_BxT, mask_BxT, return_B)
    return (1.0 - config.jeffreys_b) * forward_B + config.jeffreys_b * backward_B


def ema_update(anchor, params, eta: float):
    """``theta_a <- (1 - eta) theta_a + eta theta`` leaf by leaf; leaves keep the anchor's dtype.

    ``anchor`` and ``params`` are pytrees of one structure and shapes; ``eta`` in [0, 1] (a
    traced ``eta`` is not checked). The update is computed in float32 or wider.
    """
    check_unit_interval("eta", eta)
    anchor_def = jax.tree.structure(anchor)
    params_def = jax.tree.structure(params)
    if anchor_def != params_def:
        raise ValueError(f"anchor and params differ in structure: {anchor_def} vs {params_def}")
    for a, p in zip(jax.tree.leaves(anchor), jax.tree.leaves(params), strict=True):
        if jnp.shape(a) != jnp.shape(p):
            raise ValueError(f"anchor leaf {jnp.shape(a)} and params leaf {jnp.shape(p)} differ")

    def update(a, p):
        mixed = (1.0 - eta) * as_float(a) + eta * as_float(p)
        return mixed.astype(jnp.result_type(a))

    return jax.tree.map(update, anchor, params)
