"""Gemma 2 equals transformers' Gemma2ForCausalLM (PyTorch) on the same random weights: local
layers with a window shorter than the rows, attention and final soft-caps that bind."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _torch_reference import left_padded_batch, save_gemma2, torch_logits

from bonjax.models import Gemma2Config, positions_from_mask
from bonjax.models.weights import load_hf_decoder
from bonjax.sampling import Greedy, Sampler, Temperature, completion_logprobs

TOL = 1e-4


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matches_transformers_left_padded(tmp_path, dtype):
    """Rows longer than the sliding window (4) exercise local and global layers."""
    reference = save_gemma2(tmp_path, dtype=dtype)
    lm, params = load_hf_decoder(tmp_path)
    cfg = lm.config
    assert isinstance(cfg, Gemma2Config)
    assert [cfg.window(i) for i in range(cfg.num_layers)] == [4, None, 4]
    assert (cfg.attn_logit_softcap, cfg.final_logit_softcap) == (2.0, 3.0)
    tokens, mask = left_padded_batch([13, 2, 6, 9], lm.vocab_size, lm.pad_id)
    expected = torch_logits(reference, tokens, mask)
    logits = lm.forward(params, jnp.asarray(tokens), positions_from_mask(jnp.asarray(mask)),
                        jnp.asarray(mask)).logits_BxTxV
    err = np.abs(np.asarray(logits) - expected)[mask].max()
    assert err <= TOL, f"max abs logit error {err:.3g} > {TOL}"


def test_config_without_layer_types_alternates():
    """Older Gemma 2 config.json files have no layer_types: local and global layers alternate."""
    cfg = Gemma2Config.from_hf(dict(
        vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
        num_attention_heads=8, num_key_value_heads=4, head_dim=256, sliding_window=4096,
        query_pre_attn_scalar=256, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
        rope_theta=10000.0, max_position_embeddings=8192, hidden_activation="gelu_pytorch_tanh"))
    assert cfg == Gemma2Config.gemma2_2b()
    with pytest.raises(ValueError, match="layer_types"):
        Gemma2Config.from_hf(dict(
            vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=3,
            num_attention_heads=1, num_key_value_heads=1, head_dim=8, sliding_window=4,
            layer_types=["full_attention", "sliding_attention", "full_attention"]))


def test_sampler_and_scorer_on_a_loaded_checkpoint(tmp_path):
    """The sampler's log-probabilities (cached decode through the shared prompt cache) equal the
    scorer's teacher-forced ones on the loaded model, and greedy decoding equals transformers'."""
    import torch

    reference = save_gemma2(tmp_path)
    lm, params = load_hf_decoder(tmp_path)
    tokens, mask = left_padded_batch([2, 7, 4], lm.vocab_size, lm.pad_id, seed=5)
    out = Sampler(lm, Temperature(1.0), max_new_tokens=6).sample(
        params, tokens, mask, jax.random.key(4), 3)
    scored = completion_logprobs(lm, params, tokens, mask, out.tokens_BxNxT, out.mask_BxNxT)
    np.testing.assert_allclose(scored.logp_BxNxT, out.logp_BxNxT, atol=2e-5)
    greedy = Sampler(lm, Greedy(), max_new_tokens=6).sample(params, tokens, mask,
                                                            jax.random.key(0), 1)
    got, got_mask = np.asarray(greedy.tokens_BxNxT[:, 0]), np.asarray(greedy.mask_BxNxT[:, 0])
    with torch.no_grad():
        expected = reference.generate(torch.tensor(tokens, dtype=torch.long),
                                      attention_mask=torch.tensor(mask, dtype=torch.long),
                                      do_sample=False, max_new_tokens=6,
                                      pad_token_id=lm.pad_id)[:, tokens.shape[1]:].numpy()
    np.testing.assert_array_equal(got[got_mask], expected[:, :got.shape[1]][got_mask])
