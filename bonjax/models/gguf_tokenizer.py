"""The tokenizer a GGUF file carries, built without PyTorch.

``AutoTokenizer.from_pretrained(dir, gguf_file=...)`` reads the file's metadata with transformers'
GGUF reader, whose module imports ``torch``; the main job's environment holds none. This module
reads the same metadata with the ``gguf`` package (which also reads the weights) the way that
reader does (string arrays in full only for the vocabulary and the merges, other string arrays
as their length, numbers and numeric arrays as they are) and hands it to transformers' own
converter (``gguf_tokenizer_mapping``, which needs no torch). The result tokenizes as the
``AutoTokenizer`` path does: ``tests/test_gguf_tokenizer.py`` compares them where torch is
installed, and loads the tokenizer with ``torch`` unimportable.
"""

from __future__ import annotations

import os
from pathlib import Path

from bonjax.models.gguf import gguf_reader
from bonjax.models.weights import CheckpointError

__all__ = ["gguf_metadata", "gguf_tokenizer"]

# The string arrays transformers' reader keeps in full (``get_gguf_tokenizer``).
_FULL_STRING_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges")

# ``get_gguf_tokenizer``'s special tokens: tokenizer argument -> metadata id field.
_SPECIAL_TOKENS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id",
                   "unk_token": "unknown_token_id", "pad_token": "padding_token_id"}


def gguf_metadata(path: str | os.PathLike) -> dict:
    """The file's metadata as transformers' GGUF reader returns it (no tensor data read)."""
    import gguf

    path = Path(path)
    reader = gguf_reader(path)
    metadata = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):  # the header (version, counts), not metadata
            continue
        value = field.contents()
        is_string_array = (len(field.types) == 2 and field.types[0] == gguf.GGUFValueType.ARRAY
                           and field.types[1] == gguf.GGUFValueType.STRING)
        if is_string_array and key not in _FULL_STRING_ARRAYS:
            value = len(value)
        metadata[key] = value
    if "general.architecture" not in metadata:
        raise CheckpointError(f"{path} has no general.architecture in its metadata")
    return metadata


def gguf_tokenizer(path: str | os.PathLike):
    """A ``PreTrainedTokenizerFast`` for the tokenizer in the GGUF file at ``path``."""
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    metadata = gguf_metadata(path)
    grouped = {group: {name: metadata[f"tokenizer.{key}"] for key, name in renames.items()
                       if f"tokenizer.{key}" in metadata}
               for group, renames in GGUF_TOKENIZER_MAPPING.items()}
    tokenizer_dict, tokenizer_config = grouped["tokenizer"], grouped["tokenizer_config"]
    if "tokens" not in tokenizer_dict:
        raise CheckpointError(f"{path} carries no tokenizer (no tokenizer.ggml.tokens)")
    tokenizer_type = tokenizer_dict.get("tokenizer_type")
    if tokenizer_type == "llama":  # as get_gguf_tokenizer: llama.cpp's default for such files
        tokenizer_config.setdefault("add_bos_token", True)
    elif tokenizer_type == "gemma4":
        tokenizer_config["add_bos_token"] = False
    for name, key in _SPECIAL_TOKENS.items():
        token_id = metadata.get(f"tokenizer.ggml.{key}")
        tokenizer_config[name] = (tokenizer_dict["tokens"][token_id] if token_id is not None
                                  else None)
    architecture = metadata["general.architecture"]
    backend, extra = convert_gguf_tokenizer(architecture, tokenizer_dict)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **tokenizer_config, **extra,
                                   padding_side=_padding_side(architecture))


def _padding_side(architecture: str) -> str:
    """The padding side of the tokenizer class transformers maps the architecture to (Gemma's
    pads on the left), kept in the saved tokenizer_config.json."""
    from transformers.models.auto.tokenization_auto import (
        TOKENIZER_MAPPING_NAMES,
        tokenizer_class_from_name,
    )

    name = TOKENIZER_MAPPING_NAMES.get(architecture)  # a class name, or None
    cls = tokenizer_class_from_name(name) if name else None
    return getattr(cls, "padding_side", "right")
