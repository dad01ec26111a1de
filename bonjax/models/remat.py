"""Rematerialisation of decoder blocks: what the backward pass keeps of each block's forward.

Without it, differentiating the model keeps every block's intermediate activations (norm
outputs, queries/keys/values, the ``[B, K, G, T, S]`` attention probabilities, the MLP's hidden
layer) until the backward pass reaches that block. ``jax.checkpoint`` around a block keeps only
what its policy saves and recomputes the rest from the block's input when the backward pass
needs it: a second forward pass of the block, for less memory.

Policies (the ``remat`` field of every decoder config):

- ``"none"``: no checkpoint; every intermediate is kept (the fastest backward pass).
- ``"block"``: ``nothing_saveable``; only each block's input survives the forward pass, the whole
  block is recomputed in the backward pass.
- ``"dots"``: ``dots_with_no_batch_dims_saveable``; the outputs of the matmuls against weights
  (projections, MLP) are kept, the attention logits and probabilities (matmuls with a batch
  dimension), norms and activations are recomputed.

Only the backward pass changes: a forward pass (sampling, scoring, inference) computes the same
values with or without it.

``jax.checkpoint`` keeps XLA from merging the recomputed forward with the original one (common
subexpression elimination would undo the remat) by optimisation barriers. XLA's CPU pipeline
removes those barriers (its ``cse_barrier_expander`` pass) before its CSE pass, so on CPU a
remat policy saves nothing unless the compile disables that pass: :func:`compiler_options`
gives the option, and the trainer's update and the memory benchmark compile with it.
"""

from __future__ import annotations

import jax
from flax import nnx

__all__ = ["REMAT_POLICIES", "check_remat", "call_block", "compiler_options"]

REMAT_POLICIES = {
    "none": None,
    "block": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def check_remat(remat: str) -> None:
    """Raises a ValueError naming ``remat`` and the allowed values if it is not a policy."""
    if remat not in REMAT_POLICIES:
        raise ValueError(f"remat must be one of {sorted(REMAT_POLICIES)}, got {remat!r}")


def call_block(block: nnx.Module, remat: str, *args):
    """``block(*args)``, under ``jax.checkpoint`` with the ``remat`` policy unless ``"none"``.

    The block is split into its graph definition (static: shapes, window, RoPE base) and its
    state (parameter arrays), and a pure function of ``(state, *args)`` is checkpointed, so the
    parameters are inputs of the checkpoint rather than constants closed over. ``args`` must
    be pytrees of arrays (None included), as the blocks' arguments are.
    """
    check_remat(remat)
    if remat == "none":
        return block(*args)
    graphdef, state = nnx.split(block)

    def run(state, *args):
        return nnx.merge(graphdef, state)(*args)

    return jax.checkpoint(run, policy=REMAT_POLICIES[remat])(state, *args)


def compiler_options(remat: str, platform: str) -> dict[str, str] | None:
    """XLA options under which the ``remat`` policy takes effect on ``platform`` (a
    ``jax.jit(..., compiler_options=...)`` argument): on CPU with a policy other than "none",
    the barrier-removing pass is disabled (see the module docstring); None otherwise."""
    check_remat(remat)
    if remat == "none" or platform != "cpu":
        return None
    return {"xla_disable_hlo_passes": "cse_barrier_expander"}
