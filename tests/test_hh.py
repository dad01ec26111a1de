"""Anthropic HH dialogues: prompt/reply split, chat messages, file errors, hub access offline."""

import re

import pytest
from _preference_fixtures import (
    HH_CHOSEN,
    HH_PROMPT_TURNS,
    HH_REJECTED,
    dialogue,
    hh_records,
    write_hh,
    write_jsonl,
)

from bonjax.data import hh


@pytest.fixture
def hh_path(tmp_path):
    return write_hh(tmp_path / "train.jsonl")


def test_multi_turn_split(hh_path):
    records = hh.read_hh(hh_path)
    assert len(records) == 3
    for record, turns, chosen, rejected, raw in zip(records, HH_PROMPT_TURNS, HH_CHOSEN,
                                                    HH_REJECTED, hh_records(), strict=True):
        assert record.prompt == dialogue(*turns) + "\n\nAssistant:"
        assert record.chosen == chosen and record.rejected == rejected
        assert record.prompt + record.response_separator + record.chosen == raw["chosen"]
        assert record.prompt + record.response_separator + record.rejected == raw["rejected"]
        assert record.responses == {"chosen": chosen, "rejected": rejected}
    assert records[2].source == f"{hh_path} line 3"


def test_dialogue_messages(hh_path):
    record = hh.read_hh(hh_path)[2]  # human, assistant, human, assistant, human, assistant:
    assert record.messages == (
        {"role": "user", "content": "What rhymes with lantern?"},
        {"role": "assistant", "content": "Not much: maybe 'pattern' loosely."},
        {"role": "user", "content": "Give me a short poem with it then."},
        {"role": "assistant", "content": "A lantern glows, a quiet pattern grows."},
        {"role": "user", "content": "Make it longer."},
    )
    # Consecutive turns of one role are joined; only a final *empty* assistant turn is dropped.
    text = "\n\nHuman: Hello.\n\nHuman: Anyone there?\n\nAssistant: Yes.\n\nAssistant:"
    assert hh.dialogue_messages(text) == (
        {"role": "user", "content": "Hello.\n\nAnyone there?"},
        {"role": "assistant", "content": "Yes."},
    )
    with pytest.raises(ValueError, match="before its first turn"):
        hh.dialogue_messages("preamble\n\nHuman: Hi\n\nAssistant:")


def test_split_dialogue_strips_one_space():
    assert hh.split_dialogue("\n\nHuman: a\n\nAssistant:  two spaces") == (
        "\n\nHuman: a\n\nAssistant:", " two spaces")
    assert hh.split_dialogue("\n\nHuman: a\n\nAssistant:") == ("\n\nHuman: a\n\nAssistant:", "")


def test_gzip_reads_the_same(tmp_path, hh_path):
    gz = write_hh(tmp_path / "train.jsonl.gz")
    plain, packed = hh.read_hh(hh_path), hh.read_hh(gz)
    assert [(r.prompt, r.chosen, r.rejected) for r in plain] == [
        (r.prompt, r.chosen, r.rejected) for r in packed]
    assert packed[0].source == f"{gz} line 1"
    assert len(hh.read_hh(hh_path, gz)) == 6


@pytest.mark.parametrize("bad_line, message", [
    ('["chosen", "rejected"]', "expected a JSON object, got list"),
    ('{"chosen": "x"', "not valid JSON"),
    ('{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b"}', "no 'rejected' field"),
    ('{"chosen": 3, "rejected": "x"}', "'chosen' is int, not a string"),
    ('{"chosen": "\\n\\nHuman: only a question", "rejected": "\\n\\nHuman: only a question"}',
     "'chosen' dialogue has no '\\\\n\\\\nAssistant:' turn"),
    ('{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b", '
     '"rejected": "\\n\\nHuman: c\\n\\nAssistant: d"}',
     "'rejected' does not start with the prompt"),
])
def test_errors_name_file_and_line(tmp_path, bad_line, message):
    rows = hh_records()
    path = write_jsonl(tmp_path / "bad.jsonl", [rows[0], "", bad_line, rows[1]])
    with pytest.raises(ValueError, match=re.escape(f"{path} line 3") + ".*" + message):
        hh.read_hh(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hh.read_hh(tmp_path / "absent.jsonl")


def test_offline_hub_names_local_alternative(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError) as info:
        hh.hh_file("helpful-base", "train", cache_dir=tmp_path)
    message = str(info.value)
    assert "helpful-base/train.jsonl.gz" in message and "Anthropic/hh-rlhf" in message
    assert "HF_HUB_OFFLINE on" in message and "bonjax.data.read_hh(path)" in message
    with pytest.raises(FileNotFoundError, match="read_hh"):
        hh.load_hh("test", ["harmless-base"], cache_dir=tmp_path)


def test_hub_arguments_checked():
    with pytest.raises(ValueError, match="red-team-attempts"):
        hh.hh_file("red-team-attempts", "train")
    with pytest.raises(ValueError, match="'valid'"):
        hh.hh_file("helpful-base", "valid")
    with pytest.raises(ValueError, match="subsets is empty"):
        hh.load_hh("train", [])
