"""The reward interface: ``r(x, y)`` for a batch of prompts and their completions.

A reward takes a left-padded prompt batch and its completions (one per prompt, or N per prompt)
as token arrays of the *policy's* tokenizer, and returns one float32 reward per completion::

    r_B   = reward(prompt_BxP, prompt_mask_BxP, completion_BxT,   completion_mask_BxT)
    r_BxN = reward(prompt_BxP, prompt_mask_BxP, completion_BxNxT, completion_mask_BxNxT)

Every reward here is a pytree (its parameters are leaves, its settings static) and callable
inside ``jax.jit``:

- :class:`TokenReward`: a JAX function of the policy's tokens, entirely on device.
- :class:`RetokenizedReward`: a reward model with its own tokenizer. The host decodes the policy
  tokens to text and re-tokenises it (a ``jax.pure_callback``); the model scores on device.
  Outside jit, :meth:`RetokenizedReward.score` pipelines the same work in chunks, tokenising the
  next chunk on the host while the device scores the current one.
- :class:`TextReward`: a plain Python ``text -> float`` on the decoded text (host callback).

The policy tokenizer is anything with ``batch_decode(rows, skip_special_tokens=True)``
(Hugging Face), ``decode_batch`` (``tokenizers``) or ``decode``.
"""

from __future__ import annotations

import concurrent.futures
import functools
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

__all__ = [
    "Reward",
    "RetokenizedReward",
    "TextReward",
    "TokenReward",
    "decode_texts",
]


class Reward(Protocol):
    """``(prompt [B, P], prompt_mask, completion [B, (N,) T], completion_mask) -> r [B, (N)]``."""

    def __call__(self, prompt_BxP: jax.Array, prompt_mask_BxP: jax.Array,
                 completion: jax.Array, completion_mask: jax.Array) -> jax.Array: ...


def _check_shapes(prompt_BxP, prompt_mask_BxP, completion, completion_mask) -> tuple[int, ...]:
    """The leading shape ``(B,)`` or ``(B, N)`` of the rewards."""
    if prompt_BxP.ndim != 2 or prompt_mask_BxP.shape != prompt_BxP.shape:
        raise ValueError(f"prompt {prompt_BxP.shape} and prompt mask {prompt_mask_BxP.shape} "
                         "must both be [batch, prompt_len]")
    if completion.ndim not in (2, 3) or completion_mask.shape != completion.shape:
        raise ValueError(f"completion {completion.shape} and completion mask "
                         f"{completion_mask.shape} must both be [batch, (samples,) time]")
    if completion.shape[0] != prompt_BxP.shape[0]:
        raise ValueError(f"{prompt_BxP.shape[0]} prompts but {completion.shape[0]} completion "
                         "rows")
    return tuple(completion.shape[:-1])


def _flatten(prompt_BxP, prompt_mask_BxP, completion, completion_mask):
    """Repeats each prompt N times so that every completion row has its prompt row."""
    if completion.ndim == 2:
        return prompt_BxP, prompt_mask_BxP, completion, completion_mask
    B, N, T = completion.shape
    xp = jnp if isinstance(completion, jax.Array) else np
    rep = lambda a: xp.repeat(a, N, axis=0)  # noqa: E731
    return (rep(prompt_BxP), rep(prompt_mask_BxP), completion.reshape(B * N, T),
            completion_mask.reshape(B * N, T))


def decode_texts(tokenizer, prompt_BxP, prompt_mask_BxP, completion, completion_mask,
                 include_prompt: bool = True) -> list[str]:
    """Texts of ``prompt + completion`` (or the completion alone), one per completion row
    (row-major over ``[B, N]``), decoded from the real (mask = 1) tokens only."""
    arrays = _flatten(*(np.asarray(a) for a in (prompt_BxP, prompt_mask_BxP, completion,
                                                  completion_mask)))
    p, pm, c, cm = arrays
    rows = [([*p[i][pm[i] != 0]] if include_prompt else []) + [*c[i][cm[i] != 0]]
            for i in range(len(c))]
    rows = [[int(t) for t in r] for r in rows]
    if hasattr(tokenizer, "batch_decode"):
        return list(tokenizer.batch_decode(rows, skip_special_tokens=True))
    if hasattr(tokenizer, "decode_batch"):
        return list(tokenizer.decode_batch(rows, skip_special_tokens=True))
    if hasattr(tokenizer, "decode"):
        return [tokenizer.decode(r) for r in rows]
    raise ValueError(f"policy tokenizer {type(tokenizer).__name__} has no batch_decode, "
                     "decode_batch or decode method")


