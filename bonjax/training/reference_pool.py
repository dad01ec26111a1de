"""The fixed best-and-worst data set: one pool of N reference samples per prompt, drawn once.

For each of P prompts ``x`` the pool holds N samples ``y_1..y_N`` of ``pi_ref`` (tokens
``[P, N, T]``, completion masks, ``pi_ref``'s per-token log-probabilities, which the sampler
reports at temperature 1) and their rewards ``r_PxN``. For each n of a tuple ``ns`` (every
``n <= N``) it names the best ``y_(n)`` and the worst ``y_(1)`` among the FIRST n draws:

    best_n(x)  = argmax_{i < n} r(x, y_i),    worst_n(x) = argmin_{i < n} r(x, y_i),

with :func:`bonjax.bon.select_best_and_worst`'s rule: NaN ranks below every reward, and among
tied rewards the LOWEST DRAW INDEX wins, for the best and the worst alike (all n rewards tied:
best = worst = draw 0, a pair that carries no preference). The N draws are i.i.d., so the first
n are n i.i.d. draws, and each n's pair is a best-and-worst pair of n reference samples (the
pairs of different n are nested, hence dependent across n): every n from 2 to N costs one
sampling pass. :meth:`ReferencePool.pairs` gives a :class:`~bonjax.training.fixed_pairs.PairTable`
(BoNBoN, DPO, IPO on fixed pairs), :meth:`ReferencePool.best_responses` a
:class:`~bonjax.training.sft.ResponseTable` (SFT on the best of n).

One pipeline draws it, :func:`bonjax.training.reference.reference_chunks` (prompt chunk ``c``
and sample chunk ``s`` draw with ``fold_in(fold_in(key, c), s)``), so its rewards equal
:func:`~bonjax.training.reference.reference_rewards`' for the same key and chunk sizes, and
any number of processes, each with its :class:`~bonjax.prompt_shard.PromptShard` of the table,
draws the same pool. It is saved once as ``cache_dir/reference_pool-<hash>.npz``, the hash of
its :class:`PoolFingerprint` (reference model, reward, prompt-table digest, N, T, key, chunk
sizes), and reused (or under a file name the caller gives, which several runs can share); the
file also stores the fingerprint, and a pool drawn from another reference policy or reward (or
other prompts, N, T, key) is refused with an error naming each field that differs and both
values (:meth:`PoolFingerprint.check_file` checks a file before any work is done).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from bonjax import bon, distributed
from bonjax.checks import check_int
from bonjax.fingerprint import fingerprint_of
from bonjax.prompt_shard import PromptShard
from bonjax.sampling.sampler import Sampler
from bonjax.sampling.strategies import Temperature
from bonjax.training.fixed_pairs import PairTable
from bonjax.training.reference import check_chunk_sizes, reference_chunks
from bonjax.training.sft import ResponseTable

__all__ = [
    "PoolFingerprint",
    "ReferencePool",
    "reference_pool",
    "reference_pool_of_shard",
]

_ARRAYS = ("tokens_PxNxT", "mask_PxNxT", "logp_PxNxT", "reward_PxN")


@dataclasses.dataclass(frozen=True)
class PoolFingerprint:
    """What a pool was drawn from: two pools with equal fingerprints hold the same samples.

    Attributes:
      model: names the reference policy (a checkpoint path or hub id, e.g. ``config.model``).
      reward: names the reward.
      prompts: :func:`~bonjax.fingerprint.table_digest` of the prompt table (tokens, mask).
      num_samples: N, reference samples per prompt.
      max_new_tokens: T, tokens per sample.
      key: the sampling key's data.
      chunks: ``(prompts_per_call, samples_per_call)``: each chunk's key depends on them.
    """

    model: str
    reward: str
    prompts: str
    num_samples: int
    max_new_tokens: int
    key: tuple[int, ...]
    chunks: tuple[int, int]

    @classmethod
    def of(cls, sampler: Sampler, prompts: PromptShard, num_samples: int, key: jax.Array, *,
           model_id: str, reward_id: str, prompts_per_call: int,
           samples_per_call: int) -> PoolFingerprint:
        """The fingerprint of the pool :func:`reference_pool_of_shard` draws with these
        arguments."""
        return cls(str(model_id), str(reward_id), prompts.digest, int(num_samples),
                   int(sampler.max_new_tokens),
                   tuple(int(k) for k in np.asarray(jax.random.key_data(key)).ravel()),
                   (int(prompts_per_call), int(samples_per_call)))

    def to_json(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, fields: dict) -> PoolFingerprint:
        names = {f.name for f in dataclasses.fields(cls)}
        if set(fields) != names:
            raise ValueError(f"a pool fingerprint has the fields {sorted(names)}, got "
                             f"{sorted(fields)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

    @property
    def file_name(self) -> str:
        """``reference_pool-<16 hex digits>.npz``: the cache file's name."""
        return f"reference_pool-{fingerprint_of(**self.to_json())}.npz"

    @classmethod
    def read(cls, path: str | os.PathLike) -> PoolFingerprint:
        """The fingerprint stored in the pool file ``path`` (its arrays are not read)."""
        with np.load(path) as stored:
            if "fingerprint" not in stored.files:
                raise ValueError(f"{path} holds no reference pool: it lacks a fingerprint")
            return cls.from_json(json.loads(str(stored["fingerprint"])))

    def check_file(self, path: str | os.PathLike) -> None:
        """Raises unless the pool file ``path``, if it exists, was drawn from this fingerprint's
        inputs: the ``ValueError`` names every field that differs with both values. A check
        that reads no arrays, to refuse another reference policy's or reward's pool before any
        work that the pool would be used for."""
        if not Path(path).exists():
            return
        saved = PoolFingerprint.read(path)
        if saved != self:
            raise ValueError(_mismatch(path, saved, self))

    def differences(self, other: PoolFingerprint) -> dict[str, tuple]:
        """``field -> (this value, other value)`` for every field where the two differ."""
        return {f.name: (getattr(self, f.name), getattr(other, f.name))
                for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(other, f.name)}


