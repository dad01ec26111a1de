"""Reference CDFs: M reference samples per prompt, drawn and scored once, cached on disk.

vBoN's reward ``log F_hat(r(y))`` compares a policy sample's reward with the rewards of M
samples of ``pi_ref`` for the same prompt. Those never change during training, so they are
computed once per (reference model, reward, prompt set, M, T, seed), saved as ``.npz`` under a
name derived from that fingerprint, and reused across epochs and runs.

One pipeline draws them: :func:`reference_samples_of_shard` for a prompt table shared out over
the processes of a job (a :class:`~bonjax.prompt_shard.PromptShard`: each process supplies its
rows of every global batch), of which :func:`reference_rewards_of_shard` keeps the rewards and
:func:`reference_rewards`, a whole table in one process, is the one-shard case. The chunks,
keys and cache name do not depend on how the table is shared out, so any number of processes
draws the same rewards and reads the same cache file. Next to the rewards, the cache keeps each
sample's sequence log-probability under the sampler (``log pi_ref`` for a temperature-1 sampler
of pi_ref: regularised Best-of-N ranks by ``r + beta log pi_ref``). Its sampling loop,
:func:`reference_chunks`, also draws the fixed best-and-worst data set
(:mod:`bonjax.training.reference_pool`), whose rewards are these for the same key and chunks."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from bonjax import distributed, ecdf
from bonjax.fingerprint import fingerprint_of
from bonjax.objectives import masked_sum
from bonjax.prompt_shard import PromptShard, chunk_indices
from bonjax.sampling.sampler import Sampler, SampleResult

__all__ = [
    "ReferenceChunk",
    "ReferenceSamples",
    "ReferenceStore",
    "check_chunk_sizes",
    "reference_chunks",
    "reference_rewards",
    "reference_rewards_of_shard",
    "reference_samples_of_shard",
    "reference_store",
]


@dataclasses.dataclass(frozen=True)
class ReferenceSamples:
    """M reference samples of each of P prompts, scored (host float32 arrays).

    Attributes:
      rewards_PxM: their rewards.
      log_ref_PxM: their sequence log-probabilities under the sampler, ``sum_t log p(y_t | .)``
        over the completion's tokens (``log pi_ref(y | x)`` when the sampler draws pi_ref at
        temperature 1); None when read from a cache file written before they were kept.
    """

    rewards_PxM: np.ndarray
    log_ref_PxM: np.ndarray | None


def check_chunk_sizes(num_samples: int, prompts_per_call: int, samples_per_call: int) -> None:
    """``ValueError`` unless M and both chunk sizes are >= 1."""
    if num_samples < 1:
        raise ValueError(f"num_samples (M) must be >= 1, got {num_samples}")
    if prompts_per_call < 1 or samples_per_call < 1:
        raise ValueError(f"prompts_per_call and samples_per_call must be >= 1, got "
                         f"{prompts_per_call}, {samples_per_call}")


@dataclasses.dataclass(frozen=True)
class ReferenceChunk:
    """One call of the pipeline: ``n`` reference samples of a chunk of ``prompts_per_call``
    prompts (the last chunk filled up with the table's last prompt).

    Attributes:
      rows: the table rows (global prompt indices) the chunk's first ``num_rows`` rows are.
      samples: the sample columns ``[s, s + n)`` it draws.
      sample: the sampler's output, ``[prompts_per_call, n, T]`` arrays (global arrays on a
        mesh; the filler rows after ``num_rows`` belong to no table row).
      reward_BxN: the rewards of those samples, on the host (numpy).
    """

    rows: slice
    samples: slice
    sample: SampleResult
    reward_BxN: np.ndarray

    @property
    def num_rows(self) -> int:
        return self.rows.stop - self.rows.start


def reference_chunks(sampler: Sampler, ref_params: nnx.State, reward: Callable,
                     prompts: PromptShard, num_samples: int, key: jax.Array, *,
                     prompts_per_call: int, samples_per_call: int,
                     progress: bool = True) -> Iterator[ReferenceChunk]:
    """The reference samples of a prompt table, chunk by chunk: the one sampling loop of the
    reference tables (rewards here, whole samples in :mod:`bonjax.training.reference_pool`).

    Prompt chunk ``c`` (:func:`~bonjax.prompt_shard.chunk_indices`) and sample chunk ``s`` draw
    with ``fold_in(fold_in(key, c), s)``, whatever share of the table this process holds. A
    collective: every process iterates it alike.
    """
    check_chunk_sizes(num_samples, prompts_per_call, samples_per_call)
    P, M = prompts.num_prompts, num_samples
    index_CxB = chunk_indices(P, prompts_per_call)
    work = [(c, s) for c in range(len(index_CxB)) for s in range(0, M, samples_per_call)]
    bar = tqdm(work, desc="reference samples", unit="chunk",
               disable=not progress or not distributed.is_main_process())
    for c, s in bar:
        if s == 0:
            tokens_BxL, mask_BxL, _ = prompts.batch(index_CxB[c])
        n = min(samples_per_call, M - s)
        chunk_key = jax.random.fold_in(jax.random.fold_in(key, c), s // samples_per_call)
        out = sampler.sample(ref_params, tokens_BxL, mask_BxL, chunk_key, n)
        r_BxN = distributed.to_host(reward(tokens_BxL, mask_BxL, out.tokens_BxNxT,
                                           out.mask_BxNxT))
        yield ReferenceChunk(slice(c * prompts_per_call, min((c + 1) * prompts_per_call, P)),
                             slice(s, s + n), out, r_BxN)


def reference_rewards(sampler: Sampler, ref_params: nnx.State, reward: Callable,
                      prompt_tokens_PxL: np.ndarray, prompt_mask_PxL: np.ndarray,
                      num_samples: int, key: jax.Array, **options) -> np.ndarray:
    """Rewards ``[P, M]`` of ``M = num_samples`` reference samples of each of P prompts.

    The whole table in one process: :func:`reference_rewards_of_shard` of a shard that holds
    every prompt, with the same keyword ``options`` (chunk sizes, cache, progress bar).
    """
    prompts = PromptShard.keep(prompt_tokens_PxL, prompt_mask_PxL, None, None)
    return reference_rewards_of_shard(sampler, ref_params, reward, prompts, num_samples, key,
                                      **options)


def reference_rewards_of_shard(sampler: Sampler, ref_params: nnx.State, reward: Callable,
                               prompts: PromptShard, num_samples: int, key: jax.Array,
                               **options) -> np.ndarray:
    """Rewards ``[P, M]`` of ``M = num_samples`` reference samples of each prompt of the table:
    the ``rewards_PxM`` of :func:`reference_samples_of_shard` (same arguments and cache)."""
    return reference_samples_of_shard(sampler, ref_params, reward, prompts, num_samples, key,
                                      **options).rewards_PxM


def reference_samples_of_shard(sampler: Sampler, ref_params: nnx.State, reward: Callable,
                               prompts: PromptShard, num_samples: int, key: jax.Array, *,
                               prompts_per_call: int = 8, samples_per_call: int = 32,
                               cache_dir: str | os.PathLike | None = None,
                               fingerprint: dict | None = None,
                               progress: bool = True) -> ReferenceSamples:
    """Rewards and sequence log-probabilities ``[P, M]`` of ``M = num_samples`` reference samples
    of each prompt of the table.

    The samples of :func:`reference_chunks`: prompt chunk ``c`` (``prompts_per_call`` prompts,
    the last chunk filled up with the table's last prompt) and sample chunk ``s`` draw with
    ``fold_in(fold_in(key, c), s)``, so given chunk sizes always reproduce the same rewards.
    With ``cache_dir`` the result is loaded from, or saved to (a temporary file renamed into
    place), ``cache_dir/ref_rewards-<hash>.npz``, the hash of ``fingerprint`` (whatever
    identifies the reference model and reward), the whole table, M, T, the key and the chunk
    sizes (the file holds ``rewards_PxM`` and ``log_ref_PxM``; one written before the
    log-probabilities were kept is read with ``log_ref_PxM = None``). A collective: every process
    of the job calls it with its own share of the same table; only process 0 reads or writes the
    cache, and every process gets the whole result (the Best-of-N evaluation reads all of it,
    and vBoN's reference CDFs look rows up by global prompt index inside the compiled rollout).
    """
    check_chunk_sizes(num_samples, prompts_per_call, samples_per_call)
    P, M = prompts.num_prompts, num_samples
    path = None
    if cache_dir is not None:
        ident = fingerprint_of(
            fingerprint=fingerprint or {}, prompts=prompts.digest, M=M,
            T=sampler.max_new_tokens, key=np.asarray(jax.random.key_data(key)).tolist(),
            chunks=(prompts_per_call, samples_per_call))
        path = Path(cache_dir) / f"ref_rewards-{ident}.npz"
        if distributed.broadcast_json(path.exists()):
            return _read_cache(path, P, M)
    rewards_PxM = np.zeros((P, M), np.float32)
    log_ref_PxM = np.zeros((P, M), np.float32)
    for chunk in reference_chunks(sampler, ref_params, reward, prompts, M, key,
                                  prompts_per_call=prompts_per_call,
                                  samples_per_call=samples_per_call, progress=progress):
        logp_BxN = distributed.to_host(masked_sum(chunk.sample.logp_BxNxT,
                                                  chunk.sample.mask_BxNxT))
        rewards_PxM[chunk.rows, chunk.samples] = chunk.reward_BxN[: chunk.num_rows]
        log_ref_PxM[chunk.rows, chunk.samples] = logp_BxN[: chunk.num_rows]
    if path is not None and distributed.is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, rewards_PxM=rewards_PxM, log_ref_PxM=log_ref_PxM)
        os.replace(tmp, path)
    return ReferenceSamples(rewards_PxM, log_ref_PxM)


def _read_cache(path: Path, P: int, M: int) -> ReferenceSamples:
    """Process 0 reads the cache file; every process gets its arrays."""
    arrays = dict(np.load(path)) if distributed.is_main_process() else {}
    has_log_ref = distributed.broadcast_json("log_ref_PxM" in arrays)
    read = {}
    for name in ("rewards_PxM", "log_ref_PxM") if has_log_ref else ("rewards_PxM",):
        local = arrays.get(name, np.zeros((P, M), np.float32))
        read[name] = np.asarray(multihost_utils.broadcast_one_to_all(local))
    return ReferenceSamples(read["rewards_PxM"], read.get("log_ref_PxM"))


@struct.dataclass
class ReferenceStore:
    """Every prompt's sorted reference rewards; ``store(prompt_index_B)`` gives those prompts'.

    A pytree, so a compiled rollout takes it as an argument (a global array of a multi-process
    job cannot be a constant of a compiled program).
    """

    rewards: ecdf.ReferenceRewards

    def __call__(self, prompt_index_B: jax.Array) -> ecdf.ReferenceRewards:
        return jax.tree.map(lambda a: a[jnp.asarray(prompt_index_B)], self.rewards)


def reference_store(rewards_PxM) -> ReferenceStore:
    """Sorts all prompts' reference rewards once; returns ``prompt_index_B -> store rows``."""
    return ReferenceStore(ecdf.ReferenceRewards.create(jnp.asarray(rewards_PxM)))