class TokenReward(struct.PyTreeNode):
    """A JAX reward on the policy's own tokens: ``fn(params, tokens [R, S], mask [R, S]) -> [R]``.

    ``tokens`` is ``[prompt | completion]`` (or the completion alone without
    ``include_prompt``), left-padded prompt then right-padded completion; ``mask`` marks the
    real tokens. ``params`` is any pytree (or None).
    """

    fn: Callable[[Any, jax.Array, jax.Array], jax.Array] = struct.field(pytree_node=False)
    params: Any = None
    include_prompt: bool = struct.field(pytree_node=False, default=True)

    def __call__(self, prompt_BxP, prompt_mask_BxP, completion, completion_mask) -> jax.Array:
        lead = _check_shapes(prompt_BxP, prompt_mask_BxP, completion, completion_mask)
        p, pm, c, cm = _flatten(*(jnp.asarray(a) for a in (prompt_BxP, prompt_mask_BxP,
                                                             completion, completion_mask)))
        if self.include_prompt:
            c, cm = jnp.concatenate([p, c], axis=1), jnp.concatenate([pm, cm], axis=1)
        return self.fn(self.params, c, cm).astype(jnp.float32).reshape(lead)


@jax.jit
def _apply(scorer, ids_BxL, mask_BxL):
    return scorer(ids_BxL, mask_BxL)


def _retokenize(policy_tokenizer, reward_tokenizer, include_prompt: bool,
                *arrays) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = reward_tokenizer(decode_texts(policy_tokenizer, *arrays,
                                              include_prompt=include_prompt))
    pad = ((0, 0), (0, reward_tokenizer.max_length - ids.shape[1]))  # one static width
    return np.pad(ids, pad).astype(np.int32), np.pad(mask, pad).astype(np.int32)


def _text_scores(fn, policy_tokenizer, include_prompt: bool, *arrays) -> np.ndarray:
    texts = decode_texts(policy_tokenizer, *arrays, include_prompt=include_prompt)
    return np.array([fn(t) for t in texts], dtype=np.float32)


