"""Anthropic HH-RLHF dialogues (Bai et al. 2022): preference pairs of assistant replies.

Format of the original files (``Anthropic/hh-rlhf`` on the Hugging Face hub, one directory per
subset, each with ``train.jsonl.gz`` and ``test.jsonl.gz``): one JSON object per line with the
string fields ``chosen`` and ``rejected``. Each string is a dialogue of turns
``"\\n\\nHuman: <text>"`` and ``"\\n\\nAssistant: <text>"``; the two strings share every turn
but the last assistant reply. Other fields are ignored.

Split of a record:

- ``prompt``: ``chosen`` up to and including its last ``"\\n\\nAssistant:"``;
- ``chosen`` / ``rejected``: the rest of each string after that prompt, with one leading space
  removed (``prompt + " " + chosen`` gives back the original string where it had that space).

``rejected`` must start with the same prompt. A line that is not a JSON object, lacks a field,
holds a non-string, has no ``"\\n\\nAssistant:"`` turn or whose two strings do not share the
prompt raises ``ValueError`` naming the file and the line.

For tokenizers with a chat template the prompt becomes chat messages
(:func:`dialogue_messages`). The ``red-team-attempts`` subset has another format (one transcript
per record, no pairs) and is not read here.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from bonjax.data.files import hub_dataset_file, read_jsonl

__all__ = [
    "ASSISTANT",
    "HH_REPO",
    "HH_SPLITS",
    "HH_SUBSETS",
    "HUMAN",
    "HHRecord",
    "dialogue_messages",
    "hh_file",
    "load_hh",
    "parse_hh",
    "read_hh",
    "split_dialogue",
]

HH_REPO = "Anthropic/hh-rlhf"
HH_SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
HH_SPLITS = ("train", "test")
HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


@dataclasses.dataclass(frozen=True)
class HHRecord:
    """One preference pair: a dialogue prompt and two assistant replies to it."""

    prompt: str  # the dialogue up to and including its last "\n\nAssistant:"
    chosen: str  # the preferred reply, one leading space removed
    rejected: str  # the other reply, one leading space removed
    source: str  # "<file> line <n>"

    response_separator: ClassVar[str] = " "  # between prompt and reply in the original text

    @property
    def messages(self) -> tuple[dict[str, str], ...]:
        """The prompt as chat messages (:func:`dialogue_messages`)."""
        return dialogue_messages(self.prompt)

    @property
    def responses(self) -> Mapping[str, str]:
        return {"chosen": self.chosen, "rejected": self.rejected}


def split_dialogue(text: str) -> tuple[str, str]:
    """``(prompt, reply)``: ``text`` up to and including its last ``"\\n\\nAssistant:"``, and the
    rest with one leading space removed. Raises ``ValueError`` if there is no assistant turn."""
    end = text.rfind(ASSISTANT)
    if end < 0:
        raise ValueError(f"dialogue has no {ASSISTANT!r} turn: {text[:80]!r}")
    end += len(ASSISTANT)
    reply = text[end:]
    return text[:end], reply[1:] if reply.startswith(" ") else reply


def dialogue_messages(prompt: str) -> tuple[dict[str, str], ...]:
    """The turns of an HH dialogue as ``{"role": "user" | "assistant", "content": ...}``.

    Human turns become ``"user"``, Assistant turns ``"assistant"``; contents are stripped of
    surrounding whitespace. A final empty assistant turn (the ``"\\n\\nAssistant:"`` a prompt
    ends with) is dropped, so a chat template's generation prompt takes its place. Consecutive
    turns of one role are joined with ``"\\n\\n"`` (chat templates expect alternating roles).
    Text before the first turn must be whitespace; otherwise ``ValueError``.
    """
    parts = _TURN.split(prompt)
    if parts[0].strip():
        raise ValueError(f"dialogue text before its first turn: {parts[0][:80]!r}")
    if len(parts) == 1:
        raise ValueError(f"dialogue has no {HUMAN!r} or {ASSISTANT!r} turn: {prompt[:80]!r}")
    messages: list[dict[str, str]] = []
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        role, content = _ROLES[role], content.strip()
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] = "\n\n".join(c for c in (messages[-1]["content"], content)
                                                  if c)
        else:
            messages.append({"role": role, "content": content})
    if messages[-1] == {"role": "assistant", "content": ""}:
        messages.pop()
    return tuple(messages)


def parse_hh(obj: Mapping[str, Any], source: str) -> HHRecord:
    """The :class:`HHRecord` of one parsed JSON object; ``source`` names it in errors."""
    for key in ("chosen", "rejected"):
        if key not in obj:
            raise ValueError(f"{source}: no {key!r} field (fields: {sorted(obj)})")
        if not isinstance(obj[key], str):
            raise ValueError(f"{source}: {key!r} is {type(obj[key]).__name__}, not a string")
    try:
        prompt, chosen = split_dialogue(obj["chosen"])
    except ValueError as err:
        raise ValueError(f"{source}: 'chosen' {err}") from None
    if not obj["rejected"].startswith(prompt):
        raise ValueError(f"{source}: 'rejected' does not start with the prompt of 'chosen' "
                         f"(everything up to its last {ASSISTANT!r})")
    rejected = obj["rejected"][len(prompt):]
    rejected = rejected[1:] if rejected.startswith(" ") else rejected
    return HHRecord(prompt=prompt, chosen=chosen, rejected=rejected, source=source)


def read_hh(*paths: str | os.PathLike) -> tuple[HHRecord, ...]:
    """The records of local HH files in the original format (``.jsonl`` or ``.jsonl.gz``), file
    by file in line order."""
    if not paths:
        raise ValueError("read_hh needs at least one path")
    return tuple(parse_hh(obj, f"{path} line {line}")
                 for path in paths for line, obj in read_jsonl(path))


def hh_file(subset: str, split: str, *, revision: str | None = None,
            cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The local path of ``<subset>/<split>.jsonl.gz`` of ``Anthropic/hh-rlhf``, downloaded from
    the hub if not cached; offline (and not cached) a ``FileNotFoundError`` that names
    :func:`read_hh` on local files as the alternative."""
    if subset not in HH_SUBSETS:
        raise ValueError(f"subset must be one of {HH_SUBSETS}, got {subset!r}")
    if split not in HH_SPLITS:
        raise ValueError(f"split must be one of {HH_SPLITS}, got {split!r}")
    filename = f"{subset}/{split}.jsonl.gz"
    return hub_dataset_file(
        HH_REPO, filename, revision=revision, cache_dir=cache_dir,
        local_alternative=f"copy {filename} (or its .jsonl) here by other means and read it with "
                          "bonjax.data.read_hh(path)")


def load_hh(split: str, subsets: Iterable[str] = HH_SUBSETS, *, revision: str | None = None,
            cache_dir: str | os.PathLike | None = None) -> tuple[HHRecord, ...]:
    """The records of ``split`` of the given subsets (all four pair subsets by default), read
    from the hub's files through :func:`hh_file`."""
    subsets = tuple(subsets)
    if not subsets:
        raise ValueError("subsets is empty")
    return read_hh(*(hh_file(s, split, revision=revision, cache_dir=cache_dir)
                     for s in subsets))
