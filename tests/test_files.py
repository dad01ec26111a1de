"""Dataset files: JSONL (.gz) reading with line numbers, the hub's offline error."""

import re

import pytest
from _preference_fixtures import write_jsonl

from bonjax.data import files


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.jsonl.gz"])
def test_read_jsonl_numbers_lines(tmp_path, name):
    path = write_jsonl(tmp_path / name, [{"a": 1}, "  ", {"b": "é"}])
    assert list(files.read_jsonl(path)) == [(1, {"a": 1}), (3, {"b": "é"})]


def test_read_jsonl_errors(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"a": 1}, "null"])
    with pytest.raises(ValueError, match=re.escape(f"{path} line 2: expected a JSON object, "
                                                   "got NoneType")):
        list(files.read_jsonl(path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(files.read_jsonl(tmp_path / "absent.jsonl"))


def test_hub_file_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE on.*: use the local copy"):
        files.hub_dataset_file("someone/some-dataset", "data/train.jsonl", cache_dir=tmp_path,
                               local_alternative="use the local copy")
