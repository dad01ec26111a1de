"""The teacher-forced scorer equals a full forward pass over [prompt, completion] (bonjax and
transformers PyTorch), in value and in gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _torch_reference import save_gpt2, torch_logits

from bonjax.models import DecoderLM, Gemma3Config, GPT2Config, positions_from_mask
from bonjax.models.weights import load_hf_decoder
from bonjax.sampling import completion_logprobs

TOL = 2e-5


def _logp(*args, **kwargs):
    """The scorer's log-probabilities only."""
    return completion_logprobs(*args, **kwargs).logp_BxNxT


def _batch(lm, prompt_lengths, completion_lengths, T, seed=0):
    """Left-padded prompts and completions ``[B, N, T]`` whose masks cover the given lengths."""
    rng = np.random.default_rng(seed)
    B, P = len(prompt_lengths), max(prompt_lengths)
    prompts = np.full((B, P), lm.pad_id, np.int32)
    prompt_mask = np.zeros((B, P), bool)
    for b, n in enumerate(prompt_lengths):
        prompts[b, P - n:] = rng.integers(3, lm.vocab_size, n)
        prompt_mask[b, P - n:] = True
    lengths = np.asarray(completion_lengths)
    tokens = rng.integers(0, lm.vocab_size, lengths.shape + (T,)).astype(np.int32)
    mask = np.arange(T) < lengths[..., None]
    tokens[~mask] = lm.pad_id
    return prompts, prompt_mask, tokens, mask


def _concatenated(prompts, prompt_mask, tokens, mask):
    B, N, T = tokens.shape
    seq = np.concatenate([np.repeat(prompts, N, 0), tokens.reshape(B * N, T)], axis=1)
    seq_mask = np.concatenate([np.repeat(prompt_mask, N, 0), mask.reshape(B * N, T)], axis=1)
    return seq, seq_mask


def _logp_from_logits(logits, seq, P, mask, temperature):
    B, N, T = mask.shape
    z = logits[:, P - 1:-1] / temperature
    logp = jax.nn.log_softmax(z, axis=-1)
    logp = jnp.take_along_axis(logp, jnp.asarray(seq[:, P:, None]), axis=-1)[..., 0]
    return jnp.where(mask, logp.reshape(B, N, T), 0.0)


def _full_forward_logp(lm, params, prompts, prompt_mask, tokens, mask, temperature=1.0):
    seq, seq_mask = _concatenated(prompts, prompt_mask, tokens, mask)
    logits = lm.forward(params, jnp.asarray(seq), positions_from_mask(jnp.asarray(seq_mask)),
                        jnp.asarray(seq_mask)).logits_BxTxV
    return _logp_from_logits(logits, seq, prompts.shape[1], mask, temperature)


