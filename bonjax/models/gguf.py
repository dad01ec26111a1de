"""Gemma 3 from a GGUF file (the packaged Gemma-3-270M): its config from the file's metadata, its
tensors dequantised with ``gguf`` and mapped through Gemma 3's weight layout
(``weights.gemma3_layout``; GGUF stores the RMSNorm scales with the ``+1`` folded in)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from flax import nnx
from jax.sharding import Mesh

from bonjax import sharding as shd
from bonjax.models.decoder import DecoderLM
from bonjax.models.gemma3 import Gemma3Config
from bonjax.models.weights import CheckpointError, gemma3_layout, place_params

__all__ = ["gguf_decoder_config", "load_gguf_decoder"]

_GEMMA3_GGUF = {
    "embed": "token_embd.weight", "final_norm": "output_norm.weight",
    "q": "blk.{i}.attn_q.weight", "k": "blk.{i}.attn_k.weight", "v": "blk.{i}.attn_v.weight",
    "o": "blk.{i}.attn_output.weight", "q_norm": "blk.{i}.attn_q_norm.weight",
    "k_norm": "blk.{i}.attn_k_norm.weight", "gate": "blk.{i}.ffn_gate.weight",
    "up": "blk.{i}.ffn_up.weight", "down": "blk.{i}.ffn_down.weight",
    "pre_attn_norm": "blk.{i}.attn_norm.weight",
    "post_attn_norm": "blk.{i}.post_attention_norm.weight",
    "pre_mlp_norm": "blk.{i}.ffn_norm.weight", "post_mlp_norm": "blk.{i}.post_ffw_norm.weight",
}


def gguf_reader(path: Path):
    """A `gguf.GGUFReader` of the file, or a CheckpointError naming it (absent, truncated)."""
    import gguf

    if not path.exists():
        raise CheckpointError(f"GGUF file {path} does not exist")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as e:  # the reader raises assorted errors on truncated files
        raise CheckpointError(f"{path}: cannot read GGUF file, truncated or corrupt ({e})") from e


def gguf_decoder_config(path: str | os.PathLike, **overrides) -> Gemma3Config:
    """bonjax config from a GGUF file's metadata (gemma3 architecture)."""
    reader = gguf_reader(Path(path))
    return _gguf_config(reader, Path(path), **overrides)


def _gguf_config(reader, path: Path, **overrides) -> Gemma3Config:
    def field(name, default=None):
        f = reader.fields.get(name)
        return default if f is None else f.contents()

    arch = field("general.architecture")
    if arch != "gemma3":
        raise CheckpointError(f"{path}: GGUF architecture {arch!r} is not supported (gemma3)")
    head_dim = int(field("gemma3.attention.key_length", 256))
    return Gemma3Config(
        vocab_size=len(field("tokenizer.ggml.tokens")),
        max_positions=int(field("gemma3.context_length", 32768)),
        num_layers=int(field("gemma3.block_count")),
        num_heads=int(field("gemma3.attention.head_count")),
        num_kv_heads=int(field("gemma3.attention.head_count_kv")),
        head_dim=head_dim,
        d_model=int(field("gemma3.embedding_length")),
        mlp_dim=int(field("gemma3.feed_forward_length")),
        sliding_window=int(field("gemma3.attention.sliding_window", 512)),
        rope_global_base=float(field("gemma3.rope.freq_base", 1_000_000.0)),
        rope_global_scale=float(field("gemma3.rope.scaling.factor", 1.0)),
        query_pre_attn_scalar=float(head_dim),
        rms_norm_eps=float(field("gemma3.attention.layer_norm_rms_epsilon", 1e-6)),
        bos_id=int(field("tokenizer.ggml.bos_token_id", 2)),
        eos_id=int(field("tokenizer.ggml.eos_token_id", 1)),
        pad_id=int(field("tokenizer.ggml.padding_token_id", 0)),
        **overrides)


def load_gguf_decoder(path: str | os.PathLike, mesh: Mesh | None = None,
                      rules: shd.ShardingRules = shd.ShardingRules(),
                      **config_overrides) -> tuple[DecoderLM, nnx.State]:
    """Loads (and dequantises to float32) a Gemma 3 GGUF file.

    GGUF stores Gemma's RMSNorm scales with the ``+1`` folded in; bonjax keeps ``w`` with the
    norm computing ``x * (1 + w)``, so 1 is subtracted here.
    """
    import gguf

    path = Path(path)
    reader = gguf_reader(path)
    cfg = _gguf_config(reader, path, **config_overrides)
    by_name = {t.name: t for t in reader.tensors}
    cache: dict[str, np.ndarray] = {}

    def get(name: str) -> np.ndarray:
        if name not in by_name:
            raise CheckpointError(f"{path}: tensor {name!r} is missing")
        if name not in cache:
            t = by_name[name]
            try:
                cache[name] = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type),
                                         dtype=np.float32)
            except Exception as e:
                raise CheckpointError(f"{path}: cannot dequantise {name} ({e})") from e
        return cache.pop(name)

    tensors = gemma3_layout(cfg, get, _GEMMA3_GGUF, norm_offset=1.0)
    return place_params(cfg, tensors, str(path), mesh, rules)
