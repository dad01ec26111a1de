"""Reference CDFs: M reference samples per prompt, drawn and scored once, cached on disk.

vBoN's reward ``log F_hat(r(y))`` compares a policy sample's reward with the rewards of M
samples of ``pi_ref`` for the same prompt. Those never change during training, so they are
computed once per (reference model, reward, prompt set, M, T, seed), saved as ``.npz`` under a
name derived from that fingerprint, and reused across epochs and runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from tqdm.auto import tqdm

from bonjax import ecdf
from bonjax.sampling.sampler import Sampler

__all__ = ["ReferenceStore", "reference_rewards", "reference_store", "fingerprint_of"]


def fingerprint_of(**fields) -> str:
    """A short stable hash of JSON-able fields (identifies a cache entry)."""
    blob = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def reference_rewards(sampler: Sampler, ref_params: nnx.State, reward: Callable,
                      prompt_tokens_PxL: np.ndarray, prompt_mask_PxL: np.ndarray,
                      num_samples: int, key: jax.Array, *, prompts_per_call: int = 8,
                      samples_per_call: int = 32, cache_dir: str | os.PathLike | None = None,
                      fingerprint: dict | None = None, progress: bool = True) -> np.ndarray:
    """Rewards ``[P, M]`` of ``M = num_samples`` reference samples of each of P prompts.

    Prompt chunk ``c`` and sample chunk ``s`` draw with ``fold_in(fold_in(key, c), s)``, so a
    given (prompts_per_call, samples_per_call) always reproduces the same rewards. With
    ``cache_dir`` and a ``fingerprint`` (whatever identifies the reference model and reward),
    the result is loaded from, or saved to, ``cache_dir/ref_rewards-<hash>.npz``.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples (M) must be >= 1, got {num_samples}")
    P = prompt_tokens_PxL.shape[0]
    if P == 0:
        raise ValueError("no prompts to draw reference samples for")
    path = None
    if cache_dir is not None:
        ident = fingerprint_of(
            fingerprint=fingerprint or {}, prompts=hashlib.sha256(
                np.ascontiguousarray(prompt_tokens_PxL).tobytes()
                + np.ascontiguousarray(prompt_mask_PxL).tobytes()).hexdigest(),
            M=num_samples, T=sampler.max_new_tokens, key=np.asarray(
                jax.random.key_data(key)).tolist(), chunks=(prompts_per_call, samples_per_call))
        path = Path(cache_dir) / f"ref_rewards-{ident}.npz"
        if path.exists():
            return np.load(path)["rewards_PxM"]
    rewards_PxM = np.zeros((P, num_samples), np.float32)
    chunks = [(c, s) for c in range(0, P, prompts_per_call)
              for s in range(0, num_samples, samples_per_call)]
    bar = tqdm(chunks, desc="reference samples", disable=not progress, unit="chunk")
    for c, s in bar:
        rows = slice(c, min(c + prompts_per_call, P))
        n = min(samples_per_call, num_samples - s)
        tokens_BxL = jnp.asarray(_pad_rows(prompt_tokens_PxL[rows], prompts_per_call))
        mask_BxL = jnp.asarray(_pad_rows(prompt_mask_PxL[rows], prompts_per_call))
        chunk_key = jax.random.fold_in(jax.random.fold_in(key, c // prompts_per_call),
                                       s // samples_per_call)
        out = sampler.sample(ref_params, tokens_BxL, mask_BxL, chunk_key, n)
        r_BxN = np.asarray(reward(tokens_BxL, mask_BxL, out.tokens_BxNxT, out.mask_BxNxT))
        rewards_PxM[rows, s:s + n] = r_BxN[: rows.stop - rows.start]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, rewards_PxM=rewards_PxM)
        os.replace(tmp, path)
    return rewards_PxM


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """Repeats the last row so every call has the same (compiled) batch size."""
    if x.shape[0] == rows:
        return x
    return np.concatenate([x, np.repeat(x[-1:], rows - x.shape[0], axis=0)], axis=0)


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
