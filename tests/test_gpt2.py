"""GPT-2 equals transformers' GPT2LMHeadModel (PyTorch) on the same random weights."""

import jax.numpy as jnp
import numpy as np
import pytest
from _torch_reference import left_padded_batch, save_gpt2, torch_logits

from bonjax.models import GPT2Config, positions_from_mask
from bonjax.models.weights import load_hf_decoder

TOL = 1e-4


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matches_transformers_left_padded(tmp_path, dtype):
    reference = save_gpt2(tmp_path, dtype=dtype)
    lm, params = load_hf_decoder(tmp_path)
    assert isinstance(lm.config, GPT2Config)
    tokens, mask = left_padded_batch([11, 3, 7, 1], lm.vocab_size, lm.pad_id)
    expected = torch_logits(reference, tokens, mask)
    logits = lm.forward(params, jnp.asarray(tokens), positions_from_mask(jnp.asarray(mask)),
                        jnp.asarray(mask)).logits_BxTxV
    err = np.abs(np.asarray(logits) - expected)[mask].max()
    assert err <= TOL, f"max abs logit error {err:.3g} > {TOL}"


def test_config_from_hf(tmp_path):
    save_gpt2(tmp_path, n_layer=3, n_head=2, n_embd=16, n_positions=32)
    lm, _ = load_hf_decoder(tmp_path)
    cfg = lm.config
    assert (cfg.num_layers, cfg.num_heads, cfg.d_model, cfg.max_positions) == (3, 2, 16, 32)
    assert cfg.mlp_dim == 64
