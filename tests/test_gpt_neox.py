"""GPT-NeoX / Pythia equals transformers' GPTNeoXForCausalLM (PyTorch) on the same random
weights: parallel and sequential residuals, rotary embedding on half of each head."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _torch_reference import left_padded_batch, save_gpt_neox, torch_logits

from bonjax.models import GPTNeoXConfig, positions_from_mask
from bonjax.models.weights import load_hf_decoder
from bonjax.sampling import Greedy, Sampler, Temperature, completion_logprobs

TOL = 1e-4


@pytest.mark.parametrize("parallel,dtype", [(True, "float32"), (False, "float32"),
                                            (True, "bfloat16")],
                         ids=["parallel", "sequential", "parallel-bf16"])
def test_matches_transformers_left_padded(tmp_path, parallel, dtype):
    reference = save_gpt_neox(tmp_path, dtype=dtype, use_parallel_residual=parallel)
    lm, params = load_hf_decoder(tmp_path)
    cfg = lm.config
    assert isinstance(cfg, GPTNeoXConfig)
    assert (cfg.use_parallel_residual, cfg.rotary_dim, cfg.head_dim) == (parallel, 4, 8)
    tokens, mask = left_padded_batch([11, 3, 7, 1], lm.vocab_size, lm.pad_id)
    expected = torch_logits(reference, tokens, mask)
    logits = lm.forward(params, jnp.asarray(tokens), positions_from_mask(jnp.asarray(mask)),
                        jnp.asarray(mask)).logits_BxTxV
    err = np.abs(np.asarray(logits) - expected)[mask].max()
    assert err <= TOL, f"max abs logit error {err:.3g} > {TOL}"


def test_config_from_older_config_json():
    """Pythia's own config.json names the rotary settings rotary_pct and rotary_emb_base."""
    hf = dict(model_type="gpt_neox", vocab_size=50304, hidden_size=512, num_hidden_layers=6,
              num_attention_heads=8, intermediate_size=2048, max_position_embeddings=2048,
              rotary_pct=0.25, rotary_emb_base=10000, use_parallel_residual=True,
              hidden_act="gelu", layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=0,
              tie_word_embeddings=False, rope_scaling=None)
    assert GPTNeoXConfig.from_hf(hf) == GPTNeoXConfig.pythia_70m()
    with pytest.raises(ValueError, match="hidden_act"):
        GPTNeoXConfig.from_hf({**hf, "hidden_act": "relu"})


def test_sampler_and_scorer_on_a_loaded_checkpoint(tmp_path):
    """The sampler's log-probabilities (cached decode through the shared prompt cache) equal the
    scorer's teacher-forced ones on the loaded model, and greedy decoding equals transformers'."""
    import torch

    reference = save_gpt_neox(tmp_path)
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


def test_pythia_2_8b_preset_has_the_published_parameter_count():
    """2,775,208,960 parameters, Pythia-2.8B's (shapes only: nothing is allocated)."""
    from bonjax.models import DecoderLM

    _, params = DecoderLM.abstract(GPTNeoXConfig.pythia_2_8b())
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == 2_775_208_960
