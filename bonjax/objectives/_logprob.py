"""Shared pieces of the objectives: fp32 log-probabilities, masked sequence sums, shape checks.

Scalar checks (probabilities, positive numbers) are :mod:`bonjax.checks`'s.

Every objective reads per-token log-probabilities ``logp_...xT`` and a completion mask
``mask_...xT`` (bool or 0/1; the EOS token is inside the mask, padding after it is not). All sums
over tokens run in float32 (or float64 when the inputs are float64) and replace padded entries
with zero *before* any arithmetic, so padding values, even ``inf`` or ``nan``, change neither the
value nor the gradient of a loss.

Empty completions. Outside ``jit`` (concrete masks) a sequence whose mask is all zero raises a
``ValueError`` naming its index. Under ``jit`` the mask is abstract and cannot be checked; there
an empty completion is a sequence of zero tokens: its log-probability and KL sums are 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from bonjax.checks import is_concrete

__all__ = [
    "token_logprobs", "masked_sum", "sequence_logprob", "sft_loss", "sft_token_mean_loss"]


def as_float(x: jax.Array) -> jax.Array:
    """``x`` in float32, or in its own dtype when that is wider (float64 under x64)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def as_mask(mask: jax.Array) -> jax.Array:
    """A bool mask from a bool or 0/1 array."""
    mask = jnp.asarray(mask)
    return mask if mask.dtype == jnp.bool_ else mask != 0


def check_inputs(
    tokens: Mapping[str, jax.Array],
    sequences: Mapping[str, jax.Array] | None = None,
    *,
    mask_name: str | None = None,
    sequence_ndim: int | None = None,
) -> None:
    """Raise ``ValueError`` early on inconsistent shapes, an empty batch or empty completions.

    Args:
      tokens: per-token arrays ``name -> x_...xT``; all must share one shape of rank >= 2.
      sequences: per-sequence arrays ``name -> x_...``; each must equal the token shape minus T.
      mask_name: which entry of ``tokens`` is the completion mask (checked for empty rows when
        concrete).
      sequence_ndim: the required number of leading (sequence) axes, e.g. 1 for ``[B, T]``.
    """
    sequences = sequences or {}
    items = [(name, jnp.shape(x)) for name, x in tokens.items()]
    shape = items[0][1]
    if any(s != shape for _, s in items):
        listed = ", ".join(f"{n} {s}" for n, s in items)
        raise ValueError(f"per-token inputs must have one shape, got {listed}")
    if len(shape) < 2:
        raise ValueError(
            f"per-token inputs need a batch and a time axis, got {items[0][0]} {shape}"
        )
    if sequence_ndim is not None and len(shape) != sequence_ndim + 1:
        raise ValueError(f"{items[0][0]} must have {sequence_ndim + 1} axes, got shape {shape}")
    lead = shape[:-1]
    for name, x in sequences.items():
        if jnp.shape(x) != lead:
            raise ValueError(
                f"{name} must have shape {lead} to match {items[0][0]} {shape}, got {jnp.shape(x)}"
            )
    if int(np.prod(lead)) == 0:
        raise ValueError(f"empty batch: {items[0][0]} has shape {shape}")
    if shape[-1] == 0:
        raise ValueError(f"no time steps: {items[0][0]} has shape {shape}")
    if mask_name is not None:
        check_has_completion(tokens[mask_name], mask_name)


def check_has_completion(mask: jax.Array, name: str = "mask") -> None:
    """Raise ``ValueError`` if some sequence of a concrete mask has no completion token."""
    if not is_concrete(mask):
        return
    empty = ~(np.asarray(mask) != 0).any(axis=-1)
    if empty.any():
        where = [tuple(int(i) for i in idx) for idx in np.argwhere(empty)[:5]]
        raise ValueError(
            f"{name}: {int(empty.sum())} sequence(s) without any completion token, "
            f"first at index {where}"
        )


def token_logprobs(logits_BxTxV: jax.Array, tokens_BxT: jax.Array,
                   temperature: float = 1.0) -> jax.Array:
    """Per-token log-probabilities ``log softmax(logits / temperature)[tokens]`` in float32.

    ``logits_BxTxV[..., t, :]`` must be the logits that predict ``tokens_BxT[..., t]`` (already
    shifted by the caller); their leading axes may broadcast against the tokens' (one prompt's
    logits for its N first tokens). Computed as the picked logit minus the logsumexp, so the
    ``[..., V]`` log-softmax is never formed (Gemma's V is 262,144). The one implementation: the
    scorer (every log pi of training) and the objectives use it.
    """
    lead, tokens_shape = jnp.shape(logits_BxTxV)[:-1], jnp.shape(tokens_BxT)
    try:
        fits = jnp.broadcast_shapes(lead, tokens_shape) == tuple(tokens_shape)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"logits_BxTxV {jnp.shape(logits_BxTxV)} must be tokens_BxT "
                         f"{tokens_shape} (or broadcast to it) plus a vocabulary axis")
    z_BxTxV = as_float(logits_BxTxV) / temperature
    picked_BxT = jnp.take_along_axis(z_BxTxV, tokens_BxT[..., None], axis=-1)[..., 0]
    return picked_BxT - jax.nn.logsumexp(z_BxTxV, axis=-1)


def masked_sum(x_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    """``sum_t mask_t * x_t`` over the last axis in float32; padded entries are never read."""
    return jnp.where(as_mask(mask_BxT), as_float(x_BxT), 0.0).sum(axis=-1)


def sequence_logprob(logp_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    """``log pi(y|x) = sum_t log pi(y_t | x, y_<t)`` over completion tokens (a sum, not a mean)."""
    check_inputs({"logp_BxT": logp_BxT, "mask_BxT": mask_BxT}, mask_name="mask_BxT")
    return masked_sum(logp_BxT, mask_BxT)


def sft_loss(logp_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    """Per-example supervised loss ``L_SFT = -log pi_theta(y|x)``, the sequence-summed NLL.

    The forward-KL part of BOND and the SFT part of BoNBoN (Gui et al., arXiv 2406.00832) apply it
    to Best-of-N samples. Returns shape ``[B]`` (all leading axes of the input).
    """
    return -sequence_logprob(logp_BxT, mask_BxT)


def sft_token_mean_loss(logp_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    """Per-example shares ``[B]`` of the batch's mean negative log-likelihood per response token:

        L_b = -sum_t m_bt log pi_theta(y_bt | x_b, y_b<t) / ( (1/B) sum_b' sum_t m_b't ),

    so that ``mean_b L_b = -sum_bt m_bt log pi_theta(y_bt | ...) / sum_bt m_bt``, the mean over
    every response token of the batch (supervised fine-tuning's token-level cross-entropy):
    each token weighs the same whatever the length of its response, unlike :func:`sft_loss`'s
    sequence sum. Only tokens inside the mask count; prompt tokens are the conditioning ``x``,
    never predicted. Returns the leading axes of the input (``[B]``, or ``[B, S]`` for
    ``[B, S, T]``, normalised by the mean over all of them).
    """
    check_inputs({"logp_BxT": logp_BxT, "mask_BxT": mask_BxT}, mask_name="mask_BxT")
    nll_B = -masked_sum(logp_BxT, mask_BxT)
    mean_tokens = jnp.maximum(as_mask(mask_BxT).sum(-1).mean(), 1.0).astype(nll_B.dtype)
    return nll_B / mean_tokens
