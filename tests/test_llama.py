"""The Llama-style decoders (Llama 3.x, Qwen 2.5, Qwen 3, Mistral) equal transformers' PyTorch
models on the same random weights, and read their config.json files as transformers does."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _torch_reference import LLAMA_FAMILIES, left_padded_batch, save_llama, torch_logits

from bonjax.models import Llama3RopeScaling, LlamaConfig, positions_from_mask
from bonjax.models.weights import HF_FAMILIES, hf_decoder_config, load_hf_decoder

TOL = 1e-4

# The cases checked against transformers: each family's small config (LLAMA_FAMILIES: Llama
# untied with attention biases and llama3 RoPE scaling, Qwen 2.5 tied, Qwen 3 with head_dim 16,
# Mistral with a window of 4), and the variants that change what the model computes.
CASES = {
    "llama": ("llama", {}),
    "llama-tied": ("llama", dict(tie_word_embeddings=True, attention_bias=False)),
    "qwen2": ("qwen2", {}),
    # Qwen's window only applies with use_sliding_window, and then from max_window_layers on.
    "qwen2-window-off": ("qwen2", dict(use_sliding_window=False, sliding_window=4)),
    "qwen3-window": ("qwen3", dict(use_sliding_window=True, sliding_window=4,
                                   max_window_layers=1)),
    "qwen3": ("qwen3", {}),
    "mistral": ("mistral", {}),
}


def _max_logit_error(lm, params, reference, lengths, seed=0):
    tokens, mask = left_padded_batch(lengths, lm.vocab_size, lm.pad_id, seed=seed)
    expected = torch_logits(reference, tokens, mask)
    logits = lm.forward(params, jnp.asarray(tokens), positions_from_mask(jnp.asarray(mask)),
                        jnp.asarray(mask)).logits_BxTxV
    return float(np.abs(np.asarray(logits) - expected)[mask].max())


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_transformers_left_padded(tmp_path, case):
    """Rows of 13, 2, 6 and 9 tokens: longer than the windows of 4, left-padded."""
    model_type, config = CASES[case]
    reference = save_llama(tmp_path, model_type, **config)
    lm, params = load_hf_decoder(tmp_path)
    assert isinstance(lm.config, LlamaConfig) and lm.config.hf_model_type == model_type
    err = _max_logit_error(lm, params, reference, [13, 2, 6, 9])
    print(f"{case}: max abs logit error {err:.3g}")
    assert err <= TOL, f"{case}: max abs logit error {err:.3g} > {TOL}"


@pytest.mark.parametrize("model_type", sorted(LLAMA_FAMILIES))
def test_bfloat16_checkpoint_loads(tmp_path, model_type):
    """A bf16-saved checkpoint loads (to float32) and equals the model read back from it."""
    reference = save_llama(tmp_path, model_type, seed=1, dtype="bfloat16")
    lm, params = load_hf_decoder(tmp_path)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    err = _max_logit_error(lm, params, reference, [7, 3], seed=1)
    assert err <= TOL, f"{model_type} bf16: max abs logit error {err:.3g} > {TOL}"


def test_sharded_checkpoint_loads(tmp_path):
    """Shards listed in model.safetensors.index.json give the parameters of one file."""
    save_llama(tmp_path / "one", "qwen3")
    save_llama(tmp_path / "sharded", "qwen3", max_shard_size="20KB")
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    _, one = load_hf_decoder(tmp_path / "one")
    _, sharded = load_hf_decoder(tmp_path / "sharded")
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(sharded), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_every_family_is_a_row_of_hf_families():
    for model_type in LLAMA_FAMILIES:
        assert HF_FAMILIES[model_type].config is LlamaConfig
        assert LlamaConfig.tiny(model_type).hf_model_type == model_type


_LLAMA_31 = {  # the fields of Llama-3.1-8B-Instruct's config.json (transformers 4.x names)
    "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0, "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0,
                                             "high_freq_factor": 4.0,
                                             "original_max_position_embeddings": 8192,
                                             "rope_type": "llama3"},
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
    "tie_word_embeddings": False, "hidden_act": "silu", "mlp_bias": False,
    "attention_bias": False,
}


def test_config_from_older_config_json():
    """A top-level rope_theta with rope_scaling, an EOS list and no pad id (Llama 3.1); a Qwen
    2.5 file with a window it does not use."""
    cfg = hf_decoder_config(_LLAMA_31)
    assert cfg.rope_base == 500000.0 and cfg.head_dim == 128
    assert cfg.rope_scaling == Llama3RopeScaling(8.0, 1.0, 4.0, 8192)
    assert (cfg.bos_id, cfg.eos_id, cfg.pad_id) == (128000, 128001, 128001)
    assert not cfg.tie_embeddings and not cfg.qkv_bias and not cfg.qk_norm
    qwen = {**_LLAMA_31, "model_type": "qwen2", "rope_scaling": None, "rope_theta": 1e6,
            "sliding_window": 32768, "use_sliding_window": False, "max_window_layers": 21,
            "tie_word_embeddings": True}
    cfg = hf_decoder_config(qwen)
    assert cfg.sliding_window is None and cfg.qkv_bias and not cfg.out_bias
    assert cfg.rope_scaling is None and cfg.tie_embeddings


@pytest.mark.parametrize("change, message", [
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope_type 'yarn'"),
    (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
    (dict(mlp_bias=True), "mlp_bias True"),
    (dict(eos_token_id=None), "no eos_token_id"),
])
def test_unsupported_config_raises(change, message):
    with pytest.raises(ValueError, match=message):
        hf_decoder_config({**_LLAMA_31, **change})
