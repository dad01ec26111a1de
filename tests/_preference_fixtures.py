"""Small HH-format and TL;DR-format JSONL files with invented text, written where a test asks.

The records imitate the layout of the public files (HH: ``chosen`` / ``rejected`` dialogues of
``"\\n\\nHuman: "`` / ``"\\n\\nAssistant: "`` turns; TL;DR: ``id``, ``subreddit``, ``title``,
``post``, ``summary``); every sentence in them was made up for these tests.
"""

from __future__ import annotations

import gzip
import json
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any


def dialogue(*turns: str) -> str:
    """An HH dialogue string: turns alternate Human, Assistant, Human, ..."""
    roles = ("Human", "Assistant")
    return "".join(f"\n\n{roles[i % 2]}: {text}" for i, text in enumerate(turns))


HH_PROMPT_TURNS = (
    ("How often should I water a basil plant on a windowsill?",),
    ("I want to learn to juggle.", "Start with two scarves; they fall slowly.",
     "And after scarves?"),
    ("What rhymes with lantern?", "Not much: maybe 'pattern' loosely.",
     "Give me a short poem with it then.", "A lantern glows, a quiet pattern grows.",
     "Make it longer."),
)
HH_CHOSEN = (
    "When the top centimetre of soil feels dry, usually every two or three days.",
    "Move to three beanbags and practise the cascade pattern slowly.",
    "A lantern glows in evening's calm,\nits quiet pattern like a psalm.",
)
HH_REJECTED = (
    "Basil is green.",
    "Try juggling knives.",
    "No.",
)


def hh_records() -> list[dict[str, str]]:
    """Three HH records: one, two and three human turns."""
    return [{"chosen": dialogue(*turns, chosen), "rejected": dialogue(*turns, rejected)}
            for turns, chosen, rejected in zip(HH_PROMPT_TURNS, HH_CHOSEN, HH_REJECTED,
                                               strict=True)]


def hh_variants(count: int) -> list[dict[str, str]]:
    """``count`` distinct HH records: the three of :func:`hh_records` in turn, the first human
    turn of the k-th repetition ending in " (k)" (k >= 1), the replies unchanged."""
    records = []
    for i in range(count):
        k, (turns, chosen, rejected) = divmod(i, 3)[0], list(zip(
            HH_PROMPT_TURNS, HH_CHOSEN, HH_REJECTED, strict=True))[i % 3]
        turns = (turns[0] + (f" ({k})" if k else ""),) + turns[1:]
        records.append({"chosen": dialogue(*turns, chosen),
                        "rejected": dialogue(*turns, rejected)})
    return records


TLDR_RECORDS = (
    {"id": "t1", "subreddit": "gardening",
     "title": "My tomato seedlings keep falling over",
     "post": "I started tomatoes indoors three weeks ago. They are tall and thin and bend "
             "towards the window.\nI water them every day. What am I doing wrong?",
     "summary": " leggy tomato seedlings leaning to the window, what should I change?"},
    {"id": "t2", "subreddit": "bicycling",
     "title": "Chain slips on the smallest cog",
     "post": "After cleaning my bike the chain jumps whenever I shift to the smallest cog "
             "on hills.",
     "summary": "chain skips on smallest cog after cleaning"},
)


def write_jsonl(path: pathlib.Path, rows: Iterable[Mapping[str, Any] | str]) -> pathlib.Path:
    """Writes one JSON line per row (a string row is written as it is); ``.gz`` paths are
    gzip-compressed."""
    lines = "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(lines)
    else:
        path.write_text(lines, encoding="utf-8")
    return path


def write_hh(path: pathlib.Path) -> pathlib.Path:
    return write_jsonl(path, hh_records())


def write_tldr(path: pathlib.Path) -> pathlib.Path:
    return write_jsonl(path, TLDR_RECORDS)
