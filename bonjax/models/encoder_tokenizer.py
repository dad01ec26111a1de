"""Tokenization for the reward classifiers: texts -> fixed-shape id and mask arrays.

    tokenizer = minilm_tokenizer(max_length=128, keep_tail=64)
    ids_BxL, mask_BxL = tokenizer(["A fine film.", "Dull."])

:class:`EncoderTokenizer` reads a ``tokenizer.json`` (WordPiece for MiniLM);
:class:`TransformersTokenizer` wraps any transformers tokenizer (DeBERTa-v3's Unigram, a decoder
reward model's BPE).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

from bonjax.models.encoder_weights import minilm_dir

__all__ = ["EncoderTokenizer", "TransformersTokenizer", "minilm_tokenizer"]


class EncoderTokenizer:
    """Texts -> ``(ids [B, L], mask [B, L])`` int32 arrays with an encoder's ``tokenizer.json``.

    Sequences get ``[CLS] ... [SEP]``. Longer ones keep their first tokens, or with ``keep_tail``
    their first ``max_length - 2 - keep_tail`` and last ``keep_tail`` tokens (head+tail
    truncation, Sun et al. 2019). Rows are right-padded to ``max_length`` (one static shape for
    jit) or, with ``pad_multiple``, to the batch's longest row rounded up to a multiple of it.
    """

    def __init__(self, tokenizer_file: str | pathlib.Path, max_length: int,
                 pad_multiple: int | None = None, keep_tail: int = 0):
        from tokenizers import Tokenizer

        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 ([CLS] and [SEP]), got {max_length}")
        if pad_multiple is not None and pad_multiple < 1:
            raise ValueError(f"pad_multiple must be positive, got {pad_multiple}")
        if not 0 <= keep_tail <= max_length - 2:
            raise ValueError(f"keep_tail must be in [0, {max_length - 2}], got {keep_tail}")
        tokenizer_file = pathlib.Path(tokenizer_file)
        if not tokenizer_file.is_file():
            raise FileNotFoundError(f"tokenizer file {tokenizer_file} does not exist")
        self.file = tokenizer_file
        self.max_length, self.pad_multiple, self.keep_tail = max_length, pad_multiple, keep_tail
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        self.tokenizer.no_padding()
        if keep_tail:
            self.tokenizer.no_truncation()
        else:
            self.tokenizer.enable_truncation(max_length=max_length)

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str):
            raise ValueError("texts must be a sequence of strings, got one string")
        rows = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        L, tail = self.max_length, self.keep_tail
        rows = [r if len(r) <= L else r[: L - 1 - tail] + r[len(r) - 1 - tail:] for r in rows]
        width = L
        if self.pad_multiple is not None:
            longest = max((len(r) for r in rows), default=1)
            width = min(L, -(-longest // self.pad_multiple) * self.pad_multiple)
        ids_BxL = np.full((len(rows), width), self.pad_id, dtype=np.int32)
        mask_BxL = np.zeros((len(rows), width), dtype=np.int32)
        for b, r in enumerate(rows):
            ids_BxL[b, : len(r)] = r
            mask_BxL[b, : len(r)] = 1
        return ids_BxL, mask_BxL


class TransformersTokenizer:
    """Texts -> ``(ids [B, L], mask [B, L])`` int32 arrays with a transformers tokenizer.

    The tokenizer adds its own special tokens (DeBERTa's ``[CLS] ... [SEP]``, none for GPT-2)
    and pads on its own ``padding_side``; rows longer than ``max_length`` keep their first
    ``max_length`` tokens. Rows are padded to the batch's longest row (callers that need one
    static shape, as :class:`~bonjax.rewards.interface.RetokenizedReward`, pad to ``max_length``).
    """

    def __init__(self, tokenizer, max_length: int):
        if max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str):
            raise ValueError("texts must be a sequence of strings, got one string")
        enc = self.tokenizer(list(texts), max_length=self.max_length, truncation=True,
                             padding="longest", return_tensors="np")
        return (np.asarray(enc["input_ids"], np.int32),
                np.asarray(enc["attention_mask"], np.int32))


def minilm_tokenizer(max_length: int = 128, pad_multiple: int | None = None,
                     keep_tail: int = 0) -> EncoderTokenizer:
    """The WordPiece tokenizer of all-MiniLM-L6-v2 (uncased, 30522 tokens)."""
    return EncoderTokenizer(minilm_dir() / "tokenizer.json", max_length, pad_multiple, keep_tail)