@pytest.mark.parametrize("cfg", [GPT2Config.tiny(), Gemma3Config.tiny()],
                         ids=["gpt2", "gemma3"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_equals_full_forward(cfg, temperature):
    """Prompts of 1 to 9 tokens (Gemma's window is 4), completions ending at 1 to 8 tokens."""
    lm, params = DecoderLM.init(cfg, jax.random.key(1))
    prompts, prompt_mask, tokens, mask = _batch(lm, [1, 9, 5], [[8, 1], [3, 8], [6, 2]], 8)
    score = jax.jit(_logp, static_argnums=(0, 6))
    got = score(lm, params, prompts, prompt_mask, tokens, mask, temperature)
    expected = _full_forward_logp(lm, params, prompts, prompt_mask, tokens, mask, temperature)
    assert got.shape == tokens.shape
    np.testing.assert_allclose(got, expected, atol=TOL)
    assert (np.asarray(got)[~mask] == 0).all() and (np.asarray(got)[mask] < 0).all()


def test_equals_transformers_gpt2(tmp_path):
    reference = save_gpt2(tmp_path)
    lm, params = load_hf_decoder(tmp_path)
    prompts, prompt_mask, tokens, mask = _batch(lm, [4, 2], [[5, 3, 1], [2, 5, 4]], 5, seed=2)
    seq, seq_mask = _concatenated(prompts, prompt_mask, tokens, mask)
    expected = _logp_from_logits(jnp.asarray(torch_logits(reference, seq, seq_mask)), seq,
                                 prompts.shape[1], mask, 1.0)
    got = _logp(lm, params, prompts, prompt_mask, tokens, mask)
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("cfg", [GPT2Config.tiny(), Gemma3Config.tiny()],
                         ids=["gpt2", "gemma3"])
def test_gradient_equals_full_forward_gradient(cfg):
    """d/dtheta of a weighted sum of log-probabilities, as a policy-gradient loss takes it."""
    lm, params = DecoderLM.init(cfg, jax.random.key(2))
    prompts, prompt_mask, tokens, mask = _batch(lm, [3, 6], [[4, 2], [1, 4]], 4, seed=3)
    weights = jnp.asarray(np.random.default_rng(4).normal(size=tokens.shape), jnp.float32)

    def loss(p, fn):
        return jnp.sum(weights * fn(lm, p, prompts, prompt_mask, tokens, mask))

    got = jax.jit(jax.grad(lambda p: loss(p, _logp)))(params)
    expected = jax.jit(jax.grad(lambda p: loss(p, _full_forward_logp)))(params)
    flat_got, flat_expected = jax.tree.leaves(got), jax.tree.leaves(expected)
    assert len(flat_got) == len(flat_expected) > 0
    scale = max(float(jnp.abs(g).max()) for g in flat_expected)
    assert scale > 0
    for g, e in zip(flat_got, flat_expected, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-4 * scale)


def test_chunks_equal_one_pass_in_value_and_gradient():
    lm, params = DecoderLM.init(Gemma3Config.tiny(), jax.random.key(4))
    prompts, prompt_mask, tokens, mask = _batch(lm, [3, 6], [[4, 2, 3, 1], [1, 4, 4, 2]], 4,
                                                seed=6)

    def loss(p, chunks):
        return jnp.sum(_logp(lm, p, prompts, prompt_mask, tokens, mask, num_chunks=chunks) ** 2)

    for chunks in (2, 4):
        np.testing.assert_allclose(
            _logp(lm, params, prompts, prompt_mask, tokens, mask, num_chunks=chunks),
            _logp(lm, params, prompts, prompt_mask, tokens, mask), atol=TOL)
    got = jax.jit(jax.grad(loss), static_argnums=1)(params, 2)
    expected = jax.jit(jax.grad(loss), static_argnums=1)(params, 1)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(g, e, atol=1e-4 * float(jnp.abs(e).max()) + 1e-7)


def test_single_token_completions():
    lm, params = DecoderLM.init(GPT2Config.tiny(), jax.random.key(3))
    prompts, prompt_mask, tokens, mask = _batch(lm, [2, 5], [[1, 1, 1], [1, 0, 1]], 1, seed=5)
    got = _logp(lm, params, prompts, prompt_mask, tokens, mask)
    np.testing.assert_allclose(
        got, _full_forward_logp(lm, params, prompts, prompt_mask, tokens, mask), atol=TOL)


def test_bad_input_raises():
    lm, params = DecoderLM.init(GPT2Config.tiny(), jax.random.key(3))
    prompts, prompt_mask, tokens, mask = _batch(lm, [2, 5], [[3, 1], [2, 2]], 3)
    cases = [
        (dict(temperature=0.0), "temperature .* got 0.0"),
        (dict(temperature=-1.0), "got -1.0"),
        (dict(num_chunks=3), "dividing N = 2, got 3"),
        (dict(tokens_BxNxT=tokens[:, 0]), r"\[batch, samples, length\]"),
        (dict(mask_BxNxT=mask[:, :, :2]), "completion mask shape"),
        (dict(tokens_BxNxT=tokens[:1], mask_BxNxT=mask[:1]), "2 prompts for completions of "
                                                              "batch 1"),
        (dict(prompt_mask_BxP=np.zeros_like(prompt_mask)), "no real token"),
        (dict(tokens_BxNxT=np.zeros((2, 2, 60), np.int32),
              mask_BxNxT=np.ones((2, 2, 60), bool)), "exceeds the model's context of 64"),
    ]
    base = dict(prompt_tokens_BxP=prompts, prompt_mask_BxP=prompt_mask, tokens_BxNxT=tokens,
                mask_BxNxT=mask)
    for override, message in cases:
        with pytest.raises(ValueError, match=message):
            completion_logprobs(lm, params, **{**base, **override})


@pytest.mark.parametrize("cfg", [GPT2Config.tiny(), Gemma3Config.tiny()],
                         ids=["gpt2", "gemma3"])
@pytest.mark.parametrize("num_chunks", [1, 2])
def test_hidden_states_equal_full_forward(cfg, num_chunks):
    """The scores' hidden states: the state before token t is the full pass's state at the
    position whose logits score token t (the prompt's last position for t = 0); 0 where
    masked."""
    lm, params = DecoderLM.init(cfg, jax.random.key(2))
    prompts, prompt_mask, tokens, mask = _batch(lm, [1, 9, 5], [[8, 1], [3, 8], [6, 2]], 8)
    scores = completion_logprobs(lm, params, prompts, prompt_mask, tokens, mask,
                                 num_chunks=num_chunks)
    hidden = scores.hidden_BxNxTxD
    np.testing.assert_allclose(scores.logp_BxNxT,
                               _logp(lm, params, prompts, prompt_mask, tokens, mask), atol=TOL)
    seq, seq_mask = _concatenated(prompts, prompt_mask, tokens, mask)
    full = lm.forward(params, jnp.asarray(seq), positions_from_mask(jnp.asarray(seq_mask)),
                      jnp.asarray(seq_mask)).hidden_BxTxD
    B, N, T = tokens.shape
    P = prompts.shape[1]
    expected = np.asarray(full[:, P - 1:-1]).reshape(B, N, T, -1) * mask[..., None]
    assert hidden.shape == (B, N, T, cfg.d_model)
    np.testing.assert_allclose(hidden, expected, atol=1e-4)
    assert np.abs(expected[mask]).max() > 0.1
