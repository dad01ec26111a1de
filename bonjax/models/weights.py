"""Weight import without torch: Hugging Face checkpoint directories and GGUF files.

Each importer produces a flat ``{"blocks.0.q": array}`` dictionary in bonjax's layout and hands
it to :func:`place_params`, which checks every shape against the config and puts each tensor
straight onto its shards (with a mesh, no device ever holds a full copy).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import ml_dtypes
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from bonjax import sharding as shd
from bonjax.models.decoder import DecoderConfig, DecoderLM
from bonjax.models.gemma2 import Gemma2Config
from bonjax.models.gemma3 import Gemma3Config
from bonjax.models.gpt2 import GPT2Config
from bonjax.models.gpt_neox import GPTNeoXConfig
from bonjax.models.llama import LlamaConfig

__all__ = [
    "CheckpointError",
    "HFFamily",
    "HF_FAMILIES",
    "load_hf_decoder",
    "hf_decoder_config",
    "place_params",
    "flat_params",
    "place_state",
    "tensor_getter",
    "gemma3_layout",
    "read_safetensors",
]


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, or does not match its config."""


def _path_name(path) -> str:
    return ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                    for k in path)


def place_params(config: DecoderConfig, tensors: Mapping[str, np.ndarray], source: str,
                 mesh: Mesh | None = None,
                 rules: shd.ShardingRules = shd.ShardingRules()) -> tuple[DecoderLM, nnx.State]:
    """Builds a model from a flat dict of bonjax-layout tensors, checking names and shapes."""
    lm, abstract = DecoderLM.abstract(config)
    return lm, place_state(abstract, tensors, source, mesh, rules)


def place_state(abstract: nnx.State, tensors: Mapping[str, np.ndarray], source: str,
                mesh: Mesh | None = None,
                rules: shd.ShardingRules = shd.ShardingRules()) -> nnx.State:
    """The parameters ``abstract`` describes (shapes, dtypes, logical axes), filled from a flat
    dict of tensors named by their paths (``"blocks.0.q"``); every name and shape is checked,
    and with a mesh each tensor goes straight onto its shards."""
    shardings = shd.param_shardings(abstract, mesh, rules) if mesh is not None else None
    expected: set[str] = set()

    def fill(path, variable):
        name = _path_name(path)
        expected.add(name)
        if name not in tensors:
            raise CheckpointError(f"{source}: no tensor for parameter {name!r} "
                                  f"(expected shape {variable.value.shape})")
        array = np.asarray(tensors[name])
        if array.shape != variable.value.shape:
            raise CheckpointError(f"{source}: tensor for {name!r} has shape {array.shape}, the "
                                  f"config needs {variable.value.shape}")
        return variable.replace(array.astype(variable.value.dtype))

    host = jax.tree_util.tree_map_with_path(fill, abstract,
                                            is_leaf=lambda x: isinstance(x, nnx.Variable))
    unused = sorted(set(tensors) - expected)
    if unused:
        raise CheckpointError(f"{source}: tensors not used by the model: {unused[:8]}")
    return jax.device_put(host, shardings) if shardings is not None else jax.device_put(host)