def _mismatch(path, saved: PoolFingerprint, expected: PoolFingerprint) -> str:
    return (f"{path} holds a reference pool drawn from other inputs than expected: "
            + "; ".join(f"{name}: saved {a!r}, expected {b!r}"
                        for name, (a, b) in saved.differences(expected).items()))


def _check_ns(ns: Sequence[int], num_samples: int) -> tuple[int, ...]:
    if isinstance(ns, int) or not len(ns):
        raise ValueError(f"ns must be a non-empty tuple of sample counts n, got {ns!r}")
    ns = tuple(check_int("n", n) for n in ns)
    for n in ns:
        if n > num_samples:
            raise ValueError(f"n = {n} exceeds the pool's N = {num_samples} reference samples "
                             "per prompt: the best and worst of n need n <= N draws")
    return ns


@dataclasses.dataclass(frozen=True, eq=False)
class ReferencePool:
    """N reference samples of each of P prompts, their rewards, and for each n of ``ns`` the
    best and the worst among the first n draws (host numpy arrays; see the module docstring).

    Attributes:
      tokens_PxNxT, mask_PxNxT: the samples (``pad_id`` after the first EOS) and their
        completion masks (True up to and including the first EOS).
      logp_PxNxT: ``pi_ref``'s per-token log-probabilities of them, 0 where masked.
      reward_PxN: their rewards.
      fingerprint: what the pool was drawn from.
      ns: the sample counts n whose best and worst are named, each <= N.
      best_PxK, worst_PxK: int32 draw indices (in ``[0, ns[k])``) of the best and the worst of
        the first ``ns[k]`` draws of every prompt.
    """

    tokens_PxNxT: np.ndarray
    mask_PxNxT: np.ndarray
    logp_PxNxT: np.ndarray
    reward_PxN: np.ndarray
    fingerprint: PoolFingerprint
    ns: tuple[int, ...]
    best_PxK: np.ndarray
    worst_PxK: np.ndarray

    @classmethod
    def create(cls, tokens_PxNxT, mask_PxNxT, logp_PxNxT, reward_PxN,
               fingerprint: PoolFingerprint, ns: Sequence[int]) -> ReferencePool:
        """The pool of these samples, the best and worst of the first n draws computed for
        each n of ``ns`` (a ``ValueError`` naming n and N for an ``n > N``)."""
        tokens_PxNxT = np.asarray(tokens_PxNxT, np.int32)
        mask_PxNxT = np.asarray(mask_PxNxT, bool)
        logp_PxNxT = np.asarray(logp_PxNxT, np.float32)
        reward_PxN = np.asarray(reward_PxN, np.float32)
        shape = tokens_PxNxT.shape
        if len(shape) != 3 or mask_PxNxT.shape != shape or logp_PxNxT.shape != shape or \
                reward_PxN.shape != shape[:2] or not shape[0] or not shape[1]:
            raise ValueError(f"a pool needs tokens, masks and log-probs [P, N, T] and rewards "
                             f"[P, N] with P, N > 0, got {shape}, {mask_PxNxT.shape}, "
                             f"{logp_PxNxT.shape}, {reward_PxN.shape}")
        ns = _check_ns(ns, shape[1])
        best_K, worst_K = zip(*(bon.select_best_and_worst(jnp.asarray(reward_PxN[:, :n]))
                                for n in ns), strict=True)
        return cls(tokens_PxNxT, mask_PxNxT, logp_PxNxT, reward_PxN, fingerprint, ns,
                   np.stack([np.asarray(b) for b in best_K], axis=1),
                   np.stack([np.asarray(w) for w in worst_K], axis=1))

    @property
    def num_prompts(self) -> int:
        return self.tokens_PxNxT.shape[0]

    @property
    def num_samples(self) -> int:
        return self.tokens_PxNxT.shape[1]

    def best_and_worst(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw indices ``(best_P, worst_P)`` of the best and the worst of the first n draws."""
        if n not in self.ns:
            raise ValueError(f"the pool names the best and worst of the first n draws for n in "
                             f"{self.ns}, not n = {n!r} (build it with n in ns)")
        k = self.ns.index(n)
        return self.best_PxK[:, k], self.worst_PxK[:, k]

    def pairs(self, n: int) -> PairTable:
        """The best and the worst of the first n draws of every prompt, best first."""
        best_P, worst_P = self.best_and_worst(n)
        index_Px2 = np.stack([best_P, worst_P], axis=1)

        def pick(x_PxNx):
            return np.take_along_axis(x_PxNx, index_Px2.reshape(
                index_Px2.shape + (1,) * (x_PxNx.ndim - 2)), axis=1)

        return PairTable.create(pick(self.tokens_PxNxT), pick(self.mask_PxNxT),
                                pick(self.logp_PxNxT), pick(self.reward_PxN), n)

    def best_responses(self, n: int) -> ResponseTable:
        """The best of the first n draws of every prompt as its response (SFT on BoN_n)."""
        best_P, _ = self.best_and_worst(n)
        rows_P = np.arange(self.num_prompts)
        return ResponseTable.create(self.tokens_PxNxT[rows_P, best_P],
                                    self.mask_PxNxT[rows_P, best_P])

    def save(self, path: str | os.PathLike) -> None:
        """Writes the pool to ``path`` (``.npz``; a temporary file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{name: getattr(self, name) for name in _ARRAYS},
                 fingerprint=np.array(json.dumps(self.fingerprint.to_json(), sort_keys=True)),
                 ns_K=np.asarray(self.ns, np.int32), best_PxK=self.best_PxK,
                 worst_PxK=self.worst_PxK)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, fingerprint: PoolFingerprint | None = None,
             ns: Sequence[int] | None = None) -> ReferencePool:
        """The pool saved at ``path``, its best and worst named for ``ns`` (None: the saved ns).

        Raises:
          ValueError: when ``fingerprint`` is given and the saved pool's differs (another
            reference policy, reward, prompt table, N, T, key or chunking), naming every field
            that differs with both values; or when the file holds no pool.
        """
        with np.load(path) as stored:
            missing = sorted(set(_ARRAYS + ("fingerprint", "ns_K")) - set(stored.files))
            if missing:
                raise ValueError(f"{path} holds no reference pool: it lacks {missing}")
            saved = PoolFingerprint.from_json(json.loads(str(stored["fingerprint"])))
            if fingerprint is not None and saved != fingerprint:
                raise ValueError(_mismatch(path, saved, fingerprint))
            arrays = {name: stored[name] for name in _ARRAYS}
            ns = tuple(int(n) for n in stored["ns_K"]) if ns is None else ns
        return cls.create(**arrays, fingerprint=saved, ns=ns)


