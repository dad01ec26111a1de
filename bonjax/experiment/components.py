"""The parts an experiment is made of: the policy, the reward and the prompts, loaded by name.

- :func:`load_policy`: ``"tiny-gpt2"`` (a random tiny GPT-2 with the real GPT-2 tokenizer, for
  tests) or anything :func:`bonjax.load_model` loads (``"gemma3-270m"``, HF directories, ...).
- :func:`load_reward`: ``"sentiment"`` (the trained MiniLM IMDB classifier) or ``"vader"``;
  :func:`load_scorer` also a sequence-classifier reward model by path or hub id.
- :func:`prompt_batch`: left-padded prompt arrays with the BOS token the policy expects.
- :func:`config_mesh`: the device mesh of a config's ``mesh_shape``.
- :func:`stage_key`: the random key of one named stage of a run.
"""

from __future__ import annotations

import logging
import warnings
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx, struct
from jax.sharding import Mesh

from bonjax import sharding as shd
from bonjax.checks import check_int, config_field, is_int
from bonjax.data.imdb import Prompts
from bonjax.data.prompt_response import adds_bos
from bonjax.models.decoder import DecoderLM
from bonjax.models.gpt2 import GPT2Config
from bonjax.models.registry import gpt2_tokenizer, load_model
from bonjax.models.registry import load_reward as load_reward_model
from bonjax.rewards import (
    TRAIN_COMMAND,
    ClassifierScorer,
    RetokenizedReward,
    load_sentiment_reward,
    vader_reward,
)

__all__ = ["COMPUTE_DTYPES", "REWARDS", "TINY_GPT2", "CompiledReward", "adds_bos",
           "check_dtype_and_mesh", "config_mesh", "load_policy",
           "load_reward", "load_scorer", "prompt_batch", "stage_key"]

logger = logging.getLogger(__name__)

TINY_GPT2 = "tiny-gpt2"
REWARDS = ("sentiment", "vader")
_REWARD_NAMES = {"sentiment": "minilm-imdb sentiment logit", "vader": "VADER compound"}


def load_policy(name: str, *, seed: int = 0, mesh: Mesh | None = None,
                rules: shd.ShardingRules = shd.ShardingRules()
                ) -> tuple[DecoderLM, nnx.State, object]:
    """``(lm, params, tokenizer)`` of the reference policy ``name``, placed on ``mesh``.

    ``"tiny-gpt2"`` is :meth:`GPT2Config.tiny` over the GPT-2 vocabulary (EOS = BOS = pad =
    ``<|endoftext|>``), initialised from ``seed``; every other name goes to
    :func:`bonjax.load_model`.
    """
    if name != TINY_GPT2:
        return load_model(name, mesh, rules)
    tokenizer = gpt2_tokenizer()
    eos = tokenizer.eos_token_id
    config = GPT2Config.tiny(vocab_size=len(tokenizer), bos_id=eos, eos_id=eos, pad_id=eos)
    lm, params = DecoderLM.init(config, jax.random.key(seed))
    if mesh is not None:
        params = shd.shard_params(params, mesh, rules)
    return lm, params, tokenizer


def load_reward(name: str, policy_tokenizer, fallback: str = "", max_length: int = 0):
    """``(reward, description)``: the reward ``name`` on the policy's tokens.

    With ``fallback="vader"``, a missing sentiment artifact gives the VADER reward and a loud
    warning instead of the error. ``max_length`` (> 0) makes the sentiment classifier read at
    most that many WordPiece tokens per text instead of its training length (128), keeping the
    same head/tail proportion for longer texts: the same scores for shorter texts, less padding.

    Raises:
      ValueError: for an unknown reward or fallback name.
      FileNotFoundError: when the sentiment artifact is missing and there is no fallback; the
        message names the command that creates it.
    """
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; choose one of {', '.join(REWARDS)}")
    if fallback not in ("", *REWARDS):
        raise ValueError(f"unknown reward_fallback {fallback!r}; choose '' or one of "
                         f"{', '.join(REWARDS)}")
    if name == "vader":
        return vader_reward(policy_tokenizer), _REWARD_NAMES["vader"]
    check_int("max_length", max_length, minimum=0)
    description = _REWARD_NAMES[name] + (f" ({max_length} tokens)" if max_length else "")
    try:
        return load_sentiment_reward(policy_tokenizer=policy_tokenizer,
                                     max_length=max_length or None), description
    except FileNotFoundError as missing:
        if not fallback:
            raise
        message = (f"THE SENTIMENT REWARD IS MISSING ({missing}). Falling back to the "
                   f"{_REWARD_NAMES[fallback]} reward: results are NOT the sentiment-classifier "
                   f"results. Create the reward with `{TRAIN_COMMAND}` and start a fresh run.")
        logger.warning("%s\n%s\n%s", "!" * 80, message, "!" * 80)
        warnings.warn(message, stacklevel=2)
        return load_reward(fallback, policy_tokenizer)


