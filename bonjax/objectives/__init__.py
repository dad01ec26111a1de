"""Alignment objectives as pure per-example functions of per-token log-probabilities.

Inputs are arrays, not models: the policy's per-token log-probs ``logp_BxT``, the reference's
``logp_ref_BxT``, a completion mask ``mask_BxT`` (EOS included, padding after it masked), rewards,
and for pairwise objectives best/worst pairs stacked as ``x_Bx2xT``. Sums over tokens run in
float32, outputs are per example (the caller averages), and objectives are chosen by typed
configs (``VBoNConfig``, ``BoNBoNConfig``, ``BONDConfig``, ...).

- :mod:`~bonjax.objectives.vbon`: vBoN (Amini et al., arXiv 2407.06057).
- :mod:`~bonjax.objectives.bonbon`: BoNBoN (Gui et al., arXiv 2406.00832).
- :mod:`~bonjax.objectives.bond`: BOND and J-BOND (Sessa et al., arXiv 2407.14622).
- :mod:`~bonjax.objectives.kl_rl`: KL-regularised RL, KL estimators, RLOO, PPO, GAE.
- :mod:`~bonjax.objectives.preference`: DPO and IPO (sequence-sum or length-normalised).
- :mod:`~bonjax.objectives.infalign`: InfAlign-CTRL (Balashankar et al., arXiv 2412.19792).
- :mod:`~bonjax.objectives.qrpo`: QRPO (Matrenok et al., arXiv 2507.08068).
- :mod:`~bonjax.objectives.max_at_k`: max@k / PKPO (Walder & Karkhanis, arXiv 2505.15201).
"""

from bonjax.objectives._logprob import (
    masked_sum,
    sequence_logprob,
    sft_loss,
    sft_token_mean_loss,
    token_logprobs,
)
from bonjax.objectives.bonbon import BoNBoNConfig, bonbon_beta, bonbon_loss
from bonjax.objectives.bond import (
    JBOND_PENALTY,
    BONDConfig,
    JBONDConfig,
    bond_backward_return,
    bond_loss,
    ema_update,
    jbond_loss,
    jbond_reward,
)
from bonjax.objectives.infalign import (
    CTRLConfig,
    Exponential,
    Identity,
    Logarithm,
    calibrated_reward,
    choose_exponent,
    ctrl_curves,
    ctrl_optimal_policy,
    exact_calibrated_reward,
)
from bonjax.objectives.kl_rl import (
    GAEResult,
    KLEstimator,
    KLRLConfig,
    gae,
    kl_k1,
    kl_k3,
    kl_regularised_return,
    per_token_rewards,
    policy_return,
    ppo_clipped_surrogate,
    reinforce_loss,
    rloo_advantages,
    rloo_loss,
)
from bonjax.objectives.max_at_k import (
    MaxAtKConfig,
    max_at_k_estimate,
    max_at_k_exact,
    max_at_k_optimal_policy,
    max_at_k_weights,
)
from bonjax.objectives.preference import (
    DPOConfig,
    IPOConfig,
    best_worst_pair,
    dpo_loss,
    ipo_loss,
    ipo_loss_from_margin,
    log_ratio_margin,
)
from bonjax.objectives.qrpo import (
    QRPOConfig,
    QuantileTransform,
    qrpo_loss,
    qrpo_optimal_policy,
    qrpo_residual,
    reference_quantiles,
)
from bonjax.objectives.vbon import VBoNConfig, vbon_exact_reward, vbon_reward

__all__ = [
    "BONDConfig",
    "CTRLConfig",
    "Exponential",
    "Identity",
    "Logarithm",
    "MaxAtKConfig",
    "QRPOConfig",
    "QuantileTransform",
    "calibrated_reward",
    "choose_exponent",
    "ctrl_curves",
    "ctrl_optimal_policy",
    "exact_calibrated_reward",
    "max_at_k_estimate",
    "max_at_k_exact",
    "max_at_k_optimal_policy",
    "max_at_k_weights",
    "qrpo_loss",
    "qrpo_optimal_policy",
    "qrpo_residual",
    "reference_quantiles",
    "BoNBoNConfig",
    "DPOConfig",
    "GAEResult",
    "IPOConfig",
    "JBONDConfig",
    "JBOND_PENALTY",
    "KLEstimator",
    "KLRLConfig",
    "VBoNConfig",
    "best_worst_pair",
    "bonbon_beta",
    "bonbon_loss",
    "bond_backward_return",
    "bond_loss",
    "dpo_loss",
    "ema_update",
    "gae",
    "ipo_loss",
    "ipo_loss_from_margin",
    "jbond_loss",
    "jbond_reward",
    "kl_k1",
    "kl_k3",
    "kl_regularised_return",
    "log_ratio_margin",
    "masked_sum",
    "per_token_rewards",
    "policy_return",
    "ppo_clipped_surrogate",
    "reinforce_loss",
    "rloo_advantages",
    "rloo_loss",
    "sequence_logprob",
    "sft_loss",
    "sft_token_mean_loss",
    "token_logprobs",
    "vbon_exact_reward",
    "vbon_reward",
]
