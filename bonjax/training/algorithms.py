"""Alignment methods on one code path: what each samples, and the loss on what it sampled.

Every method (the :class:`~bonjax.training.protocol.Method` protocol) turns a batch of prompts
into a batch of ``S`` completions per prompt, typed by method family (``collect``, host
orchestration of jitted pieces: sampling, scoring, the reward), and defines a per-prompt loss of
the policy's scores of those completions and of its trainable extras (``loss``, traced inside the
jitted gradient step). The trainer computes the scores with the shared-prefix scorer, so no
method branches on the architecture, and the trainer never branches on the method.

=============  =======================================  ============================================
method         completions per prompt (``S``)           loss
=============  =======================================  ============================================
vBoN           K policy samples                         clipped policy gradient, RLOO advantages of
                                                        ``log F_hat(r) - KL/(N-1)``
KL-RL (PPO     K policy samples                         same, on ``r - beta KL``
baseline)
vBoN / KL-RL   K >= 1 policy samples                    PPO: per-token clipped surrogate with GAE
by ``PPO``                                              advantages from a value head, plus the
                                                        clipped value loss (``training/ppo.py``)
BoNBoN         best and worst of n reference samples    ``alpha SFT + (1-alpha) IPO`` (beta*_n)
DPO / IPO      best and worst of n reference samples    DPO / IPO on the pair
BOND           1 BoN_N sample of the anchor + K policy  Jeffreys mix: SFT + RLOO on
               samples                                  ``log p_le_hat - KL(pi||anchor)/(N-1)``
J-BOND         2 anchor samples + 1 policy sample       SFT on the better anchor sample + REINFORCE
                                                        on ``-log 16 [worse than both] - KL``
=============  =======================================  ============================================

The KL term of each return uses the log-probabilities at collection time (the behaviour policy);
the clipped surrogate (Schulman et al. 2017) lets several epochs reuse one rollout.

The fixed-data methods sample nothing: BoNBoN / DPO / IPO on best-and-worst pairs built once
(:mod:`bonjax.training.fixed_pairs`, from :mod:`bonjax.training.reference_pool`) and supervised
fine-tuning on fixed responses (:mod:`bonjax.training.sft`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from bonjax import bon, ecdf
from bonjax import objectives as obj
from bonjax.checks import check_unit_interval
from bonjax.sampling.scorer import CompletionScores
from bonjax.training.protocol import Batch
from bonjax.training.rollout import kl_metrics, policy_samples, rows

__all__ = [
    "BOND",
    "BONDBatch",
    "JBOND",
    "JBONDBatch",
    "PolicyGradient",
    "PolicyGradientBatch",
    "PairObjective",
    "PreferencePairs",
    "preference_pair_loss",
]


class _NoExtras:
    """A method that trains the policy's parameters only."""

    uses_anchor = False
    anchor_eta = 0.0

    def init_extras(self, lm, key) -> dict[str, Any]:
        return {}


@struct.dataclass
class PolicyGradientBatch(Batch):
    """K policy samples per prompt and their RLOO advantages ``advantage_BxS``."""

    advantage_BxS: jax.Array


def _clipped_pg_loss(logp_BxSxT, batch: PolicyGradientBatch, clip_eps: float) -> jax.Array:
    """Per-prompt clipped surrogate summed over tokens, averaged over the S samples."""
    advantage_BxSxT = jnp.broadcast_to(batch.advantage_BxS[..., None], logp_BxSxT.shape)
    per_token = obj.ppo_clipped_surrogate(logp_BxSxT, batch.logp_old_BxSxT, advantage_BxSxT,
                                          batch.mask_BxSxT, clip_eps)
    return per_token.sum(-1).mean(-1)


