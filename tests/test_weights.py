"""Weight import: HF directories and GGUF files load, and bad checkpoints fail clearly."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from _torch_reference import save_gemma3, save_gpt2

from bonjax.models import positions_from_mask
from bonjax.models.gguf import load_gguf_decoder
from bonjax.models.registry import gpt2_tokenizer, load_model
from bonjax.models.weights import CheckpointError, load_hf_decoder


def test_missing_directory_and_config(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        load_hf_decoder(tmp_path)


def test_missing_weights_file(tmp_path):
    save_gpt2(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_hf_decoder(tmp_path)


def test_truncated_safetensors(tmp_path):
    save_gpt2(tmp_path)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_hf_decoder(tmp_path)


def test_shape_mismatch_names_the_tensor(tmp_path):
    save_gemma3(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 48
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"blocks\.0\.down.*\(64, 32\).*\(48, 32\)"):
        load_hf_decoder(tmp_path)


def test_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(CheckpointError, match="mamba"):
        load_hf_decoder(tmp_path)


def test_incomplete_config_names_the_missing_field(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="llama config.json has no 'num_hidden_layers'"):
        load_hf_decoder(tmp_path)


def test_missing_and_truncated_gguf(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_gguf_decoder(tmp_path / "absent.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 13)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_gguf_decoder(bad)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'gpt-17'"):
        load_model("gpt-17")
    with pytest.raises(ValueError, match="unknown model"):
        load_model("no-such-org/no-such-model")


def test_load_model_from_hf_directory_with_packaged_gpt2_tokenizer(tmp_path):
    save_gpt2(tmp_path, vocab_size=50257)
    lm, params, tok = load_model(tmp_path)
    assert lm.vocab_size == 50257 and tok.padding_side == "left"
    enc = tok(["A fine film", "Awful"], return_tensors="np", padding=True)
    assert enc["attention_mask"][1, 0] == 0  # left padded
    assert tok.decode(enc["input_ids"][0]) == "A fine film"


def test_gpt2_tokenizer_round_trip():
    tok = gpt2_tokenizer()
    text = "I watched this movie twice; it's <great>!"
    ids = tok(text)["input_ids"]
    assert ids[:2] == [40, 7342] and len(tok) == 50257
    assert tok.decode(ids) == text


@pytest.mark.slow
def test_gemma3_270m_gguf_matches_transformers(gemma3_270m):
    """The real Gemma-3-270M weights: same next-token argmax as transformers on real text."""
    import torch
    import transformers

    lm, params, tok = gemma3_270m
    sentences = ["This movie was absolutely wonderful, and the acting",
                 "I hated every minute of", "The plot of the film"]
    enc = tok(sentences, return_tensors="np", padding=True)
    tokens, mask = enc["input_ids"], enc["attention_mask"].astype(bool)
    logits = lm.forward(params, jnp.asarray(tokens), positions_from_mask(jnp.asarray(mask)),
                        jnp.asarray(mask)).logits_BxTxV
    logits = np.asarray(logits)

    from bonjax.models.registry import gemma3_270m_path

    path = gemma3_270m_path()
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32,
        attn_implementation="eager").eval()
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(tokens),
                             attention_mask=torch.tensor(mask.astype(np.int64)),
                             position_ids=torch.tensor(positions)).logits.numpy()
    err = np.abs(logits - expected)[mask].max()
    print(f"gemma3-270m: max abs logit error {err:.3g}")
    np.testing.assert_array_equal(logits.argmax(-1)[mask], expected.argmax(-1)[mask])
    assert err < 1e-3, f"max abs logit error {err:.3g}"


@pytest.mark.slow
def test_gemma3_270m_in_bfloat16_follows_float32_within_budget(gemma3_270m):
    """The real weights under the bf16 policy: logits and sampled-token log-probabilities on
    real text, and one vBoN gradient, within the budgets of ``bonjax.precision``."""
    import jax

    from bonjax import precision
    from bonjax.sampling import Sampler, Temperature

    lm, params, tok = gemma3_270m
    lm16, params16 = lm.with_dtypes(params, dtype="bfloat16")
    enc = tok(["This movie was absolutely wonderful, and the acting",
               "I hated every minute of"], return_tensors="np", padding=True)
    tokens, mask = jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"].astype(bool))
    err = precision.logit_errors(lm, params, lm16, params16, tokens, mask)
    print(f"gemma3-270m bf16 logits: {err}")
    assert 0 < err["logits_max_abs_err"] <= err["logits_err_budget"], err
    out = Sampler(lm, Temperature(1.0), max_new_tokens=8).sample(params, tokens, mask,
                                                                 jax.random.key(1), 2)
    lp = precision.logprob_errors(lm, params, lm16, params16, tokens, mask, out.tokens_BxNxT,
                                  out.mask_BxNxT)
    assert lp["logp_max_abs_err"] <= 2 * err["logits_err_budget"], lp

    agree = precision.vbon_step_agreement(lm, lm16, params, tokens, mask, train_top=2)
    print(f"gemma3-270m bf16 vBoN gradient (top 2 blocks): {agree}")
    budget = agree["grad_err_budget"]
    assert agree["grad_rel_err"] <= budget and agree["grad_cosine"] >= 1 - budget**2 / 2, agree
