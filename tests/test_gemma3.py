"""Gemma 3 equals transformers' Gemma3ForCausalLM (PyTorch) on the same random weights."""

import jax.numpy as jnp
import numpy as np
import pytest
from _torch_reference import left_padded_batch, save_gemma3, torch_logits

from bonjax.models import Gemma3Config, positions_from_mask
from bonjax.models.weights import load_hf_decoder

TOL = 1e-4


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matches_transformers_left_padded(tmp_path, dtype):
    """Rows longer than the sliding window (4) exercise local and global layers."""
    reference = save_gemma3(tmp_path, dtype=dtype)
    lm, params = load_hf_decoder(tmp_path)
    assert isinstance(lm.config, Gemma3Config)
    tokens, mask = left_padded_batch([13, 2, 6, 9], lm.vocab_size, lm.pad_id)
    expected = torch_logits(reference, tokens, mask)
    logits = lm.forward(params, jnp.asarray(tokens), positions_from_mask(jnp.asarray(mask)),
                        jnp.asarray(mask)).logits_BxTxV
    err = np.abs(np.asarray(logits) - expected)[mask].max()
    assert err <= TOL, f"max abs logit error {err:.3g} > {TOL}"


def test_softcap_and_rope_scaling_match(tmp_path):
    """The knobs of larger Gemma 3 configs: a final-logit soft-cap and linear RoPE scaling."""
    rope = {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}}
    reference = save_gemma3(tmp_path, final_logit_softcapping=3.0,
                            rope_parameters=rope)
    lm, params = load_hf_decoder(tmp_path)
    assert lm.config.rope_global_scale == 8.0
    tokens, mask = left_padded_batch([10, 5], lm.vocab_size, lm.pad_id, seed=3)
    expected = torch_logits(reference, tokens, mask)
    logits = lm.forward(params, jnp.asarray(tokens), positions_from_mask(jnp.asarray(mask)),
                        jnp.asarray(mask)).logits_BxTxV
    err = np.abs(np.asarray(logits) - expected)[mask].max()
    assert err <= TOL, f"max abs logit error {err:.3g} > {TOL}"
