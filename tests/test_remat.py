"""Rematerialisation of decoder blocks (``remat`` on the model configs): the same forward values
and gradients as without it, a smaller compiled backward pass, and a checked policy name."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bonjax.models import (
    DecoderLM,
    Gemma3Config,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    positions_from_mask,
)
from bonjax.models.remat import compiler_options
from bonjax.sampling import Sampler, Temperature, completion_logprobs

# Gemma 2 runs Gemma 3's block code (bonjax.models.gemma3.GemmaBlock) and is not repeated here.
CONFIGS = [GPT2Config.tiny(), Gemma3Config.tiny(), GPTNeoXConfig.tiny(), LlamaConfig.tiny()]
IDS = ["gpt2", "gemma3", "gpt_neox", "llama"]


def _with_remat(lm: DecoderLM, remat: str) -> DecoderLM:
    return DecoderLM.abstract(dataclasses.replace(lm.config, remat=remat))[0]


def _batch(lm: DecoderLM, B=2, P=5, N=3, T=6, seed=0):
    """Left-padded prompts (the first one a token shorter) and N completions of T tokens each."""
    rng = np.random.default_rng(seed)
    prompts = rng.integers(3, lm.vocab_size, (B, P)).astype(np.int32)
    prompt_mask = np.ones((B, P), bool)
    prompt_mask[0, 0] = False
    prompts[0, 0] = lm.pad_id
    tokens = rng.integers(3, lm.vocab_size, (B, N, T)).astype(np.int32)
    mask = np.arange(T) < rng.integers(1, T + 1, (B, N))[..., None]
    return prompts, prompt_mask, tokens, mask


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("remat", ["block", "dots"])
def test_forward_and_sampling_unchanged(cfg, remat):
    """Logits of a plain forward pass and samples with their log-probs (KV cache and shared
    prefix) are the same with and without remat: it only changes what the backward pass keeps."""
    lm, params = DecoderLM.init(cfg, jax.random.key(0))
    lm_r = _with_remat(lm, remat)
    prompts, prompt_mask, _, _ = _batch(lm)
    positions = positions_from_mask(prompt_mask)
    logits = jax.jit(lm.forward)(params, prompts, positions, prompt_mask).logits_BxTxV
    logits_r = jax.jit(lm_r.forward)(params, prompts, positions, prompt_mask).logits_BxTxV
    np.testing.assert_allclose(logits_r, logits, rtol=0, atol=1e-6)

    out = Sampler(lm, Temperature(1.0), 5).sample(params, prompts, prompt_mask,
                                                  jax.random.key(1), 3)
    out_r = Sampler(lm_r, Temperature(1.0), 5).sample(params, prompts, prompt_mask,
                                                      jax.random.key(1), 3)
    np.testing.assert_array_equal(out_r.tokens_BxNxT, out.tokens_BxNxT)
    np.testing.assert_allclose(out_r.logp_BxNxT, out.logp_BxNxT, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_gradients_unchanged(cfg):
    """The gradient of a sum of completion log-probs (the scorer the training step
    differentiates) is the same with and without remat, for every parameter; compiled as the
    trainer compiles its update (on CPU, with the options that keep the recomputation)."""
    lm, params = DecoderLM.init(cfg, jax.random.key(0))
    batch = _batch(lm)

    def grad(model):
        def loss(p):
            return completion_logprobs(model, p, *batch).logp_BxNxT.sum()
        options = compiler_options(model.config.remat, jax.default_backend())
        return jax.jit(jax.value_and_grad(loss), compiler_options=options)(params)

    value, grads = grad(lm)
    for remat in ("block", "dots"):
        value_r, grads_r = grad(_with_remat(lm, remat))
        np.testing.assert_allclose(value_r, value, rtol=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-5),
                     grads_r, grads)


def _grad_temp_bytes(cfg, B=8, T=128) -> int:
    """Temporary bytes of the compiled gradient of the summed next-token log-probs of B
    sequences of T tokens (abstract: nothing is allocated)."""
    lm, params = DecoderLM.abstract(cfg)
    tokens = jax.ShapeDtypeStruct((B, T), jnp.int32)
    mask = jax.ShapeDtypeStruct((B, T), jnp.bool_)

    def loss(p, tokens_BxT, mask_BxT):
        out = lm.forward(p, tokens_BxT, positions_from_mask(mask_BxT), mask_BxT)
        logits_BxTxV = out.logits_BxTxV
        logp_BxTxV = jax.nn.log_softmax(logits_BxTxV[:, :-1])
        return jnp.take_along_axis(logp_BxTxV, tokens_BxT[:, 1:, None], -1).sum()

    options = compiler_options(cfg.remat, jax.default_backend())
    compiled = jax.jit(jax.grad(loss), compiler_options=options).lower(params, tokens, mask)
    return compiled.compile().memory_analysis().temp_size_in_bytes


def test_block_remat_reduces_compiled_memory():
    """8 blocks, 8 x 128 tokens: keeping only the blocks' inputs needs much less temporary
    memory than keeping every activation (XLA's buffer assignment, a property of the program)."""
    small = GPT2Config.tiny(num_layers=8, d_model=128, mlp_dim=512, max_positions=256)
    temp = {remat: _grad_temp_bytes(dataclasses.replace(small, remat=remat))
            for remat in ("none", "block")}
    assert temp["block"] < 0.5 * temp["none"], temp


@pytest.mark.parametrize("make", [GPT2Config.tiny, Gemma3Config.tiny, GPTNeoXConfig.tiny,
                                  LlamaConfig.tiny], ids=IDS)
def test_bad_remat_raises(make):
    with pytest.raises(ValueError, match=r"remat must be one of \['block', 'dots', 'none'\], "
                                         r"got 'full'"):
        make(remat="full")
