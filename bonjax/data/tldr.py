"""Reddit TL;DR summarisation (the filtered TL;DR data of Stiennon et al. 2020): a post and the
summary its author wrote.

Format: one JSON object per line with string fields for the subreddit, the title, the post and
the reference summary, as in OpenAI's ``tldr_3_filtered/{train,valid,test}.jsonl`` of
summarize-from-feedback (fields ``id``, ``subreddit``, ``title``, ``post``, ``summary``). The
common other names are accepted too, the first one present wins:

=============  ============================================
field          names accepted
=============  ============================================
subreddit      ``subreddit``
title          ``title``
post           ``post``, ``selftext``, ``document``, ``content``
summary        ``summary``, ``tldr``, ``reference``
=============  ============================================

A missing or non-string field raises ``ValueError`` naming the file, the line and the field.

Prompt (:data:`TLDR_PROMPT_FORMAT`): ``"SUBREDDIT: r/{subreddit}\\n\\nTITLE: {title}\\n\\nPOST:
{post}\\n\\nTL;DR:"``, the query format of OpenAI's summarize-from-feedback (``tldr_task`` in
``summarize_from_feedback/utils/experiment_helpers.py``), which TRL's ``trl-lib/tldr`` and the
"N+ implementation details of RLHF" replication keep. Fields go in as they are, except that a
subreddit already written ``r/...`` loses that prefix. The response is the summary, stripped of
surrounding whitespace; in the plain-text format it follows the prompt after one space (their
reference format ``" {reference}"``).

Files: local JSONL only (``.jsonl`` or ``.jsonl.gz``). No public hub dataset holding these
records as JSONL files could be verified (the hub copies seen are parquet), so nothing is
downloaded here; OpenAI publishes the files at
``https://openaipublic.blob.core.windows.net/summarize-from-feedback/datasets/tldr_3_filtered/``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, ClassVar

from bonjax.data.files import read_jsonl

__all__ = ["TLDR_FIELDS", "TLDR_PROMPT_FORMAT", "TLDRRecord", "parse_tldr", "read_tldr",
           "tldr_prompt"]

TLDR_PROMPT_FORMAT = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"
TLDR_FIELDS: Mapping[str, tuple[str, ...]] = {
    "subreddit": ("subreddit",),
    "title": ("title",),
    "post": ("post", "selftext", "document", "content"),
    "summary": ("summary", "tldr", "reference"),
}


@dataclasses.dataclass(frozen=True)
class TLDRRecord:
    """One Reddit post with its reference summary and its summarisation prompt."""

    subreddit: str
    title: str
    post: str
    summary: str  # the reference summary, stripped
    prompt: str  # the post in the prompt format it was read with
    source: str  # "<file> line <n>"

    response_separator: ClassVar[str] = " "  # between prompt and summary in the plain text

    @property
    def messages(self) -> tuple[dict[str, str], ...]:
        """The prompt as one user message, for tokenizers with a chat template."""
        return ({"role": "user", "content": self.prompt},)

    @property
    def responses(self) -> Mapping[str, str]:
        return {"summary": self.summary}


def tldr_prompt(subreddit: str, title: str, post: str,
                prompt_format: str = TLDR_PROMPT_FORMAT) -> str:
    """The summarisation prompt of one post (a leading ``r/`` of ``subreddit`` is dropped)."""
    subreddit = subreddit[2:] if subreddit.startswith("r/") else subreddit
    return prompt_format.format(subreddit=subreddit, title=title, post=post)


def _field(obj: Mapping[str, Any], field: str, source: str) -> str:
    names = TLDR_FIELDS[field]
    for name in names:
        if name in obj:
            if not isinstance(obj[name], str):
                raise ValueError(f"{source}: {name!r} is {type(obj[name]).__name__}, "
                                 "not a string")
            return obj[name]
    raise ValueError(f"{source}: no {field} field (one of {', '.join(names)}; fields: "
                     f"{sorted(obj)})")


def parse_tldr(obj: Mapping[str, Any], source: str,
               prompt_format: str = TLDR_PROMPT_FORMAT) -> TLDRRecord:
    """The :class:`TLDRRecord` of one parsed JSON object; ``source`` names it in errors."""
    subreddit, title, post, summary = (_field(obj, f, source) for f in TLDR_FIELDS)
    return TLDRRecord(subreddit=subreddit, title=title, post=post, summary=summary.strip(),
                      prompt=tldr_prompt(subreddit, title, post, prompt_format), source=source)


def read_tldr(*paths: str | os.PathLike,
              prompt_format: str = TLDR_PROMPT_FORMAT) -> tuple[TLDRRecord, ...]:
    """The records of local TL;DR JSONL files (``.jsonl`` or ``.jsonl.gz``), file by file in
    line order. ``prompt_format`` takes the fields ``subreddit``, ``title`` and ``post``."""
    if not paths:
        raise ValueError("read_tldr needs at least one path")
    return tuple(parse_tldr(obj, f"{path} line {line}", prompt_format)
                 for path in paths for line, obj in read_jsonl(path))
