"""DeBERTa-v2/v3 sequence classifiers against transformers PyTorch on the same weights.

No DeBERTa-v3 tokenizer files ship offline: the tokenizer test builds a small Unigram
``DebertaV2Tokenizer`` (DeBERTa-v3's tokenizer class and special tokens) from a word list.
"""

import jax
import numpy as np
import pytest

import bonjax
from bonjax.models import DebertaV2Config, load_hf_deberta
from bonjax.models.deberta import relative_positions
from bonjax.models.encoder import EncoderClassifier
from bonjax.models.weights import CheckpointError
from bonjax.rewards import ClassifierScorer, RetokenizedReward

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
# DeBERTa-v3 (OpenAssistant/reward-model-deberta-v3-large-v2's architecture), small.
V3 = dict(relative_attention=True, position_buckets=8, max_relative_positions=32,
          pos_att_type=["p2c", "c2p"], share_att_key=True, norm_rel_ebd="layer_norm",
          position_biased_input=False, type_vocab_size=0, num_labels=1)
# DeBERTa-v2-style settings: own position projections, absolute positions, token types, no
# buckets, a narrower word embedding projected up.
V2 = dict(relative_attention=True, max_relative_positions=-1, pos_att_type="c2p|p2c",
          share_att_key=False, position_biased_input=True, type_vocab_size=2, num_labels=3,
          embedding_size=24)
WORDS = ["the", "film", "was", "good", "bad", "very", "not", "a", "plot", "and", "dull",
         "fine", "long", "."]


def _hf_deberta(path, vocab_size=101, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = transformers.DebertaV2Config(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, initializer_range=0.2, pad_token_id=0, **kw)
    model = transformers.DebertaV2ForSequenceClassification(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorm and bias values
        for _, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path)
    return model


def _right_padded(lengths, T, vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    mask = (np.arange(T)[None] < np.array(lengths)[:, None]).astype(np.int32)
    return (rng.integers(1, vocab_size, (len(lengths), T)) * mask).astype(np.int32), mask


@pytest.mark.parametrize("settings", ["v3", "v2"])
def test_matches_transformers(settings, tmp_path):
    hf = _hf_deberta(tmp_path, **(V3 if settings == "v3" else V2))
    model, params = load_hf_deberta(tmp_path)
    assert isinstance(model, EncoderClassifier)
    ids, mask = _right_padded([20, 13, 5, 9], 20, 101)  # distances up to 19: log buckets
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask).long(),
                 output_hidden_states=True)
    out = model.forward(params, ids, mask)
    err = np.abs(np.asarray(out.logits_BxC) - ref.logits.numpy()).max()
    hidden_err = np.abs(np.asarray(out.hidden_BxTxD) - ref.hidden_states[-1].numpy()).max()
    print(f"DeBERTa {settings}: max abs error {err:.2e} (logits), {hidden_err:.2e} (hidden)")
    assert err <= TOL and hidden_err <= TOL


def test_relative_positions_match_transformers():
    from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position

    x = torch.zeros(1, 300, 4)
    for buckets, max_position in ((8, 32), (256, 512), (-1, 64)):
        expected = build_relative_position(x, x, buckets, max_position)[0].numpy()
        np.testing.assert_array_equal(relative_positions(300, buckets, max_position), expected)


def test_from_hf_rejects_what_it_does_not_implement():
    hf = transformers.DebertaV2Config(hidden_size=32, num_attention_heads=4).to_dict()
    with pytest.raises(ValueError, match="conv_kernel_size"):
        DebertaV2Config.from_hf({**hf, "conv_kernel_size": 3})
    with pytest.raises(ValueError, match="hidden_act"):
        DebertaV2Config.from_hf({**hf, "hidden_act": "swish"})


def test_bfloat16_checkpoint(tmp_path):
    hf = _hf_deberta(tmp_path / "f32", **V3)
    hf.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    model, params = load_hf_deberta(tmp_path / "bf16")
    assert jax.tree.leaves(params)[0].dtype == np.float32
    ids, mask = _right_padded([7, 4], 7, 101)
    with torch.no_grad():
        ref = hf.float()(input_ids=torch.tensor(ids).long(),
                         attention_mask=torch.tensor(mask).long()).logits.numpy()
    np.testing.assert_allclose(np.asarray(model.forward(params, ids, mask).logits_BxC), ref,
                               atol=TOL)


def test_load_reward_with_tokenizer_scores_texts_as_transformers(tmp_path):
    """``load_reward`` reads a DeBERTa-v3 directory and its tokenizer; scoring texts (and the
    policy's decoded tokens) gives transformers' tokenizer + model scores."""
    vocab = [("[PAD]", 0.0), ("[CLS]", 0.0), ("[SEP]", 0.0), ("[UNK]", 0.0)]
    vocab += [("▁" + w, -1.0 - 0.1 * i) for i, w in enumerate(WORDS)]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz▁."]
    tok = transformers.DebertaV2Tokenizer(vocab=vocab, unk_id=3)
    hf = _hf_deberta(tmp_path, vocab_size=len(vocab), **V3)
    tok.save_pretrained(tmp_path)
    model, params, reward_tok = bonjax.load_reward(tmp_path, max_length=16)
    assert isinstance(model, EncoderClassifier) and model.num_classes == 1
    texts = ["the film was very good .", "a dull plot and a long film", "not bad"]
    enc = tok(texts, padding=True, return_tensors="pt")
    assert enc["input_ids"][0, 0] == 1 and (enc["input_ids"] == 2).sum() == len(texts)
    with torch.no_grad():
        expected = hf(**enc).logits[:, 0].numpy()
    scorer = ClassifierScorer(model, params, positive_class=0)
    policy_tok = transformers.DebertaV2Tokenizer(vocab=vocab, unk_id=3)
    reward = RetokenizedReward(scorer, policy_tok, reward_tok)
    np.testing.assert_allclose(reward.score_texts(texts), expected, atol=TOL)

    # The policy's tokens (no special tokens), decoded and re-tokenised inside jit.
    pieces = [policy_tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    T = max(len(p) for p in pieces)
    completion = np.zeros((3, T), np.int32)
    completion_mask = np.zeros((3, T), np.int32)
    for i, p in enumerate(pieces):
        completion[i, :len(p)], completion_mask[i, :len(p)] = p, 1
    prompt, prompt_mask = np.zeros((3, 1), np.int32), np.zeros((3, 1), np.int32)
    got = jax.jit(lambda r: r(prompt, prompt_mask, completion, completion_mask))(reward)
    np.testing.assert_allclose(np.asarray(got), expected, atol=TOL)


def test_load_reward_rejects_a_deberta_without_classifier(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.DebertaV2Config(vocab_size=101, hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=4, intermediate_size=64, **V3)
    transformers.DebertaV2Model(cfg).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"not a reward model.*DebertaV2Model"):
        bonjax.load_reward(tmp_path, with_tokenizer=False)