@dataclasses.dataclass(frozen=True)
class PolicyGradient(_NoExtras):
    """vBoN or the KL-regularised RL baseline: K policy samples, RLOO advantages.

    Attributes:
      objective: ``VBoNConfig`` (reward ``log F_hat(r)``, KL weight ``1/(N-1)``) or
        ``KLRLConfig`` (raw reward, KL weight ``beta``).
      samples_per_prompt: K >= 2 (the leave-one-out baseline needs two).
      clip_eps: the PPO clipping range of the probability ratio.
      estimator: the ECDF variant for vBoN (add-one smoothed, strict ``<``).
    """

    objective: obj.VBoNConfig | obj.KLRLConfig
    samples_per_prompt: int = 4
    clip_eps: float = 0.2
    estimator: ecdf.ECDFEstimator = ecdf.SMOOTHED_LT

    def __post_init__(self):
        if not isinstance(self.objective, obj.VBoNConfig | obj.KLRLConfig):
            raise ValueError(f"PolicyGradient takes VBoNConfig or KLRLConfig, got "
                             f"{self.objective!r}")
        if self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt must be >= 2 for the leave-one-out baseline, "
                             f"got {self.samples_per_prompt}")

    def collect(self, ctx, policy, extras, anchor, prompt_tokens_BxP, prompt_mask_BxP,
                prompt_index_B, key):
        s = policy_samples(self.objective, self.estimator, self.samples_per_prompt, ctx, policy,
                           prompt_tokens_BxP, prompt_mask_BxP, prompt_index_B, key)
        return_R = obj.policy_return(
            s.return_reward_BxK.reshape(-1), *rows(s.logp_BxKxT, s.logp_ref_BxKxT, s.mask_BxKxT),
            self.objective)
        return_BxK = return_R.reshape(s.return_reward_BxK.shape)
        batch = PolicyGradientBatch(prompt_tokens_BxP, prompt_mask_BxP, s.tokens_BxKxT,
                                    s.mask_BxKxT, s.logp_BxKxT, s.logp_ref_BxKxT,
                                    advantage_BxS=obj.rloo_advantages(return_BxK))
        return batch, {**s.metrics, "return": return_BxK.mean()}

    def loss(self, scores, batch, extras):
        return _clipped_pg_loss(scores.logp_BxNxT, batch, self.clip_eps), {}


PairObjective = obj.BoNBoNConfig | obj.DPOConfig | obj.IPOConfig
"""The objectives of a best-vs-worst pair."""


@dataclasses.dataclass(frozen=True)
class PreferencePairs(_NoExtras):
    """BoNBoN, DPO or IPO on the best and worst of n reference samples per prompt.

    The reference samples' own log-probabilities (temperature 1) are the reference log-probs,
    so no extra scoring pass is needed.
    """

    objective: PairObjective
    n: int = 8

    def __post_init__(self):
        if isinstance(self.objective, obj.BoNBoNConfig) and self.objective.n != self.n:
            raise ValueError(f"BoNBoNConfig.n = {self.objective.n} must equal the number of "
                             f"reference samples n = {self.n}")
        if self.n < 2:
            raise ValueError(f"best-vs-worst pairs need n >= 2 samples, got n = {self.n}")

    def collect(self, ctx, policy, extras, anchor, prompt_tokens_BxP, prompt_mask_BxP,
                prompt_index_B, key):
        out = ctx.sampler.sample(ctx.ref_params, prompt_tokens_BxP, prompt_mask_BxP, key, self.n)
        reward_BxN = ctx.reward(prompt_tokens_BxP, prompt_mask_BxP, out.tokens_BxNxT,
                                out.mask_BxNxT)
        best_B, worst_B = bon.select_best_and_worst(reward_BxN)

        def pair(x_BxNx):
            return jnp.stack([bon.take_selected(x_BxNx, best_B),
                              bon.take_selected(x_BxNx, worst_B)], axis=1)

        logp_ref = pair(out.logp_BxNxT)
        metrics = {"reward": reward_BxN.mean(), "reward_best": pair(reward_BxN)[:, 0].mean(),
                   "reward_worst": pair(reward_BxN)[:, 1].mean()}
        batch = Batch(prompt_tokens_BxP, prompt_mask_BxP, pair(out.tokens_BxNxT),
                      pair(out.mask_BxNxT), logp_ref, logp_ref)
        return batch, metrics

    def loss(self, scores, batch, extras):
        return preference_pair_loss(self.objective, scores, batch)


