"""Decoder language models behind one functional interface, reward classifiers (decoder and
encoder), their weight import and export."""

from bonjax.models.deberta import DebertaV2, DebertaV2Config, load_hf_deberta
from bonjax.models.decoder import DecoderConfig, DecoderLM, positions_from_mask
from bonjax.models.decoder_classifier import DecoderClassifier, load_hf_decoder_classifier
from bonjax.models.export import save_pretrained
from bonjax.models.gemma2 import Gemma2, Gemma2Config
from bonjax.models.gemma3 import Gemma3, Gemma3Config
from bonjax.models.gpt2 import GPT2, GPT2Config
from bonjax.models.gpt_neox import GPTNeoX, GPTNeoXConfig
from bonjax.models.kv_cache import KVCache
from bonjax.models.llama import Llama, Llama3RopeScaling, LlamaConfig
from bonjax.models.output import ModelOutput

__all__ = [
    "DebertaV2",
    "DebertaV2Config",
    "DecoderClassifier",
    "DecoderConfig",
    "DecoderLM",
    "GPT2",
    "GPT2Config",
    "GPTNeoX",
    "GPTNeoXConfig",
    "Gemma2",
    "Gemma2Config",
    "Gemma3",
    "Gemma3Config",
    "KVCache",
    "Llama",
    "Llama3RopeScaling",
    "LlamaConfig",
    "ModelOutput",
    "load_hf_deberta",
    "load_hf_decoder_classifier",
    "positions_from_mask",
    "save_pretrained",
]
