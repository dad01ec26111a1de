"""How far a model under a lower-precision dtype policy lies from its float32 self.

The policy (``DecoderLM.with_dtypes``): matmul inputs and the residual stream in ``dtype``
(bfloat16), float32 accumulation, norms, softmax and logits in float32. Compared on the same
float32 master weights: the logits, the sampled tokens' log-probabilities, and one training
step's gradient (the cosine between the two gradients and their relative norm difference).

Two budgets, and an error within either passes. The a-priori one follows a rounding model: each
bfloat16 rounding has relative error at most u = 2^-8, the residual stream is rounded after each
of the L blocks and the embedding, and each block's matmuls add a few roundings, so the relative
error may be ``8 u (L + 1)`` (eight roundings' worth per block; of the logits, times their rms).
The measured one is in units of one bfloat16 rounding of the weights: the same comparison in
float32 arithmetic throughout, at the weights rounded to bfloat16 (:func:`round_weights`), and
``WEIGHT_ROUNDINGS`` = 4 times that. It exists because how much a rounding moves the output is
the model's own: sharp attention amplifies every rounding upstream of its scores (at the tests'
weights, Qwen 3's scores reach |s| = 47 and Llama's 16, where Gemma's query/key norms keep them
under 3), and the a-priori bound failed Llama's and Qwen 3's gradients and Mistral's and
Qwen 3's logits, by up to 4.2x. On the eight tiny decoder families of
``tests/test_precision.py`` the policy measured 0.86-1.99 weight roundings in max abs logit
error and 1.29-2.17 in gradient error; on the real Gemma-3-270M (``tests/test_weights.py``) 2.7
in its logits (0.33 at an rms of 5.6) and 1.7 in the vBoN gradient of its top 2 blocks (2.1 %).
The a-priori bound still covers near-flat random models, whose tiny gradients cancel: the dry
run's 2-layer GPT-2 measured 4.6 weight roundings, 13 % of its a-priori bound.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bonjax import objectives as obj
from bonjax.models.decoder import DecoderLM, positions_from_mask
from bonjax.rewards.synthetic import token_residue_reward
from bonjax.sampling.scorer import completion_logprobs
from bonjax.training.reference import reference_store
from bonjax.training.registry import method_for
from bonjax.training.state import split_trainable
from bonjax.training.trainer import OptimizerConfig, Trainer

__all__ = ["BF16_UNIT_ROUNDOFF", "WEIGHT_ROUNDINGS", "gradient_agreement", "gradient_error_budget",
           "logit_errors", "logprob_errors", "relative_error_budget", "round_weights",
           "vbon_step_agreement"]

BF16_UNIT_ROUNDOFF = 2.0 ** -8
"""Largest relative rounding error of bfloat16 (8 significand bits, round to nearest)."""

WEIGHT_ROUNDINGS = 4
"""The measured budget, in errors of one bfloat16 rounding of the weights."""


def relative_error_budget(lm: DecoderLM) -> float:
    """``8 u (L + 1)``: the a-priori budget of the policy's relative error."""
    return 8 * BF16_UNIT_ROUNDOFF * (lm.config.num_layers + 1)


def round_weights(params):
    """Every float32 leaf rounded to bfloat16 and back (the rest as they are)."""
    return jax.tree.map(lambda x: x.astype(jnp.bfloat16).astype(x.dtype)
                        if x.dtype == jnp.float32 else x, params)


def _require_float32(tree, what: str) -> None:
    dtypes = {str(x.dtype) for x in jax.tree.leaves(tree)}
    if dtypes != {"float32"}:
        raise ValueError(f"{what} must be the float32 master weights (the bfloat16 rounding is "
                         f"measured from them), got dtypes {sorted(dtypes)}")


