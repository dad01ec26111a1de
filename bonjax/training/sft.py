"""Supervised fine-tuning on fixed (prompt, response) data, as a method of the trainer.

For the prompts ``x_b`` of a step and their fixed responses ``y_b``, the loss is the mean over
every response token of the batch of the negative log-likelihood,

    L = - sum_b sum_t m_bt log pi_theta(y_bt | x_b, y_b<t) / sum_b sum_t m_bt,

(:func:`bonjax.objectives.sft_token_mean_loss`). Only response tokens are predicted: the prompt
is the conditioning, scored by the trainer's teacher-forced scorer but never in the loss, and
padding after the response (mask 0) is neither in the loss nor, the model being causal, read by
it. The SFT stage before alignment (fine-tuning pi_ref on demonstrations) and the BoN-SFT
baseline (the best of n reference samples as responses: ``ReferencePool.best_responses(n)``)
are this method.

:class:`SupervisedFineTuning` reads the rows of the step's prompts (``prompt_index_B``) from a
:class:`ResponseTable` given as ``Trainer(data=...)``, so the trainer's checkpoints, resumable
loop and sharding serve the SFT stage unchanged. Not in :data:`bonjax.training.registry.METHODS`
for the reason :mod:`bonjax.training.fixed_pairs` gives: it needs a data set, which the table's
methods do not; it is built by its constructor, ``SupervisedFineTuning()``.
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
from bonjax.training.fixed_pairs import take_rows
from bonjax.training.protocol import Batch, fixed_data

__all__ = ["ResponseTable", "SupervisedFineTuning"]


@struct.dataclass
class ResponseTable:
    """One fixed response per prompt of a table.

    Attributes:
      tokens_PxT: the response tokens of each prompt (padding after the response).
      mask_PxT: the response mask: True on every response token (EOS included), False on
        padding.
    """

    tokens_PxT: jax.Array
    mask_PxT: jax.Array

    @classmethod
    def create(cls, tokens_PxT, mask_PxT) -> ResponseTable:
        """A table of host arrays, checked: one ``[P, T]`` shape, P > 0, a token in every
        response."""
        tokens_PxT, mask_PxT = np.asarray(tokens_PxT, np.int32), np.asarray(mask_PxT, bool)
        if tokens_PxT.ndim != 2 or not tokens_PxT.shape[0] or mask_PxT.shape != tokens_PxT.shape:
            raise ValueError(f"a response table needs tokens and a mask [P, T] with P > 0, got "
                             f"{tokens_PxT.shape} and {mask_PxT.shape}")
        empty_P = ~mask_PxT.any(-1)
        if empty_P.any():
            raise ValueError(f"the response of prompt {int(np.argmax(empty_P))} has no token")
        return cls(tokens_PxT, mask_PxT)

    @property
    def num_prompts(self) -> int:
        return self.tokens_PxT.shape[0]

    def __call__(self, prompt_index_B) -> ResponseTable:
        """The responses of the prompts ``prompt_index_B`` (global indices): a table of B rows."""
        return take_rows(self, prompt_index_B)

    def on_mesh(self, mesh: Mesh) -> ResponseTable:
        """The table as global arrays replicated over ``mesh``."""
        return distributed.replicate(self, mesh)


@dataclasses.dataclass(frozen=True)
class SupervisedFineTuning:
    """SFT on fixed responses: ``Trainer(data=ResponseTable)``; the batch holds one completion
    per prompt (``S = 1``), the response, and nothing is sampled (the key is unused).

    The batch's ``logp_old`` and ``logp_ref`` are zeros: the loss reads neither, and no reference
    policy enters it.
    """

    uses_anchor = False
    anchor_eta = 0.0

    def init_extras(self, lm, key) -> dict[str, Any]:
        return {}

    def collect(self, ctx, policy, extras, anchor, prompt_tokens_BxP, prompt_mask_BxP,
                prompt_index_B, key):
        rows = fixed_data(ctx, ResponseTable, "SupervisedFineTuning")(prompt_index_B)
        tokens_Bx1xT, mask_Bx1xT = rows.tokens_PxT[:, None], rows.mask_PxT[:, None]
        unused_Bx1xT = jnp.zeros(tokens_Bx1xT.shape, jnp.float32)
        batch = Batch(prompt_tokens_BxP, prompt_mask_BxP, tokens_Bx1xT, mask_Bx1xT,
                      unused_Bx1xT, unused_Bx1xT)
        return batch, {"response_tokens": mask_Bx1xT.sum(-1).mean()}

    def loss(self, scores, batch, extras):
        return obj.sft_token_mean_loss(scores.logp_BxNxT[:, 0], batch.mask_BxSxT[:, 0]), {}
