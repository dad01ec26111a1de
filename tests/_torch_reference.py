"""Builders of small random-weight transformers (PyTorch) models saved as HF directories.

Each ``save_<family>`` builds the causal LM, or with ``head`` another class of the family on the
same config (e.g. ``transformers.GPT2ForSequenceClassification``)."""

from __future__ import annotations

import numpy as np


def left_padded_batch(lengths, vocab_size, pad_id, seed=0):
    """Random token rows, left-padded to the longest: (tokens_BxT, mask_BxT) numpy arrays."""
    rng = np.random.default_rng(seed)
    T = max(lengths)
    tokens = np.full((len(lengths), T), pad_id, np.int32)
    mask = np.zeros((len(lengths), T), bool)
    for i, n in enumerate(lengths):
        tokens[i, T - n:] = rng.integers(3, vocab_size, n)
        mask[i, T - n:] = True
    return tokens, mask


def torch_logits(model, tokens, mask):
    """Reference logits with explicit left-padding positions (as bonjax computes them)."""
    import torch

    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(tokens, dtype=torch.long),
                    attention_mask=torch.tensor(mask, dtype=torch.long),
                    position_ids=torch.tensor(positions, dtype=torch.long))
    return out.logits.float().numpy()


def save_gpt2(path, seed=0, dtype="float32", head=None, **config):
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(**{**dict(vocab_size=97, n_positions=64, n_embd=32, n_layer=2,
                                            n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
                                            attn_pdrop=0.0, bos_token_id=0, eos_token_id=1,
                                            pad_token_id=0), **config})
    model = (head or transformers.GPT2LMHeadModel)(cfg).eval()
    _randomize(model, seed)
    return _save_and_reload(model, path, dtype)


def save_gemma3(path, seed=0, dtype="float32", head=None, **config):
    import torch
    import transformers

    torch.manual_seed(seed)
    base = dict(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4,
                query_pre_attn_scalar=8, max_position_embeddings=128,
                layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                bos_token_id=2, eos_token_id=1, pad_token_id=0)
    cfg = transformers.Gemma3TextConfig(**{**base, **config})
    cfg._attn_implementation = "eager"
    model = (head or transformers.Gemma3ForCausalLM)(cfg).eval()
    _randomize(model, seed)
    return _save_and_reload(model, path, dtype)


def save_gpt_neox(path, seed=0, dtype="float32", head=None, **config):
    import torch
    import transformers

    torch.manual_seed(seed)
    base = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=64, rotary_pct=0.5,
                hidden_dropout=0.0, attention_dropout=0.0, bos_token_id=0, eos_token_id=1,
                pad_token_id=0)
    cfg = transformers.GPTNeoXConfig(**{**base, **config})
    cfg._attn_implementation = "eager"
    model = (head or transformers.GPTNeoXForCausalLM)(cfg).eval()
    _randomize(model, seed)
    return _save_and_reload(model, path, dtype)


def save_gemma2(path, seed=0, dtype="float32", head=None, **config):
    import torch
    import transformers

    torch.manual_seed(seed)
    base = dict(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4,
                query_pre_attn_scalar=8, max_position_embeddings=128,
                attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
                bos_token_id=2, eos_token_id=1, pad_token_id=0)
    cfg = transformers.Gemma2Config(**{**base, **config})
    cfg._attn_implementation = "eager"
    model = (head or transformers.Gemma2ForCausalLM)(cfg).eval()
    _randomize(model, seed)
    return _save_and_reload(model, path, dtype)


# transformers' config and model classes, and the small config of each Llama-style family
# (bonjax.models.llama); keyword arguments of save_llama override them.
LLAMA_FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=False, attention_bias=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64})),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=16, tie_word_embeddings=False)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=4,
                                                            tie_word_embeddings=False)),
}


def save_llama(path, model_type="llama", seed=0, dtype="float32", max_shard_size="50GB",
               head=None, **config):
    """A random Llama-style model of ``model_type`` (a key of LLAMA_FAMILIES), saved in
    ``dtype`` (in several files listed by ``model.safetensors.index.json`` when
    ``max_shard_size`` is small)."""
    import torch
    import transformers

    config_class, model_class, family = LLAMA_FAMILIES[model_type]
    torch.manual_seed(seed)
    base = dict(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                max_position_embeddings=128, rms_norm_eps=1e-6, bos_token_id=2,
                eos_token_id=1, pad_token_id=0)
    cfg = getattr(transformers, config_class)(**{**base, **family, **config})
    cfg._attn_implementation = "eager"
    model = (head or getattr(transformers, model_class))(cfg).eval()
    _randomize(model, seed)
    return _save_and_reload(model, path, dtype, max_shard_size)


def _save_and_reload(model, path, dtype, max_shard_size="50GB"):
    """Saves in ``dtype`` and returns the float32 model read back from the saved files."""
    import torch

    model.to(getattr(torch, dtype)).save_pretrained(path, safe_serialization=True,
                                                    max_shard_size=max_shard_size)
    reloaded = type(model).from_pretrained(path, dtype=torch.float32,
                                           attn_implementation="eager")
    return reloaded.eval()


def _randomize(model, seed):
    """Non-trivial weights everywhere (norm scales and biases too), so every term is tested."""
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(0.3 * torch.randn(p.shape, generator=g) + (1.0 if "ln_" in name else 0.0))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))