def load_scorer(name: str, policy_tokenizer, max_length: int = 0, mesh: Mesh | None = None,
                rules: shd.ShardingRules = shd.ShardingRules()):
    """``(reward, description)``: a reward of the policy's tokens by name, for pipelines whose
    reward can be a reward model.

    ``"sentiment"`` and ``"vader"`` are :func:`load_reward`'s (no fallback). Any other name is a
    sequence-classifier checkpoint (a Hugging Face directory or hub id, e.g.
    ``OpenAssistant/reward-model-deberta-v3-large-v2``) read by :func:`bonjax.load_reward`
    (``max_length`` tokens, 0: 512), placed on ``mesh``: the reward is the logit of its one
    class (of class 1 for a two-class head), on the decoded text of prompt and completion
    re-tokenised by the checkpoint's own tokenizer (:class:`~bonjax.rewards.RetokenizedReward`).

    Raises:
      ValueError: for an empty name or a head of more than two classes.
      CheckpointError / FileNotFoundError: for a checkpoint that cannot be read.
    """
    if not name:
        raise ValueError("a reward name is empty")
    if name in REWARDS:
        return load_reward(name, policy_tokenizer, "", max_length)
    check_int("max_length", max_length, minimum=0)
    model, params, tokenizer = load_reward_model(name, mesh, rules,
                                                 max_length=max_length or 512)
    if model.num_classes > 2:
        raise ValueError(f"reward model {name!r} has {model.num_classes} classes: a reward is "
                         "the logit of a one-class head (or class 1 of a two-class head)")
    positive = 0 if model.num_classes == 1 else 1
    scorer = ClassifierScorer(model, params, positive_class=positive)
    return (RetokenizedReward(scorer, policy_tokenizer, tokenizer),
            f"{name} (logit of class {positive})")


@jax.jit
def _apply(reward, prompt_BxP, prompt_mask_BxP, completion, completion_mask):
    return reward(prompt_BxP, prompt_mask_BxP, completion, completion_mask)


class CompiledReward(struct.PyTreeNode):
    """A reward always called through one compiled program (same signature and leaves).

    A reward with a host callback (VADER, a re-tokenised classifier) called eagerly on arrays
    sharded over several devices fails in jax 0.10 ("Cannot convert GSPMDSharding {maximal
    device=0} into SdyArray"); compiled, the partitioner gathers the batch for the callback.
    """

    reward: Any

    def __call__(self, prompt_BxP, prompt_mask_BxP, completion, completion_mask) -> jax.Array:
        return _apply(self.reward, prompt_BxP, prompt_mask_BxP, completion, completion_mask)


def prompt_batch(prompts: Prompts, tokenizer, pad_id: int,
                 length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded ``(tokens_BxP int32, mask_BxP bool)``, BOS first when the tokenizer adds one.

    :func:`bonjax.data.imdb_prompts` leaves special tokens to the policy; a model trained with
    BOS (Gemma) needs it in front of every prompt, exactly as its tokenizer would put it.
    ``length`` pads to a fixed ``P`` (one compiled shape for several batches).
    """
    bos = (tokenizer.bos_token_id,) if adds_bos(tokenizer) else ()
    token_ids = [bos + tuple(ids) for ids in prompts.token_ids]
    longest = max(len(ids) for ids in token_ids)
    P = longest if length is None else length
    if P < longest:
        raise ValueError(f"length {length} is shorter than the longest prompt ({longest} tokens)")
    tokens_BxP = np.full((len(token_ids), P), pad_id, np.int32)
    mask_BxP = np.zeros((len(token_ids), P), bool)
    for b, ids in enumerate(token_ids):
        tokens_BxP[b, P - len(ids):] = ids
        mask_BxP[b, P - len(ids):] = True
    return tokens_BxP, mask_BxP


def stage_key(seed: int, name: str) -> jax.Array:
    """A key for one named stage (``"train/vbon-n4"``), stable across configs and Python
    sessions: ``fold_in(key(seed), crc32(name))``."""
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(name.encode()) & 0x7FFFFFFF)


COMPUTE_DTYPES = ("float32", "bfloat16")  # config.compute_dtype


def check_dtype_and_mesh(config: Any) -> None:
    """Checks ``config.compute_dtype`` and ``config.mesh_shape`` (both pipelines read them).

    Raises:
      ValueError: naming the field, its value and what is allowed.
    """
    if config_field(config, "compute_dtype") not in COMPUTE_DTYPES:
        raise ValueError(f"config.compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got "
                         f"{config.compute_dtype!r}")
    mesh_shape = tuple(config_field(config, "mesh_shape"))
    if mesh_shape and (len(mesh_shape) != len(shd.MESH_AXES)
                       or any(not is_int(s) or s == 0 or s < -1 for s in mesh_shape)):
        raise ValueError(f"config.mesh_shape must be () or {len(shd.MESH_AXES)} positive sizes "
                         f"{shd.MESH_AXES} (one may be -1), got {mesh_shape}")


def config_mesh(mesh_shape: tuple, batch_sizes: Mapping[str, int]) -> Mesh | None:
    """The mesh of a config's ``mesh_shape`` over every device of the job (() runs on one
    device: None); one size may be -1, the devices left over.

    Args:
      mesh_shape: ``(data, fsdp, tensor)`` sizes, or ().
      batch_sizes: the config's global batch sizes by field name
        (``{"config.train.prompts_per_step": 16}``); each must be a multiple of the mesh's batch
        devices (data x fsdp).

    Raises:
      ValueError: for a job of several processes without a mesh, a shape that does not fit the
        devices, or a batch size that the batch devices do not divide (naming the field).
    """
    shape = tuple(mesh_shape)
    if not shape:
        if jax.process_count() > 1:
            raise ValueError(f"config.mesh_shape is () but the job has {jax.process_count()} "
                             "processes: give a mesh over every process's devices, e.g. "
                             "(-1, 1, 1)")
        return None
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        if shape.count(-1) > 1 or jax.device_count() % known:
            raise ValueError(f"config.mesh_shape {shape} does not fit {jax.device_count()} "
                             "devices")
        shape = tuple(jax.device_count() // known if s == -1 else s for s in shape)
    mesh = shd.make_mesh(shape)
    batch_devices = mesh.shape["data"] * mesh.shape["fsdp"]
    for field, size in batch_sizes.items():
        if size % batch_devices:
            raise ValueError(f"{field} {size} must be a multiple of the mesh's batch devices "
                             f"(data x fsdp = {batch_devices})")
    return mesh
