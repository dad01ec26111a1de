"""Evaluation of a policy on the test prompts, against pi_ref and against Best-of-N.

For each test prompt, K samples of the policy are scored three ways:

- reward: mean of ``r(x, y)``;
- ``KL(pi || pi_ref)``: Monte-Carlo k1 ``sum_t (log pi - log pi_ref)`` and k3
  ``sum_t (exp(d) - 1 - d)``, ``d = log pi_ref - log pi`` (both teacher-forced through the same
  scorer, so the reference itself has KL exactly 0);
- win rate: each sample against each of the M reference samples of its prompt (ties count
  half), the mean of ``1[r > r_m] + 0.5 1[r = r_m]``; in expectation the win rate against one
  ``pi_ref`` sample, with lower variance than a single opponent.

Standard errors are across prompts (:func:`bonjax.evaluation.mean_and_stderr`). The distance to
Best-of-N is the policy's reward minus the BoN curve's reward at the policy's KL.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from bonjax import distributed
from bonjax import sharding as shd
from bonjax.distributed import to_host
from bonjax.evaluation import BoNCurve, Estimate, EvalPoint, kl_summary, mean_and_stderr
from bonjax.objectives import kl_k1
from bonjax.prompt_shard import PromptShard, chunk_indices
from bonjax.sampling.sampler import Sampler
from bonjax.sampling.scorer import completion_logprobs

__all__ = ["EvalSamples", "bon_gap", "evaluate_samples", "sample_policy", "score_completions",
           "to_host", "win_rate_vs_references", "write_samples"]


@dataclasses.dataclass(frozen=True)
class EvalSamples:
    """K samples of a policy for each of P prompts, scored (host numpy arrays).

    Attributes:
      tokens_PxKxT, mask_PxKxT: the completions and their masks.
      logp_PxKxT, logp_ref_PxKxT: per-token log-probabilities under the policy and pi_ref.
      reward_PxK: their rewards.
    """

    tokens_PxKxT: np.ndarray
    mask_PxKxT: np.ndarray
    logp_PxKxT: np.ndarray
    logp_ref_PxKxT: np.ndarray
    reward_PxK: np.ndarray


@functools.cache
def _scorer(lm) -> Callable:
    """The compiled scorer's log-probabilities only (its hidden states are never output)."""
    return jax.jit(lambda *args: completion_logprobs(lm, *args).logp_BxNxT)


def sample_policy(sampler: Sampler, params: nnx.State, ref_params: nnx.State, reward: Callable,
                  prompts: PromptShard, k: int, key: jax.Array, *, prompts_per_call: int,
                  progress: bool = True, desc: str = "evaluate") -> EvalSamples:
    """Draws ``k`` samples per prompt of the table from ``params``; scores them under both
    policies.

    Prompt chunk ``c`` (:func:`~bonjax.prompt_shard.chunk_indices`) draws with
    ``fold_in(key, c)``. The policy's log-probabilities come from the teacher-forced scorer,
    like the reference's, not from the sampler. A collective: every process of the job calls it
    with its share of the same table (it supplies its rows of each chunk) and gets every
    prompt's samples.
    """
    P = prompts.num_prompts
    score = _scorer(sampler.lm)
    parts: list[tuple[np.ndarray, ...]] = []
    index_CxB = chunk_indices(P, prompts_per_call)
    bar = tqdm(index_CxB, desc=desc, unit="chunk",
               disable=not progress or not distributed.is_main_process())
    for c, index_B in enumerate(bar):
        rows = min(prompts_per_call, P - c * prompts_per_call)
        tokens, mask, _ = prompts.batch(index_B)
        out = sampler.sample(params, tokens, mask, jax.random.fold_in(key, c), k)
        logp = score(params, tokens, mask, out.tokens_BxNxT, out.mask_BxNxT)
        logp_ref = score(ref_params, tokens, mask, out.tokens_BxNxT, out.mask_BxNxT)
        r = reward(tokens, mask, out.tokens_BxNxT, out.mask_BxNxT)
        parts.append(tuple(to_host(a)[:rows] for a in (out.tokens_BxNxT, out.mask_BxNxT, logp,
                                                       logp_ref, r)))
    tokens, mask, logp, logp_ref, r = (np.concatenate(a) for a in zip(*parts, strict=True))
    return EvalSamples(tokens, mask.astype(bool), logp.astype(np.float32),
                         logp_ref.astype(np.float32), r.astype(np.float32))


def _like_prompts(prompts: PromptShard, x_BxKxT: np.ndarray) -> jax.Array:
    """Host rows ``x_BxKxT`` of a global batch as the prompts of that batch are laid out."""
    if prompts.mesh is None:
        return jnp.asarray(x_BxKxT)
    sharding = shd.batch_sharding(prompts.mesh, x_BxKxT.ndim, prompts.rules, x_BxKxT.shape[0])
    rows = distributed.process_rows(sharding, x_BxKxT.shape)
    return distributed.global_array(x_BxKxT[rows], prompts.mesh, sharding, x_BxKxT.shape)


