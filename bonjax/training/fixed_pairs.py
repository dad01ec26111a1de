"""BoNBoN, DPO, IPO and SFT-on-best trained on a fixed data set of best-vs-worst pairs.

The BoNBoN paper's system (Gui, Garbacea, Veitch; arXiv 2406.00832): for every training prompt
``x`` draw n samples of the reference (SFT) policy once, keep the best ``y_(n)`` and the worst
``y_(1)`` by reward, and train for several epochs on these fixed pairs with

    BoNBoN:  L = alpha [-log pi_theta(y_(n)|x)] + (1 - alpha) (h - 1/(2 beta*_n))^2,
             beta*_n = 1 / (2 (n-1) H_{n-1})
    DPO:     L = -log sigmoid(beta h)            IPO:  L = (h - 1/(2 beta))^2
    h      = log[pi_theta(y_(n))/pi_ref(y_(n))] - log[pi_theta(y_(1))/pi_ref(y_(1))]

(:mod:`bonjax.objectives.bonbon`, :mod:`bonjax.objectives.preference`; DPO and IPO also
length-normalised). SFT on the best sample is BoNBoN with ``alpha = 1``, or
:class:`~bonjax.training.sft.SupervisedFineTuning` on the best responses
(``ReferencePool.best_responses(n)``).

:class:`FixedPairs` is :class:`~bonjax.training.algorithms.PreferencePairs` with the sampling
replaced by a lookup: ``collect`` gathers the rows of the step's prompts (``prompt_index_B``)
from a :class:`PairTable` (``ReferencePool.pairs(n)``) given as ``Trainer(data=...)``, and the
loss is the same function (``preference_pair_loss``). The table is a pytree of arrays, so the
compiled rollout takes it as an argument, and the batch is laid out over the mesh like any other.

Not in :data:`bonjax.training.registry.METHODS`: that table maps each objective config to one
method that needs nothing but the policy, the reference and the reward (the experiment builds
every registered method's trainer alike), and BoNBoN's, DPO's and IPO's configs already map to
the online :class:`PreferencePairs`. A fixed-pair method needs a data set built beforehand (its
pool's N, key and n), so it is built by its constructor, ``FixedPairs(objective)``, with the table
passed to the trainer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh

from bonjax import distributed
from bonjax import objectives as obj
from bonjax.checks import check_int, is_concrete
from bonjax.training.algorithms import PairObjective, preference_pair_loss
from bonjax.training.protocol import Batch, fixed_data

__all__ = ["FixedPairs", "PairTable", "take_rows"]


def take_rows(table, prompt_index_B):
    """The rows ``prompt_index_B`` (global prompt indices) of every array of a table whose
    arrays have the prompts on axis 0; indices outside the table are a ``ValueError`` where they
    are concrete (under ``jit`` they cannot be checked)."""
    index_B = jnp.asarray(prompt_index_B)
    num_prompts = jax.tree.leaves(table)[0].shape[0]
    if is_concrete(index_B) and index_B.size and not (
            0 <= int(index_B.min()) and int(index_B.max()) < num_prompts):
        raise ValueError(f"prompt indices [{int(index_B.min())}, {int(index_B.max())}] lie "
                         f"outside the data set of {num_prompts} prompts")
    return jax.tree.map(lambda x: jnp.take(x, index_B, axis=0), table)


@struct.dataclass
class PairTable:
    """The best and the worst of n reference samples of every prompt of a table, best first.

    Attributes:
      tokens_Px2xT, mask_Px2xT: the two completions of each prompt (``[:, 0]`` the best
        ``y_(n)``, ``[:, 1]`` the worst ``y_(1)``) and their completion masks.
      logp_ref_Px2xT: ``pi_ref``'s per-token log-probabilities of them (the sampler's, at
        temperature 1), 0 where masked.
      reward_Px2: their rewards.
      n: how many reference draws each pair is the best and worst of (static).
    """

    tokens_Px2xT: jax.Array
    mask_Px2xT: jax.Array
    logp_ref_Px2xT: jax.Array
    reward_Px2: jax.Array
    n: int = struct.field(pytree_node=False)

    @classmethod
    def create(cls, tokens_Px2xT, mask_Px2xT, logp_ref_Px2xT, reward_Px2, n: int) -> PairTable:
        """A table of host arrays, checked: one ``[P, 2, T]`` shape, rewards ``[P, 2]``,
        ``n >= 2``, a completion token in every completion."""
        n = check_int("PairTable.n", n, minimum=2)
        tokens_Px2xT, mask_Px2xT = np.asarray(tokens_Px2xT, np.int32), np.asarray(mask_Px2xT, bool)
        logp_ref_Px2xT = np.asarray(logp_ref_Px2xT, np.float32)
        reward_Px2 = np.asarray(reward_Px2, np.float32)
        shape = tokens_Px2xT.shape
        if len(shape) != 3 or shape[1] != 2 or not shape[0] or mask_Px2xT.shape != shape or \
                logp_ref_Px2xT.shape != shape or reward_Px2.shape != shape[:2]:
            raise ValueError(f"a pair table needs tokens, mask and log-probs [P, 2, T] and rewards "
                             f"[P, 2] with P > 0, got {shape}, {mask_Px2xT.shape}, "
                             f"{logp_ref_Px2xT.shape}, {reward_Px2.shape}")
        empty_P = ~mask_Px2xT.any(-1).all(-1)
        if empty_P.any():
            raise ValueError(f"prompt {int(np.argmax(empty_P))} of the pair table has a completion "
                             "without any token")
        return cls(tokens_Px2xT, mask_Px2xT, logp_ref_Px2xT, reward_Px2, n)

    @property
    def num_prompts(self) -> int:
        return self.tokens_Px2xT.shape[0]

    def __call__(self, prompt_index_B) -> PairTable:
        """The pairs of the prompts ``prompt_index_B`` (global indices): a table of B rows."""
        return take_rows(self, prompt_index_B)

    def on_mesh(self, mesh: Mesh) -> PairTable:
        """The table as global arrays replicated over ``mesh`` (every process holds all of it):
        what a compiled rollout of a multi-process job takes."""
        return distributed.replicate(self, mesh)


@dataclasses.dataclass(frozen=True)
class FixedPairs:
    """BoNBoN, DPO or IPO on fixed best-vs-worst pairs: ``Trainer(data=PairTable)``.

    ``collect`` samples nothing (its key is unused): it gathers the step's pairs and their
    reference log-probs, and the loss is :class:`PreferencePairs`' on them. BoNBoN's
    ``beta*_n`` must belong to the table's n: ``BoNBoNConfig.n`` equal to ``PairTable.n``.

    Attributes:
      objective: ``BoNBoNConfig`` (``alpha = 1``: SFT on the best), ``DPOConfig`` or
        ``IPOConfig``.
    """

    objective: PairObjective

    uses_anchor = False
    anchor_eta = 0.0

    def __post_init__(self):
        if not isinstance(self.objective, obj.BoNBoNConfig | obj.DPOConfig | obj.IPOConfig):
            raise ValueError(f"FixedPairs takes BoNBoNConfig, DPOConfig or IPOConfig, got "
                             f"{self.objective!r}")

    def init_extras(self, lm, key) -> dict[str, Any]:
        return {}

    def collect(self, ctx, policy, extras, anchor, prompt_tokens_BxP, prompt_mask_BxP,
                prompt_index_B, key):
        pairs = fixed_data(ctx, PairTable, "FixedPairs")
        if isinstance(self.objective, obj.BoNBoNConfig) and self.objective.n != pairs.n:
            raise ValueError(f"BoNBoNConfig.n = {self.objective.n} must equal the n = {pairs.n} "
                             "the pairs are the best and worst of (beta*_n belongs to it)")
        rows = pairs(prompt_index_B)
        batch = Batch(prompt_tokens_BxP, prompt_mask_BxP, rows.tokens_Px2xT, rows.mask_Px2xT,
                      rows.logp_ref_Px2xT, rows.logp_ref_Px2xT)
        metrics = {"reward_best": rows.reward_Px2[:, 0].mean(),
                   "reward_worst": rows.reward_Px2[:, 1].mean()}
        return batch, metrics

    def loss(self, scores, batch, extras):
        return preference_pair_loss(self.objective, scores, batch)
