"""Reference rewards of a prompt table shared out over the processes of a job.

:func:`reference_rewards` draws and scores what :func:`bonjax.training.reference_rewards` does
for the whole table (the same chunks of prompts and of samples, the same keys, the same cache
file name), but each process supplies only its rows of every chunk (a
:class:`~bonjax.experiment.prompt_shard.PromptShard`), and only process 0 reads or writes the
cache. Every process gets the whole ``[P, M]`` result: the Best-of-N evaluation reads all of
it, and vBoN's reference CDFs look rows up by global prompt index inside the compiled rollout.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from bonjax import distributed
from bonjax.experiment.evaluate import to_host
from bonjax.experiment.prompt_shard import PromptShard, chunk_indices
from bonjax.sampling.sampler import Sampler
from bonjax.training.reference import fingerprint_of

__all__ = ["reference_rewards"]


def reference_rewards(sampler: Sampler, ref_params: nnx.State, reward: Callable,
                      prompts: PromptShard, num_samples: int, key: jax.Array, *,
                      prompts_per_call: int, samples_per_call: int,
                      cache_dir: str | os.PathLike | None = None, fingerprint: dict | None = None,
                      progress: bool = True) -> np.ndarray:
    """Rewards ``[P, M]`` of ``M = num_samples`` reference samples of each prompt of the table.

    Prompt chunk ``c`` (:func:`chunk_indices`) and sample chunk ``s`` draw with
    ``fold_in(fold_in(key, c), s)``, as :func:`bonjax.training.reference_rewards` does, so both
    give the same rewards and share a cache file (``cache_dir/ref_rewards-<hash>.npz``, named
    by ``fingerprint``, the whole table, M, T, the key and the chunk sizes). A collective: every
    process of the job calls it with its own share of the same table.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples (M) must be >= 1, got {num_samples}")
    if prompts_per_call < 1 or samples_per_call < 1:
        raise ValueError(f"prompts_per_call and samples_per_call must be >= 1, got "
                         f"{prompts_per_call}, {samples_per_call}")
    P, M = prompts.num_prompts, num_samples
    path = None
    if cache_dir is not None:
        ident = fingerprint_of(
            fingerprint=fingerprint or {}, prompts=prompts.digest, M=M,
            T=sampler.max_new_tokens, key=np.asarray(jax.random.key_data(key)).tolist(),
            chunks=(prompts_per_call, samples_per_call))
        path = Path(cache_dir) / f"ref_rewards-{ident}.npz"
        if distributed.broadcast_json(path.exists()):
            cached = (np.load(path)["rewards_PxM"] if distributed.is_main_process()
                      else np.zeros((P, M), np.float32))
            return np.asarray(multihost_utils.broadcast_one_to_all(cached))
    rewards_PxM = np.zeros((P, M), np.float32)
    index_CxB = chunk_indices(P, prompts_per_call)
    work = [(c, s) for c in range(len(index_CxB)) for s in range(0, M, samples_per_call)]
    bar = tqdm(work, desc="reference samples", unit="chunk",
               disable=not progress or not distributed.is_main_process())
    for c, s in bar:
        if s == 0:
            tokens_BxL, mask_BxL, _ = prompts.batch(index_CxB[c])
        rows = slice(c * prompts_per_call, min((c + 1) * prompts_per_call, P))
        n = min(samples_per_call, M - s)
        chunk_key = jax.random.fold_in(jax.random.fold_in(key, c), s // samples_per_call)
        out = sampler.sample(ref_params, tokens_BxL, mask_BxL, chunk_key, n)
        r_BxN = to_host(reward(tokens_BxL, mask_BxL, out.tokens_BxNxT, out.mask_BxNxT))
        rewards_PxM[rows, s:s + n] = r_BxN[: rows.stop - rows.start]
    if path is not None and distributed.is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, rewards_PxM=rewards_PxM)
        os.replace(tmp, path)
    return rewards_PxM