def logit_errors(lm: DecoderLM, params: nnx.State, low_lm: DecoderLM, low_params: nnx.State,
                 tokens_BxT: jax.Array, mask_BxT: jax.Array) -> dict[str, float]:
    """Max and mean abs logit error over real tokens, the logits' rms, the max abs error of
    ``lm`` at ``params`` rounded to bfloat16 (``logits_weight_rounding_err``) and the budget of
    the max abs error: ``8 u (L + 1) rms`` or ``WEIGHT_ROUNDINGS`` weight roundings, the larger.
    ``params`` must be float32."""
    _require_float32(params, "params")
    positions_BxT = positions_from_mask(mask_BxT)
    def logits(model: DecoderLM, p: nnx.State) -> jax.Array:  # the logits only leave the jit
        return np.asarray(jax.jit(lambda *args: model.forward(*args).logits_BxTxV)(
            p, tokens_BxT, positions_BxT, mask_BxT))

    logits_BxTxV, low_BxTxV = logits(lm, params), logits(low_lm, low_params)
    if low_BxTxV.dtype != np.float32:
        raise AssertionError(f"logits must be float32 under every policy, got {low_BxTxV.dtype}")
    real = np.asarray(mask_BxT)
    diff = np.abs(logits_BxTxV - low_BxTxV)[real]
    rounding = float(np.abs(logits_BxTxV - logits(lm, round_weights(params)))[real].max())
    rms = float(np.sqrt(np.mean(np.square(logits_BxTxV[real]))))
    return {"logits_max_abs_err": float(diff.max()), "logits_mean_abs_err": float(diff.mean()),
            "logits_rms": rms, "logits_weight_rounding_err": rounding,
            "logits_err_budget": max(relative_error_budget(lm) * rms,
                                     WEIGHT_ROUNDINGS * rounding)}


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

    Returns both losses, the cosine between the two gradients, ``|g_low - g| / |g|``
    (``grad_rel_err``) and the same for ``loss_fn``'s gradient at ``trainable`` and ``frozen``
    rounded to bfloat16 (``grad_weight_rounding_err``, for :func:`gradient_error_budget`).
    ``trainable`` must be float32.
    """
    _require_float32(trainable, "trainable")

    def grads(fn, weights, frozen_weights):
        (loss, _), g = jax.jit(jax.value_and_grad(fn, has_aux=True))(weights, frozen_weights,
                                                                       batch)
        return float(loss), jnp.concatenate([x.astype(jnp.float32).ravel()
                                             for x in jax.tree.leaves(g)])

    loss, g = grads(loss_fn, trainable, frozen)
    low_loss, low_g = grads(low_loss_fn, trainable, frozen)
    _, rounded_g = grads(loss_fn, round_weights(trainable), round_weights(frozen))
    norm = float(jnp.linalg.norm(g))
    return {"loss": loss, "low_loss": low_loss,
            "grad_cosine": float(jnp.dot(g, low_g)) / (norm * float(jnp.linalg.norm(low_g))),
            "grad_rel_err": float(jnp.linalg.norm(low_g - g)) / norm, "grad_norm": norm,
            "grad_weight_rounding_err": float(jnp.linalg.norm(rounded_g - g)) / norm}


def gradient_error_budget(lm: DecoderLM, agreement: dict[str, float]) -> float:
    """The tolerated ``grad_rel_err`` of a :func:`gradient_agreement` on ``lm``: ``8 u (L + 1)``
    or ``WEIGHT_ROUNDINGS`` weight roundings, the larger (the gradients' cosine may then be as
    low as ``1 - budget^2 / 2``)."""
    return max(relative_error_budget(lm), WEIGHT_ROUNDINGS * agreement["grad_weight_rounding_err"])


def vbon_step_agreement(lm: DecoderLM, low_lm: DecoderLM, params: nnx.State,
                        prompt_tokens_BxP: jax.Array, prompt_mask_BxP: jax.Array, *,
                        max_new_tokens: int = 8, train_top: int | None = None,
                        ) -> dict[str, float]:
    """One vBoN (N = 4) training step of ``lm`` and ``low_lm`` (the same model under another
    dtype policy) on the same float32 ``params`` and batch: 4 completions per prompt sampled by
    ``lm``, ``token_residue_reward`` and 16 standard-normal reference rewards per prompt; every
    parameter trained, or the top ``train_top`` blocks. Returns :func:`gradient_agreement`'s
    dict and ``grad_err_budget`` (:func:`gradient_error_budget`)."""
    B = prompt_tokens_BxP.shape[0]
    refs = reference_store(np.random.default_rng(0).normal(size=(B, 16)).astype(np.float32))
    method = method_for(obj.VBoNConfig(n=4), samples_per_prompt=4)
    trainers = [Trainer(m, params, method, token_residue_reward, max_new_tokens=max_new_tokens,
                        ref_rewards=refs, optimizer=OptimizerConfig(epochs=1))
                for m in (lm, low_lm)]
    state = trainers[0].init_state(jax.random.key(2))
    batch, _ = trainers[0].collect(state, prompt_tokens_BxP, prompt_mask_BxP, jnp.arange(B),
                                   jax.random.key(3))
    trainable, frozen = split_trainable(params, lm.top_blocks_filter(train_top))
    agreement = gradient_agreement(trainers[0].loss, trainers[1].loss, {"params": trainable},
                                   frozen, batch)
    return {**agreement, "grad_err_budget": gradient_error_budget(lm, agreement)}