def score_completions(reward: Callable, prompts: PromptShard, tokens_PxKxT: np.ndarray,
                      mask_PxKxT: np.ndarray, *, prompts_per_call: int) -> np.ndarray:
    """Rewards ``[P, K]`` of given completions (host arrays, K per prompt of the table) under
    ``reward``: a second scorer of samples already drawn (a held-out reward model), in the
    prompt chunks :func:`sample_policy` draws. A collective, as :func:`sample_policy`: every
    process passes the whole ``[P, K, T]`` arrays and gets every prompt's rewards."""
    P = prompts.num_prompts
    tokens_PxKxT, mask_PxKxT = np.asarray(tokens_PxKxT), np.asarray(mask_PxKxT, bool)
    if tokens_PxKxT.ndim != 3 or tokens_PxKxT.shape[0] != P or \
            mask_PxKxT.shape != tokens_PxKxT.shape:
        raise ValueError(f"need completions and masks [P = {P}, K, T] of one shape, got "
                         f"{tokens_PxKxT.shape} and {mask_PxKxT.shape}")
    parts = []
    for c, index_B in enumerate(chunk_indices(P, prompts_per_call)):
        rows = min(prompts_per_call, P - c * prompts_per_call)
        tokens, mask, _ = prompts.batch(index_B)
        r = reward(tokens, mask, _like_prompts(prompts, tokens_PxKxT[index_B]),
                   _like_prompts(prompts, mask_PxKxT[index_B]))
        parts.append(to_host(r)[:rows])
    return np.concatenate(parts).astype(np.float32)


def win_rate_vs_references(reward_PxK, reward_ref_PxM, *, tie_credit: float = 0.5) -> Estimate:
    """Win rate of the samples against every reference sample of their prompt.

        W = (1/P) sum_p (1/(K M)) sum_{k,m} (1[r_pk > r_pm] + c 1[r_pk = r_pm])

    Each term is the win rate against one ``pi_ref`` sample (:func:`bonjax.evaluation.win_rate`
    with opponent m); the mean over the M opponents has the same expectation. The standard error
    is across prompts.
    """
    reward_PxK = np.asarray(reward_PxK, np.float64)
    reward_ref_PxM = np.asarray(reward_ref_PxM, np.float64)
    if reward_PxK.ndim != 2 or reward_ref_PxM.ndim != 2 \
            or reward_PxK.shape[0] != reward_ref_PxM.shape[0]:
        raise ValueError(f"need rewards [P, K] and reference rewards [P, M] of the same P, got "
                         f"{reward_PxK.shape} and {reward_ref_PxM.shape}")
    if not 0.0 <= tie_credit <= 1.0:
        raise ValueError(f"tie_credit must lie in [0, 1], got {tie_credit}")
    r_PxKx1, ref_Px1xM = reward_PxK[:, :, None], reward_ref_PxM[:, None, :]
    score_PxKxM = (r_PxKx1 > ref_Px1xM) + tie_credit * (r_PxKx1 == ref_Px1xM)
    estimate = mean_and_stderr(jnp.asarray(score_PxKxM.mean(axis=(1, 2)), jnp.float32))
    return Estimate(float(estimate.mean), float(estimate.stderr))


def evaluate_samples(samples: EvalSamples, reward_ref_PxM, method: str,
                     setting: str) -> tuple[EvalPoint, Estimate]:
    """The policy's point (reward, k1 KL, win rate) and its k3 KL estimate."""
    kl = kl_summary(samples.logp_PxKxT, samples.logp_ref_PxKxT, samples.mask_PxKxT)
    reward = mean_and_stderr(samples.reward_PxK)
    point = EvalPoint(method=method, setting=setting, reward=reward, kl=kl.k1,
                      win_rate=win_rate_vs_references(samples.reward_PxK, reward_ref_PxM))
    return point, Estimate(float(kl.k3.mean), float(kl.k3.stderr))


def bon_gap(point: EvalPoint, curve: BoNCurve) -> float | None:
    """``reward - BoN reward at the same KL`` (linear interpolation along the BoN curve).

    Negative: below Best-of-N's frontier. None when the point's KL lies beyond the curve's
    largest N (``log M - (M-1)/M``), where BoN was not measured.
    """
    kl = point.kl.mean
    if kl > curve.kl[-1]:
        return None
    return float(point.reward.mean - np.interp(max(kl, 0.0), curve.kl, curve.reward))


def write_samples(path: str | os.PathLike, samples: EvalSamples, prompt_tokens_PxL: np.ndarray,
                  prompt_mask_PxL: np.ndarray, prompts, tokenizer) -> None:
    """One JSON line per sample: the prompt, the completion, the whole text as the reward read
    it (prompt and completion tokens decoded together), the reward and the sequence's k1 KL.

    ``prompts`` has the prompts' ``texts``; with ``labels`` (IMDB's
    :class:`~bonjax.data.imdb.Prompts`) each line also gives its review's label."""
    kl_PxK = np.asarray(kl_k1(samples.logp_PxKxT, samples.logp_ref_PxKxT, samples.mask_PxKxT))
    labels = getattr(prompts, "labels", None)
    P, K = samples.reward_PxK.shape
    lines = []
    for p in range(P):
        prompt_ids = prompt_tokens_PxL[p][prompt_mask_PxL[p].astype(bool)].tolist()
        for k in range(K):
            ids = samples.tokens_PxKxT[p, k][samples.mask_PxKxT[p, k]].tolist()
            line = {
                "prompt_index": p, "sample": k, "prompt": prompts.texts[p],
                "completion": tokenizer.decode(ids, skip_special_tokens=True),
                "text": tokenizer.decode(prompt_ids + ids, skip_special_tokens=True),
                "reward": float(samples.reward_PxK[p, k]), "kl_k1": float(kl_PxK[p, k])}
            if labels is not None:
                line["review_label"] = int(labels[p])
            lines.append(json.dumps(line))
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)
