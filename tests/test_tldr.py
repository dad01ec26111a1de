"""Reddit TL;DR records: the summarisation prompt, field names, file errors."""

import re

import pytest
from _preference_fixtures import TLDR_RECORDS, write_jsonl, write_tldr

from bonjax.data import tldr


def test_prompt_and_summary(tmp_path):
    path = write_tldr(tmp_path / "train.jsonl")
    records = tldr.read_tldr(path)
    assert len(records) == 2
    first = records[0]
    assert first.prompt == (
        "SUBREDDIT: r/gardening\n\nTITLE: My tomato seedlings keep falling over\n\nPOST: I "
        "started tomatoes indoors three weeks ago. They are tall and thin and bend towards the "
        "window.\nI water them every day. What am I doing wrong?\n\nTL;DR:")
    assert first.summary == "leggy tomato seedlings leaning to the window, what should I change?"
    assert first.responses == {"summary": first.summary}
    assert first.messages == ({"role": "user", "content": first.prompt},)
    assert first.response_separator == " "
    assert records[1].source == f"{path} line 2"


def test_other_field_names_and_formats(tmp_path):
    row = {"subreddit": "r/cooking", "title": "Soup", "selftext": "Too salty.", "tldr": " salt "}
    (record,) = tldr.read_tldr(write_jsonl(tmp_path / "a.jsonl", [row]))
    assert record.post == "Too salty." and record.summary == "salt"
    assert record.prompt.startswith("SUBREDDIT: r/cooking\n\n")  # no r/r/
    (short,) = tldr.read_tldr(write_jsonl(tmp_path / "b.jsonl", [row]),
                              prompt_format="{title}: {post}\nTL;DR:")
    assert short.prompt == "Soup: Too salty.\nTL;DR:"


def test_gzip_reads_the_same(tmp_path):
    plain = tldr.read_tldr(write_tldr(tmp_path / "valid.jsonl"))
    packed = tldr.read_tldr(write_tldr(tmp_path / "valid.jsonl.gz"))
    assert [(r.prompt, r.summary) for r in plain] == [(r.prompt, r.summary) for r in packed]


@pytest.mark.parametrize("field", ["subreddit", "title", "post", "summary"])
def test_missing_field_named(tmp_path, field):
    row = {k: v for k, v in TLDR_RECORDS[1].items() if k != field}
    path = write_jsonl(tmp_path / "bad.jsonl", [TLDR_RECORDS[0], row])
    with pytest.raises(ValueError, match=re.escape(f"{path} line 2: no {field} field")):
        tldr.read_tldr(path)


def test_bad_values(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [dict(TLDR_RECORDS[0], title=None), "3"])
    with pytest.raises(ValueError, match=re.escape(f"{path} line 1: 'title' is NoneType")):
        tldr.read_tldr(path)
    path = write_jsonl(tmp_path / "bad2.jsonl", [TLDR_RECORDS[0], "3"])
    with pytest.raises(ValueError, match=re.escape(f"{path} line 2: expected a JSON object")):
        tldr.read_tldr(path)
