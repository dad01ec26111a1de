"""save_pretrained: every exporting family round-trips through a Hugging Face directory.

On random weights of each tiny config (every parameter perturbed, norms and biases included):
transformers' ``AutoModelForCausalLM`` loads the directory and gives bonjax's logits, and
``load_hf_decoder`` gives back the same config and bitwise the same parameters. The real
Gemma-3-270M, loaded from its GGUF, does the same (slow; skipped without the asset package).
The experiment's export command is tested on the tiny run in ``tests/test_experiment.py``.
"""

import json
import time

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from _torch_reference import left_padded_batch, torch_logits

import bonjax
from bonjax.models import (
    DecoderLM,
    Gemma2Config,
    Gemma3Config,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    positions_from_mask,
)
from bonjax.models import weights as weights_module
from bonjax.models.llama import LLAMA_MODEL_TYPES
from bonjax.models.weights import HFFamily, flat_params, load_hf_decoder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4

CONFIGS = {
    "gpt2": GPT2Config.tiny(),
    "gemma3_text": Gemma3Config.tiny(rope_global_scale=2.0, final_logit_softcap=5.0),
    "gemma2": Gemma2Config.tiny(),
    "gpt_neox": GPTNeoXConfig.tiny(),
    **{t: LlamaConfig.tiny(t) for t in LLAMA_MODEL_TYPES},
}


def _random_model(config, seed=0):
    """The model with every parameter drawn at random (no zero biases, no unit norms)."""
    lm, params = DecoderLM.init(config, jax.random.key(seed))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [x + 0.1 * jax.random.normal(k, x.shape, x.dtype)
              for x, k in zip(leaves, keys, strict=True)]
    return lm, jax.tree.unflatten(treedef, leaves)


def _logits(lm, params, tokens, mask):
    return np.asarray(lm.forward(params, jnp.asarray(tokens), positions_from_mask(
        jnp.asarray(mask)), jnp.asarray(mask)).logits_BxTxV)


def _assert_bitwise_equal(params, reloaded):
    a, b = flat_params(params), flat_params(reloaded)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("family", list(CONFIGS))
def test_round_trip(tmp_path, family):
    lm, params = _random_model(CONFIGS[family])
    bonjax.save_pretrained(lm, params, None, tmp_path)
    hf_config = json.loads((tmp_path / "config.json").read_text())
    assert hf_config["model_type"] == family and hf_config["dtype"] == "float32"
    assert hf_config["tie_word_embeddings"] == getattr(
        CONFIGS[family], "tie_embeddings", family != "gpt_neox")
    assert (hf_config["bos_token_id"], hf_config["eos_token_id"], hf_config["pad_token_id"]) == (
        lm.config.bos_id, lm.config.eos_id, lm.config.pad_id)

    reference = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, dtype=torch.float32, attn_implementation="eager").eval()
    tokens, mask = left_padded_batch([9, 3, 6], lm.vocab_size, lm.pad_id)
    err = np.abs(_logits(lm, params, tokens, mask) - torch_logits(reference, tokens, mask))
    err = err[mask].max()
    print(f"{family}: max abs logit error {err:.3g}")
    assert err <= TOL, f"{family}: max abs logit error {err:.3g} > {TOL}"

    lm2, reloaded = load_hf_decoder(tmp_path)
    assert lm2.config == lm.config
    _assert_bitwise_equal(params, reloaded)


def test_bfloat16_export(tmp_path):
    lm, params = _random_model(CONFIGS["gpt2"])
    bonjax.save_pretrained(lm, params, None, tmp_path, dtype="bfloat16")
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), framework="flax") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {np.dtype(ml_dtypes.bfloat16)}
    _, reloaded = load_hf_decoder(tmp_path)  # read back as float32
    rounded = jax.tree.map(lambda x: x.astype(jnp.bfloat16).astype(jnp.float32), params)
    _assert_bitwise_equal(rounded, reloaded)


def test_a_non_empty_directory_needs_overwrite(tmp_path):
    lm, params = _random_model(CONFIGS["gpt2"])
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=f"{tmp_path} is not empty"):
        bonjax.save_pretrained(lm, params, None, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing written

    # Overwriting removes another checkpoint's weight shards, which the loaders would read.
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"stale")
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    bonjax.save_pretrained(lm, params, None, tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "notes.txt"]
    _assert_bitwise_equal(params, load_hf_decoder(tmp_path)[1])


def test_a_family_without_an_exporter_is_named(tmp_path, monkeypatch):
    lm, params = _random_model(CONFIGS["gpt2"])
    row = weights_module.HF_FAMILIES["gpt2"]
    monkeypatch.setitem(weights_module.HF_FAMILIES, "gpt2", HFFamily(row.config, row.weights))
    with pytest.raises(ValueError, match="no Hugging Face export for the 'gpt2' family "
                                         r"\(GPT2Config\)"):
        bonjax.save_pretrained(lm, params, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_unknown_dtype(tmp_path):
    lm, params = _random_model(CONFIGS["gpt2"])
    with pytest.raises(ValueError, match="dtype 'int8' is not one of float32, bfloat16"):
        bonjax.save_pretrained(lm, params, None, tmp_path, dtype="int8")


@pytest.mark.slow
def test_gemma3_270m_from_gguf(tmp_path, gemma3_270m):
    """The packaged Gemma-3-270M (GGUF norm scales stored +1): exported, it re-imports bitwise,
    and its tokenizer is written. (transformers on the exported directory: the tiny Gemma 3
    round trip above; transformers on the GGUF itself: tests/test_weights.py.)"""
    lm, params, tokenizer = gemma3_270m
    start = time.perf_counter()
    bonjax.save_pretrained(lm, params, tokenizer, tmp_path)
    exported = time.perf_counter()
    lm2, reloaded = load_hf_decoder(tmp_path)
    assert lm2.config == lm.config
    _assert_bitwise_equal(params, reloaded)
    del reloaded

    tokenizer2 = transformers.AutoTokenizer.from_pretrained(tmp_path)
    enc = tokenizer2(["This movie was wonderful", "I hated"], return_tensors="np", padding=True)
    tokens = enc["input_ids"]
    assert tokens[0, 0] == lm.config.bos_id and tokenizer2.padding_side == "left"
    np.testing.assert_array_equal(tokens, tokenizer(["This movie was wonderful", "I hated"],
                                                    return_tensors="np", padding=True)["input_ids"])
    print(f"gemma3-270m: export {exported - start:.1f} s")
