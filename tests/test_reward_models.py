"""Decoder reward models (``*ForSequenceClassification``) against transformers, as rewards on the
policy's tokens and through re-tokenisation, and ``load_reward``'s choice of class."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _torch_reference import (
    left_padded_batch,
    save_gemma2,
    save_gemma3,
    save_gpt2,
    save_gpt_neox,
    save_llama,
)

import bonjax
from bonjax.models import DecoderClassifier, GPT2Config, load_hf_decoder_classifier
from bonjax.models.encoder_tokenizer import TransformersTokenizer
from bonjax.models.weights import CheckpointError
from bonjax.rewards import ClassifierScorer, RetokenizedReward, token_reward

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FAMILIES = {
    "gpt2": (save_gpt2, "GPT2ForSequenceClassification"),
    "gpt_neox": (save_gpt_neox, "GPTNeoXForSequenceClassification"),
    "gemma2": (save_gemma2, "Gemma2ForSequenceClassification"),
    "gemma3": (save_gemma3, "Gemma3TextForSequenceClassification"),
    "llama": (functools.partial(save_llama, model_type="llama"), "LlamaForSequenceClassification"),
    "qwen3": (functools.partial(save_llama, model_type="qwen3"), "Qwen3ForSequenceClassification"),
}
TOL = 1e-4


def _save(family, path, **config):
    save, head = FAMILIES[family]
    return save(path, head=getattr(transformers, head), **{"num_labels": 3, **config})


def _torch_scores(model, tokens, mask, positions=None):
    kw = {} if positions is None else {"position_ids": torch.tensor(positions, dtype=torch.long)}
    with torch.no_grad():
        return model(input_ids=torch.tensor(tokens, dtype=torch.long),
                     attention_mask=torch.tensor(mask, dtype=torch.long), **kw).logits.numpy()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_decoder_classifier_matches_transformers(family, tmp_path):
    """A left-padded batch of mixed lengths: equal to transformers given the same positions,
    and to each row scored alone, unpadded."""
    hf = _save(family, tmp_path)
    model, params, _ = bonjax.load_reward(tmp_path, with_tokenizer=False)
    assert isinstance(model, DecoderClassifier) and model.num_classes == 3
    # an untied output embedding is not in a classification checkpoint
    untied = {"gpt_neox": ("embed_out",), "llama": ("lm_head",), "qwen3": ("lm_head",)}
    assert model.absent == untied.get(family, ())
    tokens, mask = left_padded_batch([5, 9, 2, 7], 90, pad_id=0, seed=1)
    got = np.asarray(model.forward(params, tokens, mask).logits_BxC)
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    err = np.abs(got - _torch_scores(hf, tokens, mask, positions)).max()
    rows = np.concatenate([_torch_scores(hf, t[m][None], m[m][None])
                           for t, m in zip(tokens, mask, strict=True)])
    err_rows = np.abs(got - rows).max()
    print(f"{family}: max abs error {err:.2e} (batch), {err_rows:.2e} (rows alone)")
    assert err <= TOL and err_rows <= TOL


def test_right_padding_and_pad_rule(tmp_path):
    """Right padding with transformers' own positions; a real token equal to ``pad_token_id``
    at the end of a row is passed over, as transformers does."""
    hf = _save("gpt_neox", tmp_path)
    model, params = load_hf_decoder_classifier(tmp_path)
    rng = np.random.default_rng(2)
    lengths = [6, 3, 8]
    mask = (np.arange(8)[None] < np.array(lengths)[:, None]).astype(np.int32)
    tokens = rng.integers(3, 90, (3, 8)) * mask
    tokens[1, 2] = model.pad_id  # a trailing real pad token: transformers reads position 1
    got = np.asarray(model.forward(params, tokens, mask).logits_BxC)
    np.testing.assert_allclose(got, _torch_scores(hf, tokens, mask), atol=TOL)


def test_untied_output_embedding_is_never_stored_nor_used(tmp_path):
    """GPT-NeoX's classifier has no ``embed_out``: the parameters leave it out, and the
    compiled forward computes no vocabulary logits from its stand-in."""
    _save("gpt_neox", tmp_path)
    model, params = load_hf_decoder_classifier(tmp_path)
    assert "embed_out" not in params["body"]
    tokens, mask = left_padded_batch([4, 6], 90, pad_id=0)
    hlo = jax.jit(lambda p: model.forward(p, tokens, mask).logits_BxC).lower(params).compile()
    assert f"[2,6,{model.config.vocab_size}]" not in hlo.as_text()


def test_token_reward_scores_prompt_plus_completion_on_device(tmp_path):
    """The reward of each completion is the score of ``prompt + completion`` at its last real
    token; the reward is a traceable pytree with no host callback."""
    hf = _save("gpt2", tmp_path)
    model, params = load_hf_decoder_classifier(tmp_path)
    reward = token_reward(ClassifierScorer(model, params, positive_class=2))
    prompt, prompt_mask = left_padded_batch([3, 5], 90, pad_id=0, seed=3)
    rng = np.random.default_rng(4)
    lengths = np.array([[4, 1, 6], [2, 6, 3]])
    completion_mask = (np.arange(6)[None, None] < lengths[..., None]).astype(np.int32)
    completion = rng.integers(3, 90, (2, 3, 6)) * completion_mask
    args = (prompt, prompt_mask, completion, completion_mask)
    jaxpr = str(jax.make_jaxpr(lambda r, *a: r(*a))(reward, *args))
    assert "callback" not in jaxpr
    got = np.asarray(jax.jit(lambda r, *a: r(*a))(reward, *args))
    assert got.shape == (2, 3)
    for b in range(2):
        for n in range(3):
            row = np.concatenate([prompt[b][prompt_mask[b]],
                                  completion[b, n][completion_mask[b, n] == 1]])
            expected = _torch_scores(hf, row[None], np.ones((1, len(row))))[0, 2]
            assert abs(got[b, n] - expected) <= TOL


def test_retokenized_reward_equals_token_reward_with_the_same_tokenizer(tmp_path):
    """GPT-2's BPE as both the policy's and the reward model's tokenizer: scoring decoded and
    re-tokenised text gives the rewards of scoring the tokens themselves."""
    from bonjax.models.registry import gpt2_tokenizer

    tok = gpt2_tokenizer()
    _save("gpt2", tmp_path, vocab_size=len(tok), num_labels=1, pad_token_id=tok.eos_token_id)
    tok.save_pretrained(tmp_path)
    model, params, reward_tok = bonjax.load_reward(tmp_path, max_length=24)
    assert isinstance(reward_tok, TransformersTokenizer)
    scorer = ClassifierScorer(model, params, positive_class=0)
    texts = [["A fine", " film, truly."], ["Dull and", " long."], ["It was", " good"]]
    prompt = tok([p for p, _ in texts], padding=True, return_tensors="np")
    tok.padding_side = "right"
    completion = tok([c for _, c in texts], padding=True, return_tensors="np")
    args = (prompt["input_ids"], prompt["attention_mask"], completion["input_ids"],
            completion["attention_mask"])
    on_tokens = np.asarray(token_reward(scorer)(*args))
    retokenized = RetokenizedReward(scorer, gpt2_tokenizer(), reward_tok)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda r: r(*args))(retokenized)), on_tokens,
                               atol=1e-5)
    np.testing.assert_allclose(retokenized.score(*args), on_tokens, atol=1e-5)


def test_init_gives_a_scorable_model():
    model, params = DecoderClassifier.init(GPT2Config.tiny(), 2, jax.random.key(0), pad_id=0)
    tokens, mask = left_padded_batch([3, 5], GPT2Config.tiny().vocab_size, pad_id=0)
    out = model.forward(params, jnp.asarray(tokens), jnp.asarray(mask))
    assert out.logits_BxC.shape == (2, 2) and out.pooled_BxD.dtype == jnp.float32


def test_load_reward_without_a_classification_head_raises(tmp_path):
    save_gpt2(tmp_path / "lm")
    with pytest.raises(CheckpointError, match=r"not a reward model.*GPT2LMHeadModel"):
        bonjax.load_reward(tmp_path / "lm")
    # No architectures recorded: the missing score head is named instead.
    config = json.loads((tmp_path / "lm" / "config.json").read_text())
    config.pop("architectures")
    (tmp_path / "lm" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="no classification head.*score.weight"):
        bonjax.load_reward(tmp_path / "lm", with_tokenizer=False)


def test_load_reward_picks_the_encoder_for_bert(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=101, hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=40, num_labels=2)
    transformers.BertForSequenceClassification(cfg).save_pretrained(tmp_path)
    model, _, _ = bonjax.load_reward(tmp_path, with_tokenizer=False)
    assert type(model).__name__ == "EncoderClassifier" and model.num_classes == 2