def preference_pair_loss(objective: PairObjective, scores: CompletionScores,
                         batch: Batch) -> tuple[jax.Array, dict]:
    """Per-prompt BoNBoN, DPO or IPO loss ``[B]`` of a batch of pairs (``S = 2``: best, worst)
    and the mean sequence-sum log-ratio margin ``h``: the loss of :class:`PreferencePairs` and
    of the fixed-pair method (:class:`bonjax.training.fixed_pairs.FixedPairs`)."""
    logp_Bx2xT = scores.logp_BxNxT
    if isinstance(objective, obj.BoNBoNConfig):
        loss_B = obj.bonbon_loss(logp_Bx2xT, batch.logp_ref_BxSxT, batch.mask_BxSxT, objective)
    elif isinstance(objective, obj.DPOConfig):
        loss_B = obj.dpo_loss(logp_Bx2xT, batch.logp_ref_BxSxT, batch.mask_BxSxT, objective)
    elif isinstance(objective, obj.IPOConfig):
        loss_B = obj.ipo_loss(logp_Bx2xT, batch.logp_ref_BxSxT, batch.mask_BxSxT, objective)
    else:
        raise ValueError(f"a pair loss takes BoNBoNConfig, DPOConfig or IPOConfig, got "
                         f"{objective!r}")
    margin_B = obj.log_ratio_margin(logp_Bx2xT, batch.logp_ref_BxSxT, batch.mask_BxSxT)
    return loss_B, {"log_ratio_margin": margin_B.mean()}


@struct.dataclass
class BONDBatch(Batch):
    """One BoN sample of the anchor then K policy samples per prompt (``S = 1 + K``), and the
    policy samples' ``log p_le_hat`` against the anchor's n samples."""

    log_p_le_BxK: jax.Array


@dataclasses.dataclass(frozen=True)
class BOND(_NoExtras):
    """BOND: distil the anchor's Best-of-N with the Jeffreys divergence.

    Per prompt: n anchor samples give one BoN_n sample (forward term) and the references of
    ``p_le_hat``; K policy samples give the backward term. ``p_le_hat`` is add-one smoothed
    (``(1 + #{r_m <= r}) / (n + 1)``) so that its log is finite. With ``anchor_eta > 0`` the
    anchor follows the policy by EMA after every step (iterative BOND).
    """

    objective: obj.BONDConfig
    samples_per_prompt: int = 4
    anchor_eta: float = 0.0
    estimator: ecdf.ECDFEstimator = ecdf.ECDFEstimator(ecdf.Inequality.LESS_EQUAL, True)

    def __post_init__(self):
        if self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt must be >= 2, got {self.samples_per_prompt}")
        check_unit_interval("anchor_eta", self.anchor_eta)

    uses_anchor = True

    def collect(self, ctx, policy, extras, anchor, prompt_tokens_BxP, prompt_mask_BxP,
                prompt_index_B, key):
        n, K = self.objective.n, self.samples_per_prompt
        key_anchor, key_policy = jax.random.split(key)
        ref = ctx.sampler.sample(anchor, prompt_tokens_BxP, prompt_mask_BxP, key_anchor, n)
        ref_reward_BxN = ctx.reward(prompt_tokens_BxP, prompt_mask_BxP, ref.tokens_BxNxT,
                                    ref.mask_BxNxT)
        best_B, _ = bon.select_best_and_worst(ref_reward_BxN)
        out = ctx.sampler.sample(policy, prompt_tokens_BxP, prompt_mask_BxP, key_policy, K)
        reward_BxK = ctx.reward(prompt_tokens_BxP, prompt_mask_BxP, out.tokens_BxNxT,
                                out.mask_BxNxT)
        logp_anchor = ctx.score(anchor, prompt_tokens_BxP, prompt_mask_BxP, out.tokens_BxNxT,
                                out.mask_BxNxT).logp_BxNxT
        log_p_le_BxK = ecdf.log_ecdf(ecdf.ReferenceRewards.create(ref_reward_BxN), reward_BxK,
                                     self.estimator)

        def with_bon(bon_Bx, x_BxKx):
            return jnp.concatenate([bon.take_selected(bon_Bx, best_B)[:, None], x_BxKx], axis=1)

        batch = BONDBatch(prompt_tokens_BxP, prompt_mask_BxP,
                          with_bon(ref.tokens_BxNxT, out.tokens_BxNxT),
                          with_bon(ref.mask_BxNxT, out.mask_BxNxT),
                          with_bon(ref.logp_BxNxT, out.logp_BxNxT),
                          with_bon(ref.logp_BxNxT, logp_anchor), log_p_le_BxK=log_p_le_BxK)
        metrics = {"reward": reward_BxK.mean(), "bon_reward": bon.take_selected(
            ref_reward_BxN, best_B).mean(), "log_p_le": log_p_le_BxK.mean(),
            **kl_metrics(out.logp_BxNxT, logp_anchor, out.mask_BxNxT)}
        return batch, metrics

    def loss(self, scores, batch, extras):
        logp_BxSxT = scores.logp_BxNxT
        loss_B = obj.bond_loss(logp_BxSxT[:, 0], batch.mask_BxSxT[:, 0], logp_BxSxT[:, 1:],
                               batch.logp_ref_BxSxT[:, 1:], batch.mask_BxSxT[:, 1:],
                               batch.log_p_le_BxK, self.objective)
        return loss_B, {"bon_nll": obj.sft_loss(logp_BxSxT[:, 0], batch.mask_BxSxT[:, 0]).mean()}


