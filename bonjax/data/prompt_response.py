"""Prompt-response text records as token arrays for a policy's Hugging Face tokenizer.

A record (:class:`PromptRecord`; :class:`~bonjax.data.hh.HHRecord`,
:class:`~bonjax.data.tldr.TLDRRecord`) gives its prompt twice, as the dataset's own text
(``prompt``) and as chat messages (``messages``), and its responses by name (``responses``,
e.g. ``chosen`` and ``rejected``).

Prompt tokens of a record:

- tokenizer with a chat template (``tokenizer.chat_template is not None``): the text of
  ``apply_chat_template(messages, add_generation_prompt=True, tokenize=False)``, encoded without
  added special tokens (the template writes BOS itself, as transformers' own tokenising path
  assumes);
- otherwise ``[BOS]`` if the tokenizer starts every text with it (:func:`adds_bos`; Gemma does,
  GPT-2 does not), then ``prompt`` encoded without special tokens.

A prompt longer than ``max_prompt_tokens`` keeps its *last* tokens (the end of a long dialogue,
next to the reply); a leading BOS stays first: ``[BOS] + ids[-(max_prompt_tokens - 1):]``. With a
chat template the cut may fall inside the first kept turn, which then lacks its turn marker.

Response tokens: the response text encoded without special tokens (after the record's
``response_separator`` for the plain-text prompt, so ``prompt + separator + response`` is the
dataset's own text; alone after a chat template's generation prompt), then EOS. Prompt and
response are tokenised separately. ``max_response_tokens`` counts the EOS: a response of at most
``max_response_tokens - 1`` tokens ends with EOS; a longer one keeps its first
``max_response_tokens`` tokens and no EOS, and is flagged in ``response_truncated``.

Arrays (:meth:`PromptResponses.prompts`, :meth:`PromptResponses.responses`): prompts
left-padded ``(tokens_BxP int32, mask_BxP bool)`` as a decoder's prefill takes them (the layout
of :func:`bonjax.experiment.prompt_batch`); responses right-padded ``(tokens_BxT int32,
mask_BxT bool)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from bonjax.checks import check_int

__all__ = [
    "PromptRecord",
    "PromptResponses",
    "adds_bos",
    "pad_left",
    "pad_right",
    "tokenize_records",
    "truncate_left",
    "uses_chat_template",
]


class PromptRecord(Protocol):
    """What :func:`tokenize_records` reads from a record."""

    @property
    def prompt(self) -> str: ...  # the prompt in the dataset's own text format

    @property
    def messages(self) -> Sequence[Mapping[str, str]]: ...  # the same prompt as chat turns

    @property
    def responses(self) -> Mapping[str, str]: ...  # response name -> text

    @property
    def response_separator(self) -> str: ...  # text between prompt and response in the plain text


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer itself starts every text with its BOS token (Gemma does)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos is not None and tokenizer("x")["input_ids"][:1] == [bos]


def uses_chat_template(tokenizer) -> bool:
    """Whether prompts go through the tokenizer's chat template (it has one)."""
    return getattr(tokenizer, "chat_template", None) is not None


def truncate_left(ids: Sequence[int], max_tokens: int,
                  bos_id: int | None = None) -> tuple[int, ...]:
    """The last ``max_tokens`` of ``ids``; if ``ids`` starts with ``bos_id``, that BOS stays first
    and the last ``max_tokens - 1`` others follow it."""
    max_tokens = check_int("max_tokens", max_tokens, minimum=1)
    ids = tuple(int(t) for t in ids)
    if len(ids) <= max_tokens:
        return ids
    if bos_id is not None and ids[0] == bos_id:
        if max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2 to keep BOS and one token, got "
                             f"{max_tokens}")
        return ids[:1] + ids[len(ids) - (max_tokens - 1):]
    return ids[len(ids) - max_tokens:]


def _padded(token_ids: Sequence[Sequence[int]], pad_id: int, length: int | None,
            left: bool) -> tuple[np.ndarray, np.ndarray]:
    if not token_ids:
        raise ValueError("no sequences to pad")
    longest = max(len(ids) for ids in token_ids)
    L = longest if length is None else check_int("length", length, minimum=1)
    if L < longest:
        raise ValueError(f"length {length} is shorter than the longest sequence ({longest} "
                         "tokens)")
    tokens_BxL = np.full((len(token_ids), L), pad_id, np.int32)
    mask_BxL = np.zeros((len(token_ids), L), bool)
    for b, ids in enumerate(token_ids):
        span = slice(L - len(ids), L) if left else slice(0, len(ids))
        tokens_BxL[b, span] = ids
        mask_BxL[b, span] = True
    return tokens_BxL, mask_BxL