def reference_pool(sampler: Sampler, ref_params: nnx.State, reward: Callable,
                   prompt_tokens_PxL: np.ndarray, prompt_mask_PxL: np.ndarray,
                   num_samples: int, key: jax.Array, **options) -> ReferencePool:
    """The pool of ``N = num_samples`` reference samples of each of P prompts, in one process:
    :func:`reference_pool_of_shard` of a shard that holds every prompt, with the same keyword
    ``options`` (``ns``, ``model_id``, ``reward_id``, chunk sizes, cache, progress bar)."""
    prompts = PromptShard.keep(prompt_tokens_PxL, prompt_mask_PxL, None, None)
    return reference_pool_of_shard(sampler, ref_params, reward, prompts, num_samples, key,
                                   **options)


def reference_pool_of_shard(sampler: Sampler, ref_params: nnx.State, reward: Callable,
                            prompts: PromptShard, num_samples: int, key: jax.Array, *,
                            ns: Sequence[int], model_id: str, reward_id: str,
                            prompts_per_call: int = 8, samples_per_call: int = 32,
                            cache_dir: str | os.PathLike | None = None,
                            cache_file: str | os.PathLike | None = None,
                            progress: bool = True) -> ReferencePool:
    """The pool of ``N = num_samples`` reference samples of every prompt of the table.

    Args:
      sampler: samples ``pi_ref`` at temperature 1 (``Temperature(1.0)``: its log-probs are
        then ``pi_ref``'s); ``max_new_tokens`` is T.
      ref_params: the reference policy's parameters.
      reward: ``reward(prompt_tokens_BxP, prompt_mask_BxP, tokens_BxSxT, mask_BxSxT)``.
      prompts: this process's share of the prompt table.
      num_samples: N.
      key: the sampling key; chunk ``(c, s)`` draws with ``fold_in(fold_in(key, c), s)``.
      ns: the n (each ``<= N``) whose best and worst of the first n draws the pool names.
      model_id, reward_id: names of the reference policy and the reward for the fingerprint.
      prompts_per_call, samples_per_call: the chunk sizes.
      cache_dir: with a directory, the pool is read from ``cache_dir/<fingerprint.file_name>``
        if there (no sampling), else drawn and saved there.
      cache_file: a file instead (not with ``cache_dir``): read from it if it exists, refused
        if it holds a pool of other inputs, else drawn and saved there; a pool that several
        runs name share.
      progress: a progress bar on process 0.

    A collective: every process of the job calls it with its own share of the same table; only
    process 0 reads or writes the cache, and every process gets the whole pool.

    Raises:
      ValueError: for an ``n > N`` (naming both), a sampler at another temperature, bad chunk
        sizes, or a cache file of the same name holding a pool of other inputs.
    """
    check_chunk_sizes(num_samples, prompts_per_call, samples_per_call)
    ns = _check_ns(ns, num_samples)
    if sampler.method != Temperature(1.0):
        raise ValueError(f"the pool's log-probs are pi_ref's only when sampled at "
                         f"Temperature(1.0), got {sampler.method!r}")
    fingerprint = PoolFingerprint.of(sampler, prompts, num_samples, key, model_id=model_id,
                                     reward_id=reward_id, prompts_per_call=prompts_per_call,
                                     samples_per_call=samples_per_call)
    P, N, T = prompts.num_prompts, num_samples, sampler.max_new_tokens
    if cache_dir is not None and cache_file is not None:
        raise ValueError(f"give cache_dir ({cache_dir}) or cache_file ({cache_file}), not both")
    path = Path(cache_file) if cache_file is not None else (
        None if cache_dir is None else Path(cache_dir) / fingerprint.file_name)
    if path is not None and distributed.broadcast_json(path.exists()):
        return _load_on_every_process(path, fingerprint, ns, (P, N, T))
    tokens_PxNxT = np.zeros((P, N, T), np.int32)
    mask_PxNxT = np.zeros((P, N, T), bool)
    logp_PxNxT = np.zeros((P, N, T), np.float32)
    reward_PxN = np.zeros((P, N), np.float32)
    for chunk in reference_chunks(sampler, ref_params, reward, prompts, N, key,
                                  prompts_per_call=prompts_per_call,
                                  samples_per_call=samples_per_call, progress=progress):
        at, k, out = (chunk.rows, chunk.samples), chunk.num_rows, chunk.sample
        tokens_PxNxT[at] = distributed.to_host(out.tokens_BxNxT)[:k]
        mask_PxNxT[at] = distributed.to_host(out.mask_BxNxT)[:k]
        logp_PxNxT[at] = distributed.to_host(out.logp_BxNxT)[:k]
        reward_PxN[at] = chunk.reward_BxN[:k]
    pool = ReferencePool.create(tokens_PxNxT, mask_PxNxT, logp_PxNxT, reward_PxN, fingerprint,
                                ns)
    if path is not None and distributed.is_main_process():
        pool.save(path)
    return pool


def _load_on_every_process(path: Path, fingerprint: PoolFingerprint, ns: tuple[int, ...],
                           shape_PxNxT: tuple[int, int, int]) -> ReferencePool:
    """Process 0 reads (and checks) the cached pool; every process gets it, or the error."""
    pool, error = None, None
    if distributed.is_main_process():
        try:
            pool = ReferencePool.load(path, fingerprint, ns)
        except ValueError as e:
            error = str(e)
    error = distributed.broadcast_json(error)
    if error is not None:
        raise ValueError(error)
    if jax.process_count() == 1:
        return pool
    P, N, T = shape_PxNxT
    empty = {"tokens_PxNxT": np.zeros((P, N, T), np.int32),
             "mask_PxNxT": np.zeros((P, N, T), bool),
             "logp_PxNxT": np.zeros((P, N, T), np.float32),
             "reward_PxN": np.zeros((P, N), np.float32)}
    arrays = empty if pool is None else {name: getattr(pool, name) for name in _ARRAYS}
    arrays = multihost_utils.broadcast_one_to_all(arrays)
    return ReferencePool.create(**{k: np.asarray(v) for k, v in arrays.items()},
                                fingerprint=fingerprint, ns=ns)