@struct.dataclass
class JBONDBatch(Batch):
    """Two anchor samples then one policy sample per prompt (``S = 3``), and their rewards."""

    anchor_reward_Bx2: jax.Array
    reward_B: jax.Array


@dataclasses.dataclass(frozen=True)
class JBOND(_NoExtras):
    """J-BOND (n = 2): 2 anchor samples + 1 policy sample per prompt, EMA anchor."""

    objective: obj.JBONDConfig = obj.JBONDConfig()

    uses_anchor = True

    @property
    def anchor_eta(self) -> float:
        return self.objective.anchor_eta

    def collect(self, ctx, policy, extras, anchor, prompt_tokens_BxP, prompt_mask_BxP,
                prompt_index_B, key):
        key_anchor, key_policy = jax.random.split(key)
        ref = ctx.sampler.sample(anchor, prompt_tokens_BxP, prompt_mask_BxP, key_anchor, 2)
        anchor_reward_Bx2 = ctx.reward(prompt_tokens_BxP, prompt_mask_BxP, ref.tokens_BxNxT,
                                       ref.mask_BxNxT)
        out = ctx.sampler.sample(policy, prompt_tokens_BxP, prompt_mask_BxP, key_policy, 1)
        reward_Bx1 = ctx.reward(prompt_tokens_BxP, prompt_mask_BxP, out.tokens_BxNxT,
                                out.mask_BxNxT)
        logp_anchor = ctx.score(anchor, prompt_tokens_BxP, prompt_mask_BxP, out.tokens_BxNxT,
                                out.mask_BxNxT).logp_BxNxT

        def cat(a, b):
            return jnp.concatenate([a, b], axis=1)

        batch = JBONDBatch(prompt_tokens_BxP, prompt_mask_BxP,
                           cat(ref.tokens_BxNxT, out.tokens_BxNxT),
                           cat(ref.mask_BxNxT, out.mask_BxNxT),
                           cat(ref.logp_BxNxT, out.logp_BxNxT), cat(ref.logp_BxNxT, logp_anchor),
                           anchor_reward_Bx2=anchor_reward_Bx2, reward_B=reward_Bx1[:, 0])
        metrics = {"reward": reward_Bx1.mean(), "anchor_reward": anchor_reward_Bx2.mean(),
                   **kl_metrics(out.logp_BxNxT, logp_anchor, out.mask_BxNxT)}
        return batch, metrics

    def loss(self, scores, batch, extras):
        logp_BxSxT = scores.logp_BxNxT
        loss_B = obj.jbond_loss(logp_BxSxT[:, :2], batch.mask_BxSxT[:, :2],
                                batch.anchor_reward_Bx2, logp_BxSxT[:, 2],
                                batch.logp_ref_BxSxT[:, 2], batch.mask_BxSxT[:, 2],
                                batch.reward_B, self.objective)
        return loss_B, {}
