"""Export to Hugging Face: a decoder's parameters as a checkpoint directory transformers loads.

:func:`save_pretrained` writes what ``transformers.AutoModelForCausalLM.from_pretrained`` and
:func:`bonjax.models.weights.load_hf_decoder` read::

    directory/
      config.json             the family's model_type and fields (HFFamily.to_hf_config)
      generation_config.json  the BOS / EOS / pad token ids
      model.safetensors       tensors in transformers' names and layouts (HFFamily.to_hf_weights)
      tokenizer files         tokenizer.save_pretrained(directory), when a tokenizer is given

Tensors are written with ``safetensors.numpy`` (no torch). Exported and re-imported, a model has
bitwise the parameters it had (float32), whatever it was loaded from: a Gemma 3 GGUF's norm
scales, stored there with the ``+1`` folded in, are written as transformers stores them (``w``
of ``x * (1 + w)``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import ml_dtypes
import numpy as np
from flax import nnx

from bonjax.models.decoder import DecoderLM
from bonjax.models.weights import HF_FAMILIES, flat_params

__all__ = ["EXPORT_DTYPES", "check_export_directory", "save_pretrained"]

EXPORT_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16),
                 "float16": np.dtype(np.float16)}
"""The tensor dtypes :func:`save_pretrained` writes, by the name ``config.json`` gives them."""

# Files of a previous checkpoint that would be read with the new one if they stayed: the loaders
# read every *.safetensors file, or the shards an index names.
_STALE = ("*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
          "pytorch_model.bin.index.json")


def check_export_directory(directory: str | os.PathLike, overwrite: bool = False) -> Path:
    """``directory`` as a Path if :func:`save_pretrained` may write there, else the error it
    would raise (to check before a long computation)."""
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} is a file, not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise FileExistsError(f"{directory} is not empty: pass overwrite=True to replace the "
                              "checkpoint there, or choose an empty directory")
    return directory


def save_pretrained(lm: DecoderLM, params: nnx.State, tokenizer, directory: str | os.PathLike,
                    *, overwrite: bool = False, dtype: str | None = None) -> Path:
    """Writes ``(lm, params)`` and ``tokenizer`` as a Hugging Face checkpoint directory.

    Args:
      lm: the model (its config's family must export: ``HF_FAMILIES[model_type]`` with
        ``to_hf_config`` and ``to_hf_weights``).
      params: its parameters (for a trained policy, ``TrainState.full_params()``: adapters
        merged). Arrays sharded over several processes are not gathered: export from one.
      tokenizer: a transformers tokenizer (written with its ``save_pretrained``), or None.
      directory: created if missing; an existing non-empty one only with ``overwrite``.
      overwrite: write into a non-empty directory, replacing its config, tokenizer and weight
        files (weight files of another checkpoint there, shards and indices, are removed).
      dtype: the tensors' dtype, ``"float32"``, ``"bfloat16"`` or ``"float16"``; None keeps each
        parameter's own.

    Returns:
      The directory.

    Raises:
      ValueError: a family without an exporter (naming it), an unknown dtype.
      FileExistsError: a non-empty directory without ``overwrite`` (naming it), or a file there.
    """
    cfg = lm.config
    model_type = cfg.hf_model_type
    family = HF_FAMILIES.get(model_type)
    if family is None or family.to_hf_config is None or family.to_hf_weights is None:
        exporting = sorted(k for k, f in HF_FAMILIES.items()
                           if f.to_hf_config is not None and f.to_hf_weights is not None)
        raise ValueError(f"no Hugging Face export for the {model_type!r} family "
                         f"({type(cfg).__name__}); the families that export are "
                         f"{', '.join(exporting)}")
    if dtype is not None and dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(EXPORT_DTYPES)} (or None)")
    directory = check_export_directory(directory, overwrite)

    tensors = family.to_hf_weights(cfg, flat_params(params))
    if dtype is not None:
        tensors = {k: v.astype(EXPORT_DTYPES[dtype]) for k, v in tensors.items()}
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}  # safetensors reads raw
    dtypes = {str(v.dtype) for v in tensors.values()}
    hf_config = {**family.to_hf_config(cfg), "dtype": dtypes.pop() if len(dtypes) == 1
                 else "float32"}

    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    for pattern in _STALE:
        for stale in directory.glob(pattern):
            stale.unlink()
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    _write_json(directory / "config.json", hf_config)
    _write_json(directory / "generation_config.json", {
        "bos_token_id": cfg.bos_id, "eos_token_id": cfg.eos_id, "pad_token_id": cfg.pad_id})
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    return directory


def _write_json(path: Path, record: dict) -> None:
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
