"""The BoNBoN system's data: its training and held-out prompts, and the SFT stage's responses.

Three sources (``config.data.source``):

- ``"hh"``: Anthropic HH-RLHF dialogues (:mod:`bonjax.data.hh`), local JSONL files or the hub's
  files of ``config.data.hh_subsets``; the prompt is the dialogue up to its last Assistant turn,
  the SFT response its chosen reply;
- ``"tldr"``: Reddit TL;DR posts (:mod:`bonjax.data.tldr`), local JSONL files; the prompt is the
  summarisation prompt, the SFT response the reference summary;
- ``"imdb"``: openings of IMDB reviews (:func:`bonjax.data.imdb_prompts`), no responses.

The text records are read by :func:`read_records` before any model loads, so a missing file, a
line without a field or a dialogue without an Assistant turn stops the run at once with the
file and line named. P training and Q held-out records are a seeded random choice of each
split's records (``permutation(seed)`` and ``permutation(seed + 1)``, the first P or Q); fewer
records than asked for is an error naming both counts. :func:`system_data` then tokenises them
for the policy (:func:`bonjax.data.tokenize_records`: chat template or BOS, prompts cut from the
left to ``config.data.max_prompt_tokens``, responses EOS-ended within
``config.data.max_response_tokens``, EOS being the policy's).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from bonjax.data.hh import load_hh, read_hh
from bonjax.data.imdb import Source, imdb_prompts
from bonjax.data.prompt_response import tokenize_records
from bonjax.data.tldr import read_tldr
from bonjax.experiment.components import prompt_batch
from bonjax.training.sft import ResponseTable

__all__ = ["RESPONSES", "SOURCES", "PromptTable", "Records", "SystemData", "read_records",
           "system_data"]

SOURCES = ("hh", "tldr", "imdb")
RESPONSES = {"hh": "chosen", "tldr": "summary"}  # the SFT stage's response of each source


@dataclasses.dataclass(frozen=True)
class Records:
    """The chosen text records of both splits and the name of their SFT response."""

    train: tuple
    test: tuple
    response: str


@dataclasses.dataclass(frozen=True)
class PromptTable:
    """Left-padded prompts of one split, with their texts (for the samples file)."""

    tokens_PxL: np.ndarray
    mask_PxL: np.ndarray
    texts: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)


@dataclasses.dataclass(frozen=True)
class SystemData:
    """What the stages read: the training and held-out prompts, and the SFT responses of the
    training prompts (None for a source without responses)."""

    train: PromptTable
    test: PromptTable
    sft_responses: ResponseTable | None
    description: str


def _choose(records: tuple, count: int, seed: int, split: str, where: str) -> tuple:
    if len(records) < count:
        raise ValueError(f"config.data.{split}_prompts = {count} but {where} holds "
                         f"{len(records)} records")
    order = np.random.default_rng(seed).permutation(len(records))[:count]
    return tuple(records[i] for i in order)


def _read_split(config: Any, split: str) -> tuple[tuple, str]:
    data = config.data
    files = tuple(os.path.expanduser(f) for f in data[f"{split}_files"])
    if data.source == "tldr":
        return read_tldr(*files), ", ".join(files)
    if files:
        return read_hh(*files), ", ".join(files)
    subsets = tuple(data.hh_subsets)
    return load_hh(split, subsets), f"the hub's HH-RLHF {split} split of {', '.join(subsets)}"


def read_records(config: Any) -> Records | None:
    """The P training and Q held-out text records of ``config.data`` (None for ``"imdb"``,
    whose prompts need the policy's tokenizer).

    Raises:
      ValueError: naming the file and line of a malformed record, or the split whose records
        are fewer than asked for.
      FileNotFoundError: for a missing file (or hub files that cannot be reached offline).
    """
    source = config.data.source
    if source == "imdb":
        return None
    if source not in RESPONSES:
        raise ValueError(f"unknown data source {source!r} in config.data.source; choose one of "
                         f"{', '.join(SOURCES)}")
    seed = int(config.seed)
    train, train_where = _read_split(config, "train")
    test, test_where = _read_split(config, "test")
    return Records(_choose(train, int(config.data.train_prompts), seed, "train", train_where),
                   _choose(test, int(config.data.test_prompts), seed + 1, "test", test_where),
                   RESPONSES[source])


def _imdb_table(config: Any, tokenizer, pad_id: int, split: str, count: int) -> PromptTable:
    prompts = imdb_prompts(tokenizer, split, count, min_tokens=int(config.data.min_tokens),
                           max_tokens=int(config.data.max_tokens), seed=int(config.seed),
                           source=Source(config.data.imdb_source))
    return PromptTable(*prompt_batch(prompts, tokenizer, pad_id), tuple(prompts.texts))


def system_data(config: Any, records: Records | None, tokenizer, lm) -> SystemData:
    """The records (:func:`read_records`) as the policy's token arrays; for ``"imdb"`` the
    review openings of the train and test reviews."""
    if records is None:
        train = _imdb_table(config, tokenizer, lm.pad_id, "train", int(config.data.train_prompts))
        test = _imdb_table(config, tokenizer, lm.pad_id, "test", int(config.data.test_prompts))
        return SystemData(train, test, None, f"IMDB review openings of {config.data.min_tokens}"
                          f"-{config.data.max_tokens} tokens")
    limits = {"max_prompt_tokens": int(config.data.max_prompt_tokens),
              "max_response_tokens": int(config.data.max_response_tokens), "eos_id": lm.eos_id}
    tables = []
    for split in (records.train, records.test):
        tokens = tokenize_records(split, tokenizer, **limits)
        tables.append((tokens, PromptTable(*tokens.prompts(lm.pad_id),
                                           tuple(r.prompt for r in split))))
    (train_tokens, train), (_, test) = tables
    responses = ResponseTable.create(*train_tokens.responses(records.response, lm.pad_id))
    kind = {"chosen": "Anthropic HH-RLHF dialogues", "summary": "Reddit TL;DR posts"}
    cut = int(train_tokens.prompt_truncated_B.sum())
    return SystemData(train, test, responses,
                      f"{kind[records.response]} ({cut} of {len(train)} training prompts cut "
                      f"to their last {limits['max_prompt_tokens']} tokens)")