def flat_params(params: nnx.State) -> dict[str, np.ndarray]:
    """The inverse of :func:`place_params`: ``{"blocks.0.q": array}`` on the host."""
    leaves = jax.tree_util.tree_flatten_with_path(
        params, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    return {_path_name(path): np.asarray(jax.device_get(
        leaf.value if isinstance(leaf, nnx.Variable) else leaf)) for path, leaf in leaves}


# ----------------------------------------------------------------------------- HF directories

def read_safetensors(directory: Path) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint directory's safetensors files (one file or an index of
    shards), bfloat16 and float16 widened to float32."""
    from safetensors import safe_open

    index = directory / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{directory}: no *.safetensors file (only safetensors checkpoints "
                              "are supported; convert .bin files with transformers first)")
    tensors: dict[str, np.ndarray] = {}
    for name in files:
        path = directory / name
        if not path.exists():
            raise CheckpointError(f"{directory}: shard {name} listed in the index is missing")
        try:
            with safe_open(str(path), framework="flax") as f:
                for key in f.keys():
                    array = np.asarray(f.get_tensor(key))
                    if array.dtype == ml_dtypes.bfloat16 or array.dtype == np.float16:
                        array = array.astype(np.float32)
                    tensors[key] = array
        except CheckpointError:
            raise
        except Exception as e:  # safetensors raises its own error types on truncation
            raise CheckpointError(f"{path}: cannot read safetensors file ({e})") from e
    return tensors


@dataclasses.dataclass(frozen=True)
class HFFamily:
    """How one architecture imports from (and exports to) a Hugging Face checkpoint directory.

    Attributes:
      config: its config class; ``config.from_hf(config_json_dict, **overrides)`` reads
        ``config.json``.
      weights: ``(config, tensors) -> tensors``: the checkpoint's tensors, names and layouts,
        to bonjax's (``{"blocks.0.q": array}``); tensors it leaves are reported as unused.
      to_hf_config: ``config -> config_json_dict``, the inverse of ``from_hf`` (None: the family
        does not export; ``bonjax.save_pretrained`` says so).
      to_hf_weights: ``(config, tensors) -> tensors``, the inverse of ``weights``: bonjax's
        tensors to the names and layouts transformers saves (None: the family does not export).
    """

    config: type
    weights: Callable[[Any, dict[str, np.ndarray]], dict[str, np.ndarray]]
    to_hf_config: Callable[[Any], dict[str, Any]] | None = None
    to_hf_weights: Callable[[Any, dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None


def hf_decoder_config(hf: Mapping, **overrides) -> DecoderConfig:
    """bonjax config from a Hugging Face ``config.json`` dict (a family of :data:`HF_FAMILIES`)."""
    model_type = hf.get("model_type")
    if model_type == "gemma3" and "text_config" in hf:
        hf = {**hf["text_config"], "model_type": "gemma3_text"}
        model_type = "gemma3_text"
    if model_type not in HF_FAMILIES:
        raise CheckpointError(f"unsupported model_type {model_type!r}; bonjax imports "
                              f"{', '.join(sorted(HF_FAMILIES))} decoders")
    try:
        return HF_FAMILIES[model_type].config.from_hf(hf, **overrides)
    except KeyError as e:
        raise CheckpointError(f"{model_type} config.json has no {e}") from e


def _strip(tensors: dict[str, np.ndarray], prefixes: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = {}
    for key, value in tensors.items():
        for p in prefixes:
            if key.startswith(p):
                key = key[len(p):]
                break
        out[key] = value
    return out


def _gpt2_from_hf(cfg: GPT2Config, t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    t = _strip(t, ("transformer.",))
    N, H, D = cfg.num_heads, cfg.head_dim, cfg.d_model
    out = {"wte": t.pop("wte.weight"), "wpe": t.pop("wpe.weight"),
           "ln_f.scale": t.pop("ln_f.weight"), "ln_f.bias": t.pop("ln_f.bias")}
    t.pop("lm_head.weight", None)  # tied to wte
    for i in range(cfg.num_layers):
        h, b = f"h.{i}.", f"blocks.{i}."
        out[b + "ln_1.scale"] = t.pop(h + "ln_1.weight")
        out[b + "ln_1.bias"] = t.pop(h + "ln_1.bias")
        out[b + "qkv"] = _reshape(t.pop(h + "attn.c_attn.weight"), (D, 3, N, H), h + "c_attn")
        out[b + "qkv_bias"] = _reshape(t.pop(h + "attn.c_attn.bias"), (3, N, H), h + "c_attn")
        out[b + "out"] = _reshape(t.pop(h + "attn.c_proj.weight"), (N, H, D), h + "c_proj")
        out[b + "out_bias"] = t.pop(h + "attn.c_proj.bias")
        out[b + "ln_2.scale"] = t.pop(h + "ln_2.weight")
        out[b + "ln_2.bias"] = t.pop(h + "ln_2.bias")
        out[b + "fc"] = t.pop(h + "mlp.c_fc.weight")
        out[b + "fc_bias"] = t.pop(h + "mlp.c_fc.bias")
        out[b + "proj"] = t.pop(h + "mlp.c_proj.weight")
        out[b + "proj_bias"] = t.pop(h + "mlp.c_proj.bias")
        t.pop(h + "attn.bias", None)
        t.pop(h + "attn.masked_bias", None)
    out.update(t)  # anything left is reported as unused by place_params
    return out


def _reshape(array: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    if array.size != int(np.prod(shape)):
        raise CheckpointError(f"tensor {name} has shape {array.shape}, the config needs "
                              f"{int(np.prod(shape))} elements arranged as {shape}")
    return array.reshape(shape)


def gemma3_layout(cfg: Gemma2Config | Gemma3Config, get: Callable[[str], np.ndarray],
                   names: Mapping[str, str], norm_offset: float) -> dict[str, np.ndarray]:
    """Shared Gemma 2 / 3 mapping; ``names`` maps bonjax names to source names (``{i}`` =
    layer); a norm absent from ``names`` (Gemma 2's q/k norms) is not read."""
    N, K, H, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_model
    out = {"embed": get(names["embed"]),
           "final_norm.scale": get(names["final_norm"]) - norm_offset}
    for i in range(cfg.num_layers):
        def g(key, i=i):
            return get(names[key].format(i=i))
        b = f"blocks.{i}."
        out[b + "q"] = _reshape(g("q").T, (D, N, H), names["q"].format(i=i))
        out[b + "k"] = _reshape(g("k").T, (D, K, H), names["k"].format(i=i))
        out[b + "v"] = _reshape(g("v").T, (D, K, H), names["v"].format(i=i))
        out[b + "o"] = _reshape(g("o").T, (N, H, D), names["o"].format(i=i))
        out[b + "gate"] = g("gate").T
        out[b + "up"] = g("up").T
        out[b + "down"] = g("down").T
        for norm in ("q_norm", "k_norm", "pre_attn_norm", "post_attn_norm", "pre_mlp_norm",
                     "post_mlp_norm"):
            if norm in names:
                out[b + norm + ".scale"] = g(norm) - norm_offset
    return out


_GEMMA3_HF = {
    "embed": "embed_tokens.weight", "final_norm": "norm.weight",
    "q": "layers.{i}.self_attn.q_proj.weight", "k": "layers.{i}.self_attn.k_proj.weight",
    "v": "layers.{i}.self_attn.v_proj.weight", "o": "layers.{i}.self_attn.o_proj.weight",
    "q_norm": "layers.{i}.self_attn.q_norm.weight", "k_norm": "layers.{i}.self_attn.k_norm.weight",
    "gate": "layers.{i}.mlp.gate_proj.weight", "up": "layers.{i}.mlp.up_proj.weight",
    "down": "layers.{i}.mlp.down_proj.weight",
    "pre_attn_norm": "layers.{i}.input_layernorm.weight",
    "post_attn_norm": "layers.{i}.post_attention_layernorm.weight",
    "pre_mlp_norm": "layers.{i}.pre_feedforward_layernorm.weight",
    "post_mlp_norm": "layers.{i}.post_feedforward_layernorm.weight",
}

def _gemma3_from_hf(cfg: Gemma3Config, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    raw = _strip(raw, ("model.language_model.", "language_model.model.", "model."))
    raw.pop("lm_head.weight", None)  # tied to the embedding
    get = tensor_getter(raw, "Gemma 3 checkpoint")
    tensors = gemma3_layout(cfg, get, _GEMMA3_HF, norm_offset=0.0)
    tensors.update({k: v for k, v in raw.items() if k not in get.used
                    and not k.startswith(("vision_tower.", "multi_modal_projector."))})
    return tensors


_GEMMA2_HF = {k: v for k, v in _GEMMA3_HF.items() if k not in ("q_norm", "k_norm")}


def _gemma2_from_hf(cfg: Gemma2Config, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    raw = _strip(raw, ("model.",))
    raw.pop("lm_head.weight", None)  # tied to the embedding
    get = tensor_getter(raw, "Gemma 2 checkpoint")
    tensors = gemma3_layout(cfg, get, _GEMMA2_HF, norm_offset=0.0)
    tensors.update({k: v for k, v in raw.items() if k not in get.used})
    return tensors


def _gpt_neox_from_hf(cfg: GPTNeoXConfig, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GPT-NeoX / Pythia. The fused ``query_key_value`` rows are per head, ``[q_n, k_n, v_n]``
    for head ``n``; bonjax's ``qkv`` is ``[D, 3, N, H]`` (q, k, v blocks), as GPT-2's. The output
    embedding is ``embed_out`` in older files, ``lm_head`` in transformers 5's."""
    t = _strip(raw, ("gpt_neox.",))
    get = tensor_getter(t, "GPT-NeoX checkpoint")
    N, H, D = cfg.num_heads, cfg.head_dim, cfg.d_model
    head = "lm_head.weight" if "lm_head.weight" in t else "embed_out.weight"
    out = {"embed_in": get("embed_in.weight"), "embed_out": get(head),
           "final_norm.scale": get("final_layer_norm.weight"),
           "final_norm.bias": get("final_layer_norm.bias")}
    for i in range(cfg.num_layers):
        h, b = f"layers.{i}.", f"blocks.{i}."
        qkv = _reshape(get(h + "attention.query_key_value.weight").T, (D, N, 3, H), h + "qkv")
        out[b + "qkv"] = qkv.transpose(0, 2, 1, 3)
        qkv_bias = _reshape(get(h + "attention.query_key_value.bias"), (N, 3, H), h + "qkv")
        out[b + "qkv_bias"] = qkv_bias.transpose(1, 0, 2)
        out[b + "out"] = _reshape(get(h + "attention.dense.weight").T, (N, H, D), h + "dense")
        out[b + "out_bias"] = get(h + "attention.dense.bias")
        for norm, src in (("attn_norm", "input_layernorm"),
                          ("mlp_norm", "post_attention_layernorm")):
            out[b + norm + ".scale"] = get(h + src + ".weight")
            out[b + norm + ".bias"] = get(h + src + ".bias")
        out[b + "fc"] = get(h + "mlp.dense_h_to_4h.weight").T
        out[b + "fc_bias"] = get(h + "mlp.dense_h_to_4h.bias")
        out[b + "proj"] = get(h + "mlp.dense_4h_to_h.weight").T
        out[b + "proj_bias"] = get(h + "mlp.dense_4h_to_h.bias")
    # Buffers older files saved (causal masks, rotary frequencies), not parameters.
    buffers = ("attention.bias", "attention.masked_bias", "attention.rotary_emb.inv_freq")
    out.update({k: v for k, v in t.items() if k not in get.used and not k.endswith(buffers)})
    return out


def _llama_from_hf(cfg: LlamaConfig, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Llama, Qwen 2/2.5, Qwen 3 and Mistral: ``nn.Linear`` weights ``[out, in]`` transposed to
    ``[in, out]`` and split into heads; biases, q/k norms and ``lm_head`` where the config has
    them."""
    raw = {k: v for k, v in _strip(raw, ("model.",)).items()
           if not k.endswith("rotary_emb.inv_freq")}  # buffers some older files hold
    if cfg.tie_embeddings:
        raw.pop("lm_head.weight", None)  # a copy of the embedding where a file keeps it
    get = tensor_getter(raw, f"{cfg.hf_model_type} checkpoint")
    N, K, H, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_model
    out = {"embed": get("embed_tokens.weight"), "final_norm.scale": get("norm.weight")}
    if not cfg.tie_embeddings:
        out["lm_head"] = get("lm_head.weight")
    for i in range(cfg.num_layers):
        a, b = f"layers.{i}.self_attn.", f"blocks.{i}."
        for name, heads in (("q", N), ("k", K), ("v", K)):
            out[b + name] = _reshape(get(a + f"{name}_proj.weight").T, (D, heads, H),
                                     a + f"{name}_proj")
            if cfg.qkv_bias:
                out[b + name + "_bias"] = _reshape(get(a + f"{name}_proj.bias"), (heads, H),
                                                   a + f"{name}_proj.bias")
        out[b + "o"] = _reshape(get(a + "o_proj.weight").T, (N, H, D), a + "o_proj")
        if cfg.out_bias:
            out[b + "o_bias"] = get(a + "o_proj.bias")
        if cfg.qk_norm:
            out[b + "q_norm.scale"] = get(a + "q_norm.weight")
            out[b + "k_norm.scale"] = get(a + "k_norm.weight")
        m = f"layers.{i}."
        out[b + "attn_norm.scale"] = get(m + "input_layernorm.weight")
        out[b + "mlp_norm.scale"] = get(m + "post_attention_layernorm.weight")
        for name in ("gate", "up", "down"):
            out[b + name] = get(m + f"mlp.{name}_proj.weight").T
    out.update({k: v for k, v in raw.items() if k not in get.used})  # reported as unused
    return out


def tensor_getter(tensors: dict[str, np.ndarray], source: str) -> Callable[[str], np.ndarray]:
    """``get(name)``: the tensor, or a CheckpointError naming ``source`` and the missing name;
    ``get.used`` holds the names read (the rest are reported as unused)."""
    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        if name not in tensors:
            raise CheckpointError(f"{source}: tensor {name!r} is missing")
        used.add(name)
        return tensors[name]

    get.used = used  # type: ignore[attr-defined]
    return get


# ----------------------------------------------------------------------------- export maps
# The inverses of the maps above: bonjax-layout tensors to the names and layouts transformers
# saves (``save_pretrained`` of the family's ``*ForCausalLM``). Each reads every tensor once;
# a tensor it does not read is an error (a parameter the export would silently drop).

def _exporting(t: Mapping[str, np.ndarray], family: str) -> Callable[[str], np.ndarray]:
    get = tensor_getter(dict(t), f"{family} export")

    def check_all_read() -> None:
        left = sorted(set(t) - get.used)  # type: ignore[attr-defined]
        if left:
            raise CheckpointError(f"{family} export: parameters with no Hugging Face tensor: "
                                  f"{left[:8]}")

    get.check_all_read = check_all_read  # type: ignore[attr-defined]
    return get


def _gpt2_to_hf(cfg: GPT2Config, t: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    get = _exporting(t, "GPT-2")
    D = cfg.d_model
    out = {"wte.weight": get("wte"), "wpe.weight": get("wpe"), "ln_f.weight": get("ln_f.scale"),
           "ln_f.bias": get("ln_f.bias")}
    for i in range(cfg.num_layers):
        h, b = f"h.{i}.", f"blocks.{i}."
        out[h + "ln_1.weight"] = get(b + "ln_1.scale")
        out[h + "ln_1.bias"] = get(b + "ln_1.bias")
        out[h + "attn.c_attn.weight"] = get(b + "qkv").reshape(D, 3 * D)
        out[h + "attn.c_attn.bias"] = get(b + "qkv_bias").reshape(3 * D)
        out[h + "attn.c_proj.weight"] = get(b + "out").reshape(D, D)
        out[h + "attn.c_proj.bias"] = get(b + "out_bias")
        out[h + "ln_2.weight"] = get(b + "ln_2.scale")
        out[h + "ln_2.bias"] = get(b + "ln_2.bias")
        out[h + "mlp.c_fc.weight"] = get(b + "fc")
        out[h + "mlp.c_fc.bias"] = get(b + "fc_bias")
        out[h + "mlp.c_proj.weight"] = get(b + "proj")
        out[h + "mlp.c_proj.bias"] = get(b + "proj_bias")
    get.check_all_read()  # type: ignore[attr-defined]
    return {"transformer." + k: v for k, v in out.items()}  # lm_head: tied, not saved


def _gemma_to_hf(cfg: Gemma2Config | Gemma3Config, t: Mapping[str, np.ndarray],
                 names: Mapping[str, str], family: str) -> dict[str, np.ndarray]:
    """The inverse of :func:`gemma3_layout` (norm scales as bonjax keeps them, ``w`` of
    ``x * (1 + w)``, which is what transformers stores too)."""
    get = _exporting(t, family)
    N, K, H, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_model
    out = {names["embed"]: get("embed"), names["final_norm"]: get("final_norm.scale")}
    for i in range(cfg.num_layers):
        b = f"blocks.{i}."

        def put(key: str, value: np.ndarray, i: int = i) -> None:
            out[names[key].format(i=i)] = value

        put("q", get(b + "q").reshape(D, N * H).T)
        put("k", get(b + "k").reshape(D, K * H).T)
        put("v", get(b + "v").reshape(D, K * H).T)
        put("o", get(b + "o").reshape(N * H, D).T)
        for mlp in ("gate", "up", "down"):
            put(mlp, get(b + mlp).T)
        for norm in ("q_norm", "k_norm", "pre_attn_norm", "post_attn_norm", "pre_mlp_norm",
                     "post_mlp_norm"):
            if norm in names:
                put(norm, get(b + norm + ".scale"))
    get.check_all_read()  # type: ignore[attr-defined]
    return {"model." + k: v for k, v in out.items()}  # lm_head: tied, not saved


def _gemma3_to_hf(cfg: Gemma3Config, t: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return _gemma_to_hf(cfg, t, _GEMMA3_HF, "Gemma 3")


def _gemma2_to_hf(cfg: Gemma2Config, t: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return _gemma_to_hf(cfg, t, _GEMMA2_HF, "Gemma 2")


def _llama_to_hf(cfg: LlamaConfig, t: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of :func:`_llama_from_hf` (``lm_head`` only where the output is untied)."""
    get = _exporting(t, cfg.hf_model_type)
    N, K, H, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_model
    out = {"model.embed_tokens.weight": get("embed"), "model.norm.weight": get("final_norm.scale")}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = get("lm_head")
    for i in range(cfg.num_layers):
        a, m, b = f"model.layers.{i}.self_attn.", f"model.layers.{i}.", f"blocks.{i}."
        for name, heads in (("q", N), ("k", K), ("v", K)):
            out[a + f"{name}_proj.weight"] = get(b + name).reshape(D, heads * H).T
            if cfg.qkv_bias:
                out[a + f"{name}_proj.bias"] = get(b + name + "_bias").reshape(heads * H)
        out[a + "o_proj.weight"] = get(b + "o").reshape(N * H, D).T
        if cfg.out_bias:
            out[a + "o_proj.bias"] = get(b + "o_bias")
        if cfg.qk_norm:
            out[a + "q_norm.weight"] = get(b + "q_norm.scale")
            out[a + "k_norm.weight"] = get(b + "k_norm.scale")
        out[m + "input_layernorm.weight"] = get(b + "attn_norm.scale")
        out[m + "post_attention_layernorm.weight"] = get(b + "mlp_norm.scale")
        for name in ("gate", "up", "down"):
            out[m + f"mlp.{name}_proj.weight"] = get(b + name).T
    get.check_all_read()  # type: ignore[attr-defined]
    return out


def _gpt_neox_to_hf(cfg: GPTNeoXConfig, t: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of :func:`_gpt_neox_from_hf`; the output embedding as ``embed_out`` (the name
    transformers 5 saves and every version reads)."""
    get = _exporting(t, "GPT-NeoX")
    N, H, D = cfg.num_heads, cfg.head_dim, cfg.d_model
    out = {"gpt_neox.embed_in.weight": get("embed_in"), "embed_out.weight": get("embed_out"),
           "gpt_neox.final_layer_norm.weight": get("final_norm.scale"),
           "gpt_neox.final_layer_norm.bias": get("final_norm.bias")}
    for i in range(cfg.num_layers):
        h, b = f"gpt_neox.layers.{i}.", f"blocks.{i}."
        qkv = get(b + "qkv").transpose(0, 2, 1, 3)  # [D, 3, N, H] -> [D, N, 3, H]
        out[h + "attention.query_key_value.weight"] = qkv.reshape(D, 3 * D).T
        qkv_bias = get(b + "qkv_bias").transpose(1, 0, 2)  # [3, N, H] -> [N, 3, H]
        out[h + "attention.query_key_value.bias"] = qkv_bias.reshape(3 * D)
        out[h + "attention.dense.weight"] = get(b + "out").reshape(N * H, D).T
        out[h + "attention.dense.bias"] = get(b + "out_bias")
        for norm, dst in (("attn_norm", "input_layernorm"),
                          ("mlp_norm", "post_attention_layernorm")):
            out[h + dst + ".weight"] = get(b + norm + ".scale")
            out[h + dst + ".bias"] = get(b + norm + ".bias")
        out[h + "mlp.dense_h_to_4h.weight"] = get(b + "fc").T
        out[h + "mlp.dense_h_to_4h.bias"] = get(b + "fc_bias")
        out[h + "mlp.dense_4h_to_h.weight"] = get(b + "proj").T
        out[h + "mlp.dense_4h_to_h.bias"] = get(b + "proj_bias")
    get.check_all_read()  # type: ignore[attr-defined]
    return out


def load_hf_decoder(directory: str | os.PathLike, mesh: Mesh | None = None,
                    rules: shd.ShardingRules = shd.ShardingRules(),
                    **config_overrides) -> tuple[DecoderLM, nnx.State]:
    """Loads a Hugging Face checkpoint directory (config.json + safetensors) of a family of
    :data:`HF_FAMILIES` (GPT-2, GPT-NeoX / Pythia, Gemma 2, Gemma 3)."""
    """Loads a Hugging Face checkpoint directory (config.json + safetensors, one file or shards
    listed in ``model.safetensors.index.json``) of a family in :data:`HF_FAMILIES`."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise CheckpointError(f"{directory}: no config.json (not a Hugging Face checkpoint "
                              "directory)")
    cfg = hf_decoder_config(json.loads(config_path.read_text()), **config_overrides)
    raw = read_safetensors(directory)
    try:
        tensors = HF_FAMILIES[cfg.hf_model_type].weights(cfg, dict(raw))
    except CheckpointError as e:
        raise CheckpointError(f"{directory}: {e}") from e
    return place_params(cfg, tensors, str(directory), mesh, rules)


# The decoder families a Hugging Face checkpoint directory can hold, by ``model_type``. Adding a
# family: its model file (config with ``from_hf`` and ``hf_model_type``) and one row here; with
# ``to_hf_config`` (the config's ``to_hf``) and ``to_hf_weights`` it also exports.
HF_FAMILIES: dict[str, HFFamily] = {
    GPT2Config.hf_model_type: HFFamily(GPT2Config, _gpt2_from_hf, GPT2Config.to_hf, _gpt2_to_hf),
    Gemma3Config.hf_model_type: HFFamily(Gemma3Config, _gemma3_from_hf, Gemma3Config.to_hf,
                                         _gemma3_to_hf),
    GPTNeoXConfig.hf_model_type: HFFamily(GPTNeoXConfig, _gpt_neox_from_hf, GPTNeoXConfig.to_hf,
                                          _gpt_neox_to_hf),
    Gemma2Config.hf_model_type: HFFamily(Gemma2Config, _gemma2_from_hf, Gemma2Config.to_hf,
                                         _gemma2_to_hf),
    # One config class and one weight map for the Llama-style families (bonjax.models.llama);
    # LlamaConfig.from_hf sets each one's options from its model_type.
    "llama": HFFamily(LlamaConfig, _llama_from_hf, LlamaConfig.to_hf, _llama_to_hf),
    "qwen2": HFFamily(LlamaConfig, _llama_from_hf, LlamaConfig.to_hf, _llama_to_hf),
    "qwen3": HFFamily(LlamaConfig, _llama_from_hf, LlamaConfig.to_hf, _llama_to_hf),
    "mistral": HFFamily(LlamaConfig, _llama_from_hf, LlamaConfig.to_hf, _llama_to_hf),
}
