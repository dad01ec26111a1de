"""This process's share of a prompt table, and the global prompt batches built from it.

Every process of a job makes the same calls. A call's global batch is a list of prompt indices
that every process computes alike (:func:`chunk_indices`, :func:`step_indices`); the batch's
sharding over the mesh decides which of its rows each process supplies
(:func:`bonjax.distributed.process_rows`). A process keeps the prompts of its rows of every call
it will make (:meth:`PromptShard.keep`), drops the rest of the table, and assembles each call's
arrays from its rows (:func:`bonjax.distributed.global_array`)::

    calls = [chunk_indices(P, 16), step_indices(P, 8, np.arange(steps))]
    prompts = PromptShard.keep(tokens_PxL, mask_PxL, calls, mesh)
    tokens_BxL, mask_BxL, index_B = prompts.batch(calls[1][0])

The global batches, hence the keys and the samples, are the same for any number of processes.
With one process the share is every prompt a call uses. A process whose batch rows always come
from the same positions keeps ``1 / processes`` of the table: for instance when the prompt count
is a multiple of the one batch size of every call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from bonjax import distributed
from bonjax import sharding as shd
from bonjax.fingerprint import table_digest

__all__ = ["PromptShard", "chunk_indices", "step_indices"]


def chunk_indices(num_prompts: int, per_call: int) -> np.ndarray:
    """``[C, per_call]``: the prompts in order, ``per_call`` per call; the last call repeats the
    table's last prompt to fill its batch (one compiled shape for every call)."""
    if num_prompts < 1 or per_call < 1:
        raise ValueError(f"need num_prompts >= 1 and per_call >= 1, got {num_prompts}, "
                         f"{per_call}")
    calls = -(-num_prompts // per_call)
    index = np.arange(calls * per_call).reshape(calls, per_call)
    return np.minimum(index, num_prompts - 1)


def step_indices(num_prompts: int, per_step: int, positions) -> np.ndarray:
    """``positions.shape + [per_step]``: the prompts of training steps at these data positions,
    ``(position * per_step + j) mod num_prompts`` (the table in order, wrapping around)."""
    if num_prompts < 1 or per_step < 1:
        raise ValueError(f"need num_prompts >= 1 and per_step >= 1, got {num_prompts}, "
                         f"{per_step}")
    positions = np.asarray(positions, np.int64)
    if positions.size and positions.min() < 0:
        raise ValueError(f"data positions must be >= 0, got {positions.min()}")
    return (positions[..., None] * per_step + np.arange(per_step)) % num_prompts


@dataclasses.dataclass(frozen=True, eq=False)
class PromptShard:
    """The prompts of a table of ``num_prompts`` that this process supplies to global batches.

    Attributes:
      num_prompts: P, the size of the whole table.
      index_R: the global indices of the R prompts held here (sorted, distinct).
      tokens_RxL, mask_RxL: their left-padded tokens and masks (rows of the table).
      digest: :func:`~bonjax.fingerprint.table_digest` of the whole table (tokens, mask).
      mesh, rules: where the batches live (``mesh=None``: the default device, one process).
    """

    num_prompts: int
    index_R: np.ndarray
    tokens_RxL: np.ndarray
    mask_RxL: np.ndarray
    digest: str
    mesh: Mesh | None = None
    rules: shd.ShardingRules = shd.ShardingRules()

    @classmethod
    def keep(cls, tokens_PxL: np.ndarray, mask_PxL: np.ndarray,
             calls: Iterable[np.ndarray] | None, mesh: Mesh | None,
             rules: shd.ShardingRules = shd.ShardingRules()) -> PromptShard:
        """Keeps, of the whole table, the prompts of this process's rows of ``calls``.

        Args:
          tokens_PxL, mask_PxL: the whole table (the same on every process).
          calls: arrays ``[C, B]`` of prompt indices, C global batches of B prompts each;
            None keeps every prompt.
          mesh, rules: the batches' mesh and sharding rules (``mesh=None``: one process).

        Raises:
          ValueError: for mismatched table arrays, indices outside the table, several processes
            without a mesh, or a mesh whose devices are not ordered by process.
        """
        tokens_PxL, mask_PxL = np.asarray(tokens_PxL), np.asarray(mask_PxL)
        if tokens_PxL.ndim != 2 or mask_PxL.shape != tokens_PxL.shape or not len(tokens_PxL):
            raise ValueError(f"need a non-empty table of tokens [P, L] and a mask of the same "
                             f"shape, got {tokens_PxL.shape} and {mask_PxL.shape}")
        if mesh is None and jax.process_count() > 1:
            raise ValueError(f"a job of {jax.process_count()} processes needs a mesh over every "
                             "process's devices to share its prompts")
        P, L = tokens_PxL.shape
        if calls is None:
            index_R = np.arange(P)
        else:
            needed = [np.zeros(0, np.int64)]
            for index_CxB in calls:
                index_CxB = np.asarray(index_CxB)
                if index_CxB.ndim != 2 or index_CxB.shape[1] < 1:
                    raise ValueError(f"calls must be [C, B] index arrays, got shape "
                                     f"{index_CxB.shape}")
                if index_CxB.size and not 0 <= index_CxB.min() <= index_CxB.max() < P:
                    raise ValueError(f"prompt indices [{index_CxB.min()}, {index_CxB.max()}] "
                                     f"lie outside the table of {P} prompts")
                B = index_CxB.shape[1]
                rows = (slice(None) if mesh is None else distributed.process_rows(
                    shd.batch_sharding(mesh, 2, rules, B), (B, L)))
                needed.append(index_CxB[:, rows].ravel())
            index_R = np.unique(np.concatenate(needed))
        return cls(P, index_R, tokens_PxL[index_R], mask_PxL[index_R],
                   table_digest(tokens_PxL, mask_PxL), mesh, rules)

    def _positions(self, index_B: np.ndarray) -> np.ndarray:
        """Where the prompts ``index_B`` lie in the rows held here (a ValueError if absent)."""
        where_B = np.searchsorted(self.index_R, index_B)
        clipped_B = np.minimum(where_B, len(self.index_R) - 1)
        missing = index_B[self.index_R[clipped_B] != index_B]
        if missing.size:
            raise ValueError(f"process {jax.process_index()} does not hold prompt "
                             f"{int(missing[0])}: PromptShard.keep was not given this call")
        return clipped_B

    def batch(self, index_B) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(tokens_BxL, mask_BxL, index_B)`` of the global batch of prompts ``index_B``
        (every process passes the same indices), sharded over the mesh's batch axes."""
        index_B = np.asarray(index_B, np.int64)
        if index_B.ndim != 1 or not index_B.size:
            raise ValueError(f"index_B must be a non-empty 1-D array, got shape {index_B.shape}")
        if not 0 <= index_B.min() <= index_B.max() < self.num_prompts:
            raise ValueError(f"prompt indices [{index_B.min()}, {index_B.max()}] lie outside the "
                             f"table of {self.num_prompts} prompts")
        B, L = index_B.size, self.tokens_RxL.shape[1]
        if self.mesh is None:
            where_B = self._positions(index_B)
            return (jnp.asarray(self.tokens_RxL[where_B]), jnp.asarray(self.mask_RxL[where_B]),
                    jnp.asarray(index_B.astype(np.int32)))
        sharding = shd.batch_sharding(self.mesh, 2, self.rules, B)
        rows = distributed.process_rows(sharding, (B, L))
        local_B = index_B[rows]
        where = self._positions(local_B)
        return (distributed.global_array(self.tokens_RxL[where], self.mesh, sharding, (B, L)),
                distributed.global_array(self.mask_RxL[where], self.mesh, sharding, (B, L)),
                distributed.global_array(local_B.astype(np.int32), self.mesh,
                                         shd.batch_sharding(self.mesh, 1, self.rules, B), (B,)))
