"""How far a model under a lower-precision dtype policy lies from its float32 self.

The policy (``DecoderLM.with_dtypes``): matmul inputs and the residual stream in ``dtype``
(bfloat16), float32 accumulation, norms, softmax and logits in float32. Each bfloat16 rounding
has relative error at most ``u = 2^-8``; the residual stream is rounded after each of the ``L``
blocks and the embedding, and each block's matmuls add a few roundings of their inputs, so the
logits' error grows like ``u * (L + 1)`` times their scale. ``logit_error_budget`` is
``8 u (L + 1) rms(logits)``: eight roundings' worth per block, a bound chosen from that error
model (not from an observed error), which the tests and the device check both use.

The sampled tokens' log-probabilities are differences of such logits and a logsumexp; one
training step is compared by its gradient: the cosine between the bfloat16 and float32
gradients of the same loss on the same batch, and their relative norm difference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bonjax.models.decoder import DecoderLM, positions_from_mask
from bonjax.sampling.scorer import completion_logprobs

__all__ = ["BF16_UNIT_ROUNDOFF", "relative_error_budget", "logit_error_budget", "logit_errors",
           "logprob_errors", "gradient_agreement"]

BF16_UNIT_ROUNDOFF = 2.0 ** -8
"""Largest relative rounding error of bfloat16 (8 significand bits, round to nearest)."""


def relative_error_budget(lm: DecoderLM) -> float:
    """``8 u (L + 1)``: the tolerated relative error of the bfloat16 policy's logits (and of a
    gradient built from them)."""
    return 8 * BF16_UNIT_ROUNDOFF * (lm.config.num_layers + 1)


def logit_error_budget(lm: DecoderLM, logits_rms: float) -> float:
    """``8 u (L + 1) rms(logits)``: the tolerated max abs logit error of the bfloat16 policy."""
    return relative_error_budget(lm) * logits_rms


def logit_errors(lm: DecoderLM, params: nnx.State, low_lm: DecoderLM, low_params: nnx.State,
                 tokens_BxT: jax.Array, mask_BxT: jax.Array) -> dict[str, float]:
    """Max abs logit error over real tokens, the logits' rms and the error budget."""
    positions_BxT = positions_from_mask(mask_BxT)
    def logits(model: DecoderLM, p: nnx.State) -> jax.Array:  # the logits only leave the jit
        return jax.jit(lambda *args: model.forward(*args).logits_BxTxV)(
            p, tokens_BxT, positions_BxT, mask_BxT)

    logits_BxTxV, low_BxTxV = logits(lm, params), logits(low_lm, low_params)
    if low_BxTxV.dtype != jnp.float32:
        raise AssertionError(f"logits must be float32 under every policy, got {low_BxTxV.dtype}")
    real = np.asarray(mask_BxT)
    diff = np.abs(np.asarray(logits_BxTxV) - np.asarray(low_BxTxV))[real]
    rms = float(np.sqrt(np.mean(np.square(np.asarray(logits_BxTxV)[real]))))
    return {"logits_max_abs_err": float(diff.max()), "logits_mean_abs_err": float(diff.mean()),
            "logits_rms": rms, "logits_err_budget": logit_error_budget(lm, rms)}


def logprob_errors(lm: DecoderLM, params: nnx.State, low_lm: DecoderLM, low_params: nnx.State,
                   prompt_tokens_BxP, prompt_mask_BxP, tokens_BxNxT,
                   mask_BxNxT) -> dict[str, float]:
    """Errors of the completions' token log-probabilities (teacher-forced, float32 output)."""
    score = jax.jit(lambda lm, *args: completion_logprobs(lm, *args).logp_BxNxT,
                    static_argnums=0)
    logp_BxNxT = score(lm, params, prompt_tokens_BxP, prompt_mask_BxP, tokens_BxNxT, mask_BxNxT)
    low_BxNxT = score(low_lm, low_params, prompt_tokens_BxP, prompt_mask_BxP, tokens_BxNxT,
                      mask_BxNxT)
    real = np.asarray(mask_BxNxT)
    diff = np.abs(np.asarray(logp_BxNxT) - np.asarray(low_BxNxT))[real]
    seq = np.abs(np.asarray(logp_BxNxT).sum(-1) - np.asarray(low_BxNxT).sum(-1))
    return {"logp_max_abs_err": float(diff.max()), "logp_mean_abs_err": float(diff.mean()),
            "seq_logp_max_abs_err": float(seq.max()),
            "logp_mean": float(np.asarray(logp_BxNxT)[real].mean())}


def gradient_agreement(loss_fn, low_loss_fn, trainable, frozen, batch) -> dict[str, float]:
    """One training step in both policies: ``loss_fn(trainable, frozen, batch) -> (loss, aux)``.

    Returns both losses, the cosine between the two gradients and
    ``|g_low - g| / |g|``.
    """
    def grads(fn):
        (loss, _), g = jax.jit(jax.value_and_grad(fn, has_aux=True))(trainable, frozen, batch)
        return float(loss), jnp.concatenate([x.astype(jnp.float32).ravel()
                                             for x in jax.tree.leaves(g)])

    loss, g = grads(loss_fn)
    low_loss, low_g = grads(low_loss_fn)
    norm = float(jnp.linalg.norm(g))
    return {"loss": loss, "low_loss": low_loss,
            "grad_cosine": float(jnp.dot(g, low_g)) / (norm * float(jnp.linalg.norm(low_g))),
            "grad_rel_err": float(jnp.linalg.norm(low_g - g)) / norm, "grad_norm": norm}
