"""Teacher-forced scoring: log-probabilities of given completions under any parameters.

For prompts ``x_b`` and completions ``y_{b,n}`` (``T`` tokens, completion mask ``m``),

    log pi_theta(y_{b,n,t} | x_b, y_{b,n,<t}) = z_t[y_t] / tau - logsumexp(z_t / tau),

with ``z_t`` the model's logits and ``tau`` a temperature (1 scores the model itself: pi_ref,
KL terms and every objective use it). The computation follows the sampler's path: each prompt
is prefilled once into a cache shared read-only by its ``N`` completions (``prefix``), and the
completions run in one teacher-forced forward pass over ``[B * N, T - 1]`` tokens (the last
token is scored, never fed). It is a pure function of ``params``: ``jax.grad`` goes through it.

It equals a plain forward pass over the concatenated sequences ``[prompt, completion]``, and at
``tau = 1`` the log-probabilities ``Sampler(lm, Temperature(1.0))`` reports for its own samples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from bonjax.checks import check_temperature, is_int, shape_of
from bonjax.models.decoder import DecoderLM
from bonjax.objectives import token_logprobs
from bonjax.sampling.sampler import check_prompts, prefill

__all__ = ["CompletionScores", "completion_logprobs"]


@struct.dataclass
class CompletionScores:
    """Teacher-forced scores of ``N`` completions of each of ``B`` prompts.

    Attributes:
      logp_BxNxT: float32 per-token log-probabilities, 0 where the completion mask is False.
      hidden_BxNxTxD: ``hidden[b, n, t]`` is the final hidden state the logits of token ``t``
        are computed from (the state before token ``t`` is emitted; the prompt's last position
        for ``t = 0``), 0 where the mask is False. A value head maps it to ``V(s_t)``. Under
        ``jit`` it costs nothing when unused.
    """

    logp_BxNxT: jax.Array
    hidden_BxNxTxD: jax.Array


def completion_logprobs(lm: DecoderLM, params: nnx.State, prompt_tokens_BxP: jax.Array,
                        prompt_mask_BxP: jax.Array, tokens_BxNxT: jax.Array,
                        mask_BxNxT: jax.Array, temperature: float = 1.0,
                        num_chunks: int = 1) -> CompletionScores:
    """Per-token log-probabilities of the completions and the hidden states they come from.

    Args:
      lm: the decoder (static under ``jit``).
      params: its parameters (the policy's, the reference's, ...).
      prompt_tokens_BxP, prompt_mask_BxP: left-padded prompts and their mask.
      tokens_BxNxT: ``N`` completions per prompt.
      mask_BxNxT: completion mask, True on a prefix of each row (up to and including EOS).
      temperature: ``tau > 0``; the logits are divided by it.
      num_chunks: splits the ``N`` completions into this many groups scored one after another,
        so only ``B * N / num_chunks`` rows of ``[T, V]`` logits exist at a time, in the forward
        and (recomputed) in the backward pass: Gemma's 262,144-word vocabulary makes the logits
        of 8 x 32 completions of 40 tokens 10 GiB at once. Must divide ``N``.
    """
    check_temperature(temperature)
    shape = shape_of(tokens_BxNxT)
    if len(shape) != 3:
        raise ValueError(f"completion tokens must be [batch, samples, length], got {shape}")
    if shape_of(mask_BxNxT) != shape:
        raise ValueError(f"completion mask shape {shape_of(mask_BxNxT)} differs from "
                         f"completion tokens shape {shape}")
    B, N, T = shape
    if N < 1 or T < 1:
        raise ValueError(f"completion tokens of shape {shape} are empty")
    if not (is_int(num_chunks) and num_chunks >= 1 and N % num_chunks == 0):
        raise ValueError(f"num_chunks must be an integer >= 1 dividing N = {N}, got "
                         f"{num_chunks!r}")
    if shape_of(prompt_tokens_BxP)[:1] != (B,):
        raise ValueError(f"{shape_of(prompt_tokens_BxP)[0]} prompts for completions of batch {B}")
    check_prompts(lm, prompt_tokens_BxP, prompt_mask_BxP, T)

    prompt_tokens_BxP = jnp.asarray(prompt_tokens_BxP)
    tokens_BxNxT = jnp.asarray(tokens_BxNxT, jnp.int32)
    mask_BxNxT = jnp.asarray(mask_BxNxT).astype(jnp.bool_)
    first = prefill(lm, params, prompt_tokens_BxP, jnp.asarray(prompt_mask_BxP))
    prefix, length_B, hidden_BxD = first.cache, first.length_B, first.hidden_BxD
    logp_BxNx1 = token_logprobs(first.logits_BxV[:, None, :], tokens_BxNxT[:, :, 0],
                                 temperature)[..., None]
    parts_logp = [logp_BxNx1]
    parts_hidden = [jnp.broadcast_to(hidden_BxD[:, None, None, :],
                                     (B, N, 1, hidden_BxD.shape[-1]))]
    if T > 1:
        M = N // num_chunks

        def score_chunk(chunk):
            """Tokens 1..T-1 of ``M`` completions per prompt, fed through the shared prefix."""
            tokens_BxMxT, mask_BxMxT = chunk
            R = B * M
            fed_RxS = tokens_BxMxT[:, :, :-1].reshape(R, T - 1)
            fed_mask_RxS = mask_BxMxT[:, :, :-1].reshape(R, T - 1)
            positions_RxS = (jnp.repeat(length_B, M)[:, None]
                             + jnp.arange(T - 1, dtype=jnp.int32))
            out = lm.forward(params, fed_RxS, positions_RxS, fed_mask_RxS, prefix=prefix)
            logp_RxS = token_logprobs(out.logits_BxTxV,
                                       tokens_BxMxT[:, :, 1:].reshape(R, T - 1), temperature)
            return logp_RxS.reshape(B, M, T - 1), out.hidden_BxTxD.reshape(B, M, T - 1, -1)

        if num_chunks == 1:
            scored = score_chunk((tokens_BxNxT, mask_BxNxT))
        else:
            # Chunks of the N completions run one after another (lax.map); checkpointing makes
            # the backward pass recompute a chunk's logits instead of storing all of them.
            def split(x_BxNxT):
                return x_BxNxT.reshape(B, num_chunks, M, T).swapaxes(0, 1)

            def join(x_CxBxMx):
                return x_CxBxMx.swapaxes(0, 1).reshape(B, N, *x_CxBxMx.shape[3:])

            scored = jax.tree.map(join, jax.lax.map(jax.checkpoint(score_chunk),
                                                    (split(tokens_BxNxT), split(mask_BxNxT))))
        parts_logp.append(scored[0])
        parts_hidden.append(scored[1])
    logp_BxNxT = jnp.where(mask_BxNxT, jnp.concatenate(parts_logp, axis=-1), 0.0)
    hidden_BxNxTxD = jnp.concatenate(parts_hidden, axis=2)
    return CompletionScores(logp_BxNxT, jnp.where(mask_BxNxT[..., None], hidden_BxNxTxD, 0))
