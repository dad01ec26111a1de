"""Regularised Best-of-N (Jinnai, Morimura, Ariu, Abe 2024, arXiv 2404.01054; the choice rules
of its public code), sampler-level rules next to :func:`bonjax.bon.best_of_n`:

    RBoN_KL:        argmax_i  r(y_i) + beta log pi_ref(y_i | x)
    RBoN_WD / MBR:  argmax_i  r(y_i) + beta (1/n) sum_{j=1..n} sim(y_i, y_j)      (j = i included)

``log pi_ref(y|x)`` is the sequence sum of the reference's token log-probabilities
(``KL(delta_y || pi_ref) = -log pi_ref(y|x)``), read from a temperature-1 sampler of pi_ref;
``sim`` is the cosine of sentence embeddings (:class:`bonjax.rewards.similarity.SentenceEmbedder`,
all-MiniLM-L6-v2, mean-pooled). ``beta = 0`` is Best-of-N; a large beta picks the most likely
sample (KL) or the medoid of the n samples (MBR). The argmax follows
:func:`bonjax.bon.select_best_and_worst` on the regularised score: ties go to the lowest draw
index and a NaN score ranks lowest.

Provenance (checked with the search tool): both rules are confirmed against the authors' code,
CyberAgentAILab/regularized-bon, ``mbr/compute_rbon.py`` (commit 8f2211b): KL-BoN is the argmax
of ``proxy + alpha * logprob``, WD-BoN the argmax of ``proxy + alpha * mean`` of the row of the
sentence-similarity matrix (its diagonal included). The paper has versions v1 and v3 (both cited
in stored copies). Unconfirmed: the equation numbers of the two objectives in either version
(the paper's body was not readable), and which version first states them in this form.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from bonjax import bon
from bonjax.checks import check_positive, is_concrete
from bonjax.objectives import masked_sum
from bonjax.sampling.strategies import Temperature

__all__ = ["RegularisedBestOfN", "mbr_best_of_n", "mean_cosine_similarity",
           "regularised_best_of_n", "select_mbr", "select_regularised"]


def _regularised(rewards_BxN, bonus_BxN, beta) -> jax.Array:
    check_positive("beta", beta, allow_zero=True)
    rewards_BxN = jnp.asarray(rewards_BxN)
    if is_concrete(beta) and float(beta) == 0.0:  # exactly BoN, even where the bonus is -inf
        return rewards_BxN
    if jnp.shape(bonus_BxN) != rewards_BxN.shape:
        raise ValueError(f"the regulariser {jnp.shape(bonus_BxN)} must have the rewards' shape "
                         f"{rewards_BxN.shape}")
    return rewards_BxN + beta * jnp.asarray(bonus_BxN, rewards_BxN.dtype)


def select_regularised(rewards_BxN, log_ref_BxN, beta: float) -> jax.Array:
    """RBoN_KL: ``argmax_i r_i + beta log pi_ref(y_i)`` per prompt, int32 [B]."""
    return bon.select_best_and_worst(_regularised(rewards_BxN, log_ref_BxN, beta))[0]


def mean_cosine_similarity(embeddings_BxNxD: jax.Array) -> jax.Array:
    """``(1/n) sum_j cos(e_i, e_j)`` (j = i included) for every sample, [B, N]."""
    e_BxNxD = jnp.asarray(embeddings_BxNxD, jnp.float32)
    unit_BxNxD = e_BxNxD / jnp.maximum(jnp.linalg.norm(e_BxNxD, axis=-1, keepdims=True), 1e-12)
    return jnp.einsum("bnd,bmd->bnm", unit_BxNxD, unit_BxNxD).mean(-1)


def select_mbr(rewards_BxN, embeddings_BxNxD, beta: float) -> jax.Array:
    """RBoN_WD (MBR-BoN): ``argmax_i r_i + beta mean_j cos(e_i, e_j)`` per prompt, int32 [B]."""
    return bon.select_best_and_worst(
        _regularised(rewards_BxN, mean_cosine_similarity(embeddings_BxNxD), beta))[0]


@struct.dataclass
class RegularisedBestOfN:
    """The outcome of a regularised Best-of-N rule for B prompts.

    Attributes:
      tokens_BxT, mask_BxT: the chosen completion of each prompt and its completion mask.
      chosen_B: its draw index in ``0..n-1``.
      rewards_BxN: the rewards of all n completions.
      regulariser_BxN: ``log pi_ref(y_i)`` (KL) or the mean cosine similarity (MBR).
      samples: the sampler's full result.
    """

    tokens_BxT: jax.Array
    mask_BxT: jax.Array
    chosen_B: jax.Array
    rewards_BxN: jax.Array
    regulariser_BxN: jax.Array
    samples: object


def _sample_and_score(sampler, params, prompt_tokens_BxP, prompt_mask_BxP, key, n, reward):
    samples = sampler.sample(params, prompt_tokens_BxP, prompt_mask_BxP, key, n)
    rewards_BxN = jnp.asarray(reward(prompt_tokens_BxP, prompt_mask_BxP, samples.tokens_BxNxT,
                                     samples.mask_BxNxT))
    return samples, rewards_BxN


def _result(samples, rewards_BxN, regulariser_BxN, chosen_B) -> RegularisedBestOfN:
    return RegularisedBestOfN(tokens_BxT=bon.take_selected(samples.tokens_BxNxT, chosen_B),
                              mask_BxT=bon.take_selected(samples.mask_BxNxT, chosen_B),
                              chosen_B=chosen_B, rewards_BxN=rewards_BxN,
                              regulariser_BxN=regulariser_BxN, samples=samples)


def regularised_best_of_n(sampler, ref_params, prompt_tokens_BxP, prompt_mask_BxP, key, n: int,
                          reward, beta: float) -> RegularisedBestOfN:
    """RBoN_KL over n samples of pi_ref: the sampler's own log-probabilities are
    ``log pi_ref`` only at temperature 1 without truncation, which it must use.

    Raises:
      ValueError: on ``beta < 0`` or a sampler that does not sample pi_ref exactly.
    """
    check_positive("beta", beta, allow_zero=True)
    if sampler.method != Temperature(1.0):
        raise ValueError(f"RBoN_KL reads log pi_ref from the sampler, which must sample at "
                         f"Temperature(1.0); got {sampler.method!r}")
    samples, rewards_BxN = _sample_and_score(sampler, ref_params, prompt_tokens_BxP,
                                             prompt_mask_BxP, key, n, reward)
    log_ref_BxN = masked_sum(samples.logp_BxNxT, samples.mask_BxNxT)
    return _result(samples, rewards_BxN, log_ref_BxN,
                   select_regularised(rewards_BxN, log_ref_BxN, beta))


def mbr_best_of_n(sampler, params, prompt_tokens_BxP, prompt_mask_BxP, key, n: int, reward,
                  embed, beta: float) -> RegularisedBestOfN:
    """RBoN_WD (MBR-BoN) over n samples; ``embed(prompt_BxP, prompt_mask_BxP, tokens_BxNxT,
    mask_BxNxT) -> [B, N, D]`` (e.g. a :class:`~bonjax.rewards.similarity.SentenceEmbedder`).

    Raises:
      ValueError: on ``beta < 0``.
    """
    check_positive("beta", beta, allow_zero=True)
    samples, rewards_BxN = _sample_and_score(sampler, params, prompt_tokens_BxP,
                                             prompt_mask_BxP, key, n, reward)
    embeddings_BxNxD = embed(prompt_tokens_BxP, prompt_mask_BxP, samples.tokens_BxNxT,
                             samples.mask_BxNxT)
    return _result(samples, rewards_BxN, mean_cosine_similarity(embeddings_BxNxD),
                   select_mbr(rewards_BxN, embeddings_BxNxD, beta))
