"""The training state: everything a step reads and writes, as one pytree.

A checkpoint of a ``TrainState`` plus the data position is all a killed run needs to continue
exactly as an uninterrupted one would: the RNG key lives in the state and is split inside the
step, never drawn from host-side randomness.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from bonjax.models.lora import apply_lora

__all__ = ["ADAPTERS", "TrainState", "merge_params", "policy_params", "split_trainable"]

# The extra that holds LoRA adapters (``bonjax.models.lora``), when the policy has them.
ADAPTERS = "lora"


@struct.dataclass
class TrainState:
    """Step counter, trainable and frozen parameters, optimiser state, RNG key, extras.

    ``extra`` holds the method's trainable extras (a value head; ``Method.init_extras``), a dict
    of pytrees that train with the policy. The optimiser state is always over the one trainable
    tree ``{"params": params, **extra}`` (``update.trainable_tree``), whatever the method.
    ``anchor`` holds an untrained copy of the trainable parameters that follows the policy by
    EMA (BOND, J-BOND), or None.
    """

    step: jax.Array
    params: nnx.State
    frozen: nnx.State
    opt_state: optax.OptState
    key: jax.Array
    extra: dict[str, Any] = struct.field(default_factory=dict)  # LoRA adapters: ADAPTERS
    anchor: nnx.State | None = None

    @classmethod
    def create(cls, params: nnx.State, frozen: nnx.State, tx: optax.GradientTransformation,
               key: jax.Array, extra: dict[str, Any] | None = None,
               anchor: nnx.State | None = None) -> TrainState:
        extra = dict(extra or {})
        if "params" in extra:
            raise ValueError('an extra may not be named "params" (the policy\'s parameters)')
        return cls(step=jnp.zeros((), jnp.int32), params=params, frozen=frozen,
                   opt_state=tx.init({"params": params, **extra}), key=jax.random.key_data(key)
                   if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key,
                   extra=extra, anchor=anchor)

    def full_params(self) -> nnx.State:
        """The policy's parameters as the model takes them (adapters merged)."""
        return policy_params(self.params, self.frozen, self.extra)


def split_trainable(params: nnx.State, is_trainable) -> tuple[nnx.State, nnx.State]:
    """Splits ``params`` into (trainable, frozen) states by a path predicate."""
    flat = nnx.to_flat_state(params)
    train = [(p, v) for p, v in flat if is_trainable(p)]
    frozen = [(p, v) for p, v in flat if not is_trainable(p)]
    return nnx.from_flat_state(train), nnx.from_flat_state(frozen)


def merge_params(trainable: nnx.State, frozen: nnx.State) -> nnx.State:
    return nnx.merge_state(trainable, frozen)


def policy_params(params: nnx.State, frozen: nnx.State, extra: dict[str, Any]) -> nnx.State:
    """The policy's full parameters: trainable and frozen merged, with the LoRA adapters of
    ``extra`` (if any) merged into their weights. The one place the step, the rollout and
    evaluation get the policy from."""
    return apply_lora(merge_params(params, frozen), extra.get(ADAPTERS))