class RetokenizedReward(struct.PyTreeNode):
    """A reward model with its own tokenizer, fed the decoded text of the policy's tokens.

    ``scorer(ids [R, L], mask [R, L]) -> [R]`` is a pytree callable (e.g. a
    :class:`~bonjax.rewards.classifier.ClassifierScorer`); ``reward_tokenizer(texts) -> (ids,
    mask)`` has a ``max_length`` (an :class:`~bonjax.models.encoder_tokenizer.EncoderTokenizer`).
    """

    scorer: Any
    policy_tokenizer: Any = struct.field(pytree_node=False)
    reward_tokenizer: Any = struct.field(pytree_node=False)
    include_prompt: bool = struct.field(pytree_node=False, default=True)

    def texts(self, prompt_BxP, prompt_mask_BxP, completion, completion_mask) -> list[str]:
        if self.policy_tokenizer is None:
            raise ValueError("this reward has no policy_tokenizer: it scores texts "
                             "(score_texts) but not token arrays")
        return decode_texts(self.policy_tokenizer, prompt_BxP, prompt_mask_BxP, completion,
                            completion_mask, self.include_prompt)

    def __call__(self, prompt_BxP, prompt_mask_BxP, completion, completion_mask) -> jax.Array:
        """Jit-compatible: host re-tokenisation through ``jax.pure_callback``, device scoring."""
        lead = _check_shapes(prompt_BxP, prompt_mask_BxP, completion, completion_mask)
        shape = (int(np.prod(lead)), self.reward_tokenizer.max_length)
        out = (jax.ShapeDtypeStruct(shape, jnp.int32),) * 2
        if self.policy_tokenizer is None:
            self.texts(prompt_BxP, prompt_mask_BxP, completion, completion_mask)  # raises
        host = functools.partial(_retokenize, self.policy_tokenizer, self.reward_tokenizer,
                                 self.include_prompt)
        ids, mask = jax.pure_callback(host, out, prompt_BxP, prompt_mask_BxP, completion,
                                      completion_mask, vmap_method="sequential")
        return self.scorer(ids, mask).astype(jnp.float32).reshape(lead)

    def score_texts(self, texts: Sequence[str], chunk_size: int = 256,
                    overlap: bool | None = None) -> np.ndarray:
        """Rewards of ``texts`` (host path). Chunks of ``chunk_size`` texts; with ``overlap``
        a host thread tokenises chunk ``i + 1`` while the device scores chunk ``i``.

        ``overlap=None`` overlaps on accelerators only: on a CPU backend the "device" is the
        host's own cores, and ``experiments/bench_reward.py`` measured no gain there (on 2 cores
        tokenising is ~7% of the scoring time and its threads compete with XLA's).
        """
        if overlap is None:
            overlap = jax.default_backend() != "cpu"
        if isinstance(texts, str):
            raise ValueError("texts must be a sequence of strings, got one string")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        chunks = [list(texts[i:i + chunk_size]) for i in range(0, len(texts), chunk_size)]
        if not chunks:
            return np.zeros((0,), np.float32)

        rows = len(chunks[0])  # every chunk padded to as many rows: one compiled shape

        def tokenize(chunk):
            ids, mask = self.reward_tokenizer(chunk)
            pad = ((0, rows - len(chunk)), (0, 0))
            return np.pad(ids, pad), np.pad(mask, pad)

        pending = []
        if overlap:
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                future = pool.submit(tokenize, chunks[0])
                for i in range(len(chunks)):
                    ids, mask = future.result()
                    if i + 1 < len(chunks):
                        future = pool.submit(tokenize, chunks[i + 1])
                    pending.append(_apply(self.scorer, ids, mask))  # dispatched asynchronously
        else:
            for chunk in chunks:
                pending.append(jax.block_until_ready(_apply(self.scorer, *tokenize(chunk))))
        scores = [np.asarray(r)[: len(c)] for r, c in zip(pending, chunks, strict=True)]
        return np.concatenate(scores).astype(np.float32)

    def score(self, prompt_BxP, prompt_mask_BxP, completion, completion_mask,
              chunk_size: int = 256, overlap: bool | None = None) -> np.ndarray:
        """The rewards of :meth:`__call__` through the pipelined host path (not jittable)."""
        lead = _check_shapes(prompt_BxP, prompt_mask_BxP, completion, completion_mask)
        texts = self.texts(prompt_BxP, prompt_mask_BxP, completion, completion_mask)
        return self.score_texts(texts, chunk_size, overlap).reshape(lead)


class TextReward(struct.PyTreeNode):
    """A Python reward ``fn(text) -> float`` on the decoded ``prompt + completion`` text."""

    fn: Callable[[str], float] = struct.field(pytree_node=False)
    policy_tokenizer: Any = struct.field(pytree_node=False)
    include_prompt: bool = struct.field(pytree_node=False, default=True)

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise ValueError("texts must be a sequence of strings, got one string")
        return np.array([self.fn(t) for t in texts], dtype=np.float32)

    def __call__(self, prompt_BxP, prompt_mask_BxP, completion, completion_mask) -> jax.Array:
        """Jit-compatible through ``jax.pure_callback``."""
        lead = _check_shapes(prompt_BxP, prompt_mask_BxP, completion, completion_mask)
        out = jax.ShapeDtypeStruct((int(np.prod(lead)),), jnp.float32)
        host = functools.partial(_text_scores, self.fn, self.policy_tokenizer,
                                 self.include_prompt)
        r = jax.pure_callback(host, out, prompt_BxP, prompt_mask_BxP, completion,
                              completion_mask, vmap_method="sequential")
        return r.reshape(lead)
