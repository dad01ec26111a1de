"""The optimiser update of a training step, guarded against non-finite losses and gradients.

Inside a jitted step, after the gradients are computed::

    state, update_metrics = apply_updates(state, grads, tx, loss)

A step whose loss or any gradient entry is NaN or infinite leaves the parameters and the
optimiser state exactly as they were, but still advances ``state.step``: the step counter and the
data position stay in lockstep, so a resumed run replays the same batches. The decision is an
array (``jnp.where`` per leaf), never a host sync.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from bonjax.training.state import TrainState

__all__ = ["apply_updates", "trainable_tree"]


def trainable_tree(state: TrainState) -> dict[str, Any]:
    """The pytree the optimiser of ``state`` covers (the structure ``grads`` must have):
    ``{"params": state.params, **state.extra}`` for every method (``TrainState.create``), so a
    new kind of trainable leaf (a value head, an adapter) is one more entry, not a new layout.
    """
    return {"params": state.params, **state.extra}


def _all_finite(tree: Any) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.bool_(True)
    return jnp.stack([jnp.isfinite(leaf).all() for leaf in leaves]).all()


def apply_updates(state: TrainState, grads: Any, tx: optax.GradientTransformation,
                  loss: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser step, skipped when ``loss`` or any gradient is not finite.

    Args:
      state: the current state; ``state.opt_state`` was made by ``tx`` (``TrainState.create``).
      grads: gradients with the structure of :func:`trainable_tree` of ``state``.
      tx: the optimiser ``state.opt_state`` belongs to.
      loss: the scalar loss the gradients are of.

    Returns:
      The next state (``step + 1``; parameters, extras and optimiser state updated, or unchanged
      when skipped) and metrics: ``grad_norm`` (the global L2 norm ``sqrt(sum_i g_i^2)`` of
      ``grads``, as computed, so NaN or inf on a skipped step) and ``skipped`` (int32, 1 when the
      update was skipped).
    """
    trainable = trainable_tree(state)
    expected, got = jax.tree.structure(trainable), jax.tree.structure(grads)
    if expected != got:
        raise ValueError(f'grads must have the structure {{"params": grads, **extra_grads}}; got '
                         f"structure {got}, expected {expected}")
    if jnp.ndim(loss) != 0:
        raise ValueError(f"loss must be a scalar, got shape {jnp.shape(loss)}")

    finite = jnp.isfinite(loss) & _all_finite(grads)
    updates, new_opt_state = tx.update(grads, state.opt_state, trainable)
    new_trainable = optax.apply_updates(trainable, updates)

    def keep_if_finite(new, old):
        return jnp.where(finite, new, old)

    new_trainable = jax.tree.map(keep_if_finite, new_trainable, trainable)
    new_opt_state = jax.tree.map(keep_if_finite, new_opt_state, state.opt_state)
    extra = {name: new_trainable[name] for name in state.extra}
    new_state = state.replace(step=state.step + 1, params=new_trainable["params"], extra=extra,
                              opt_state=new_opt_state)
    metrics = {"grad_norm": optax.tree.norm(grads),
               "skipped": jnp.logical_not(finite).astype(jnp.int32)}
    return new_state, metrics
