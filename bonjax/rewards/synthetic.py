"""A reward with no model behind it, for benchmarks and numerical checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["token_residue_reward"]


def token_residue_reward(prompt_tokens_BxP: jax.Array, prompt_mask_BxP: jax.Array,
                         tokens_BxSxT: jax.Array, mask_BxSxT: jax.Array) -> jax.Array:
    """``sum(token id mod 7)`` over each completion's real tokens, ``[B, S]`` float32.

    Traceable and nearly free, and it ranks a prompt's samples (so advantages, best and worst
    differ): for timing an update or comparing two numerical policies, where the reward's
    meaning does not matter.
    """
    del prompt_tokens_BxP, prompt_mask_BxP
    return jnp.sum(jnp.where(mask_BxSxT, tokens_BxSxT % 7, 0), axis=-1).astype(jnp.float32)