def pad_left(token_ids: Sequence[Sequence[int]], pad_id: int,
             length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded ``(tokens_BxP int32, mask_BxP bool)``; ``P`` is ``length`` or the longest."""
    return _padded(token_ids, pad_id, length, left=True)


def pad_right(token_ids: Sequence[Sequence[int]], pad_id: int,
              length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``(tokens_BxT int32, mask_BxT bool)``; ``T`` is ``length`` or the longest."""
    return _padded(token_ids, pad_id, length, left=False)


@dataclasses.dataclass(frozen=True)
class PromptResponses:
    """``B`` prompts with the same named responses each, as unpadded token ids."""

    prompt_ids: tuple[tuple[int, ...], ...]  # [B] BOS / chat template, left-truncated
    response_ids: Mapping[str, tuple[tuple[int, ...], ...]]  # name -> [B], EOS unless cut
    prompt_truncated_B: np.ndarray  # [B] bool: the prompt lost tokens on the left
    response_truncated: Mapping[str, np.ndarray]  # name -> [B] bool: cut, no EOS
    chat_template: bool  # whether the prompts went through the tokenizer's chat template

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def response_names(self) -> tuple[str, ...]:
        return tuple(self.response_ids)

    def prompts(self, pad_id: int, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded ``(tokens_BxP int32, mask_BxP bool)``; ``P`` is ``length`` or the
        longest prompt."""
        return pad_left(self.prompt_ids, pad_id, length)

    def responses(self, name: str, pad_id: int,
                  length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded ``(tokens_BxT int32, mask_BxT bool)`` of the responses ``name``; ``T`` is
        ``length`` or the longest of them."""
        if name not in self.response_ids:
            raise ValueError(f"no responses named {name!r}; have {self.response_names}")
        return pad_right(self.response_ids[name], pad_id, length)

    def take(self, indices: Sequence[int] | np.ndarray) -> PromptResponses:
        """The records at ``indices`` (a batch), in that order."""
        idx = [int(i) for i in np.asarray(indices).reshape(-1)]
        if any(not -len(self) <= i < len(self) for i in idx):
            raise ValueError(f"indices must lie in [{-len(self)}, {len(self)}), got {idx}")
        return PromptResponses(
            prompt_ids=tuple(self.prompt_ids[i] for i in idx),
            response_ids={n: tuple(ids[i] for i in idx) for n, ids in self.response_ids.items()},
            prompt_truncated_B=self.prompt_truncated_B[idx],
            response_truncated={n: t[idx] for n, t in self.response_truncated.items()},
            chat_template=self.chat_template)


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _where(record, b: int) -> str:
    return getattr(record, "source", f"record {b}")


def tokenize_records(records: Sequence[PromptRecord], tokenizer, *, max_prompt_tokens: int,
                     max_response_tokens: int, eos_id: int | None = None) -> PromptResponses:
    """Prompt and response token ids of ``records`` (module docstring: the exact rules).

    ``eos_id`` ends each response that fits (default ``tokenizer.eos_token_id``; a chat model
    that stops at its end-of-turn token takes that token's id). Every record must have the same
    response names.
    """
    max_prompt_tokens = check_int("max_prompt_tokens", max_prompt_tokens, minimum=1)
    max_response_tokens = check_int("max_response_tokens", max_response_tokens, minimum=1)
    eos_id = getattr(tokenizer, "eos_token_id", None) if eos_id is None else eos_id
    if eos_id is None:
        raise ValueError("the tokenizer has no eos_token_id: pass eos_id")
    eos_id = check_int("eos_id", eos_id, minimum=0)
    records = list(records)
    if not records:
        raise ValueError("no records to tokenize")
    names = tuple(records[0].responses)
    for b, record in enumerate(records):
        if tuple(record.responses) != names:
            raise ValueError(f"{_where(record, b)}: responses {tuple(record.responses)}, "
                             f"expected {names} as in the first record")

    chat = uses_chat_template(tokenizer)
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if chat:
        texts = [tokenizer.apply_chat_template([dict(m) for m in r.messages], tokenize=False,
                                               add_generation_prompt=True) for r in records]
        full_prompts = _encode(tokenizer, texts)
    else:
        bos = [bos_id] if adds_bos(tokenizer) else []
        full_prompts = [bos + ids for ids in _encode(tokenizer, [r.prompt for r in records])]
    if max_prompt_tokens < 2 and any(ids[:1] == [bos_id] for ids in full_prompts):
        raise ValueError(f"max_prompt_tokens must be >= 2 for prompts that start with BOS, got "
                         f"{max_prompt_tokens}")
    prompt_ids = tuple(truncate_left(ids, max_prompt_tokens, bos_id) for ids in full_prompts)
    prompt_truncated_B = np.array([len(p) < len(f) for p, f in zip(prompt_ids, full_prompts,
                                                                    strict=True)], bool)

    response_ids, response_truncated = {}, {}
    for name in names:
        texts = [("" if chat else r.response_separator) + r.responses[name] for r in records]
        encoded = _encode(tokenizer, texts)
        response_ids[name] = tuple(
            tuple(ids) + (eos_id,) if len(ids) < max_response_tokens
            else tuple(ids[:max_response_tokens]) for ids in encoded)
        response_truncated[name] = np.array([len(ids) >= max_response_tokens
                                             for ids in encoded], bool)
    return PromptResponses(prompt_ids=prompt_ids, response_ids=response_ids,
                           prompt_truncated_B=prompt_truncated_B,
                           response_truncated=response_truncated, chat_template=chat)
