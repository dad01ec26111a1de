"""bonjax: Best-of-N alignment of language models in JAX and Flax."""

from bonjax import sharding
from bonjax.models import (
    DecoderLM,
    Gemma2Config,
    Gemma3Config,
    GPT2Config,
    GPTNeoXConfig,
    KVCache,
    LlamaConfig,
    positions_from_mask,
    save_pretrained,
)
from bonjax.models.registry import load_model, load_reward
from bonjax.sharding import ShardingRules, make_mesh

__version__ = "0.1.0"

__all__ = [
    "DecoderLM",
    "GPT2Config",
    "GPTNeoXConfig",
    "Gemma2Config",
    "Gemma3Config",
    "KVCache",
    "LlamaConfig",
    "ShardingRules",
    "load_model",
    "load_reward",
    "make_mesh",
    "positions_from_mask",
    "save_pretrained",
    "sharding",
]
