"""experiments' evaluation helper score_completions: a second scorer of drawn samples, chunk by
chunk, the same on a mesh of 8 fake devices as on one device (the IMDB experiment's evaluation
is tested end to end in tests/test_experiment.py)."""

import jax.numpy as jnp
import numpy as np
import pytest

from bonjax import sharding as shd
from bonjax.experiment import CompiledReward, PromptShard, score_completions
from bonjax.rewards import TokenReward


def _reward():
    """Sum of token ids over the real tokens of prompt and completion, a traceable reward."""
    return CompiledReward(TokenReward(lambda _, ids, mask: jnp.where(mask, ids, 0).sum(-1)))


def _data(P=10, L=3, K=3, T=4):
    rng = np.random.default_rng(0)
    prompt_mask = np.arange(L) >= L - rng.integers(1, L + 1, (P, 1))
    prompts = np.where(prompt_mask, rng.integers(1, 50, (P, L)), 0).astype(np.int32)
    mask = np.arange(T) < rng.integers(1, T + 1, (P, K, 1))
    tokens = np.where(mask, rng.integers(1, 50, (P, K, T)), 0).astype(np.int32)
    return prompts, prompt_mask, tokens, mask


def test_scores_equal_a_direct_call_on_one_device_and_on_a_mesh():
    prompts, prompt_mask, tokens, mask = _data()
    want = (np.where(prompt_mask, prompts, 0).sum(-1)[:, None]
            + np.where(mask, tokens, 0).sum(-1)).astype(np.float32)
    single = PromptShard.keep(prompts, prompt_mask, None, None)
    np.testing.assert_array_equal(
        score_completions(_reward(), single, tokens, mask, prompts_per_call=4), want)
    mesh = shd.make_mesh((2, 2, 2))
    shared = PromptShard.keep(prompts, prompt_mask, None, mesh)
    np.testing.assert_array_equal(
        score_completions(_reward(), shared, tokens, mask, prompts_per_call=4), want)
    with pytest.raises(ValueError, match=r"\[P = 10, K, T\]"):
        score_completions(_reward(), single, tokens[:9], mask[:9], prompts_per_call=4)
