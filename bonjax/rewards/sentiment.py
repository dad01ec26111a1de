"""The IMDB sentiment reward: all-MiniLM-L6-v2 fine-tuned on bonjax's IMDB train split.

The stand-in for the vBoN paper's ``distilbert-imdb`` reward (its weights do not ship offline).
Model: all-MiniLM-L6-v2, mean pooling, a 2-class linear head (0 = neg, 1 = pos); the embeddings
and the bottom ``frozen_layers`` layers stay frozen. Input: head+tail truncation to
``max_length`` WordPiece tokens. Loss: mean cross-entropy; AdamW with linear warmup and decay;
matmuls in ``compute_dtype`` (bfloat16 by default, float32 accumulation) while fine-tuning, while
the saved model computes in float32.

Artifact (a directory, by default ``~/.cache/bonjax/rewards/minilm-imdb``)::

    reward.json      format version, encoder config, tokenizer settings, training settings,
                     held-out accuracy, wall time
    tokenizer.json   the WordPiece tokenizer (copied from the model package)
    params/          the orbax checkpoint of the parameters (a pure dict of arrays)

``python experiments/train_reward.py`` creates it; :func:`load_sentiment_reward` loads it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import shutil
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bonjax.data.imdb import Reviews
from bonjax.models.encoder import BertConfig, EncoderClassifier, Pooling
from bonjax.models.encoder_tokenizer import EncoderTokenizer
from bonjax.models.encoder_weights import load_minilm, minilm_dir
from bonjax.rewards.classifier import ClassifierOutput, ClassifierScorer
from bonjax.rewards.interface import RetokenizedReward

__all__ = [
    "DEFAULT_REWARD_DIR",
    "TRAIN_COMMAND",
    "SentimentTrainConfig",
    "accuracy",
    "default_reward_dir",
    "load_sentiment_classifier",
    "load_sentiment_reward",
    "save_sentiment_classifier",
    "train_sentiment_classifier",
]

DEFAULT_REWARD_DIR = "~/.cache/bonjax/rewards/minilm-imdb"
TRAIN_COMMAND = "python experiments/train_reward.py"
_FORMAT = 1


def default_reward_dir() -> pathlib.Path:
    """``$BONJAX_SENTIMENT_REWARD`` if set, else ``~/.cache/bonjax/rewards/minilm-imdb``."""
    return pathlib.Path(os.environ.get("BONJAX_SENTIMENT_REWARD", DEFAULT_REWARD_DIR)).expanduser()


@dataclasses.dataclass(frozen=True)
class SentimentTrainConfig:
    """Settings of the sentiment classifier's fine-tuning."""

    max_length: int = 128  # WordPiece tokens per review, [CLS] and [SEP] included
    keep_tail: int = 64  # tokens kept from the end of longer reviews (head+tail truncation)
    frozen_layers: int = 4  # bottom encoder layers kept frozen (the embeddings always are)
    batch_size: int = 32
    epochs: int = 1
    learning_rate: float = 1e-4  # peak AdamW learning rate
    warmup_fraction: float = 0.06  # of all steps, linear warmup from 0, then linear decay to 0
    weight_decay: float = 0.01
    train_examples: int | None = None  # the first n of a seeded shuffle; None: all
    seed: int = 0  # head initialisation and data order
    # matmul operands while fine-tuning (float32 parameters, accumulation and elementwise work;
    # on CPUs with bfloat16 matrix units ~2x faster steps); the saved model computes in float32
    compute_dtype: str = "bfloat16"

    def __post_init__(self):
        if not 0 <= self.frozen_layers < 6:
            raise ValueError(f"frozen_layers must be in [0, 5], got {self.frozen_layers}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError(f"batch_size and epochs must be positive, got {self.batch_size}, "
                             f"{self.epochs}")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"compute_dtype must be float32 or bfloat16, got "
                             f"{self.compute_dtype!r}")
        if self.train_examples is not None and self.train_examples < self.batch_size:
            raise ValueError(f"train_examples {self.train_examples} is below one batch")

    def is_trainable(self, path, _=None) -> bool:
        """Whether the parameter at ``path`` (an ``nnx.State`` path) is fine-tuned: the layers
        above the frozen ones and the head."""
        if path[0] == "layers":
            return int(path[1]) >= self.frozen_layers
        return path[0] in ("classifier", "classifier_bias")

    def tokenizer(self, tokenizer_file: pathlib.Path | None = None) -> EncoderTokenizer:
        file = tokenizer_file or minilm_dir() / "tokenizer.json"
        return EncoderTokenizer(file, self.max_length, keep_tail=self.keep_tail)


def _batched_logits(model: EncoderClassifier, params: nnx.State, ids_NxL: np.ndarray,
                    mask_NxL: np.ndarray, batch_size: int = 128) -> np.ndarray:
    forward = jax.jit(lambda p, i, m: model.forward(p, i, m).logits_BxC)
    out = []
    for start in range(0, len(ids_NxL), batch_size):
        ids, mask = ids_NxL[start:start + batch_size], mask_NxL[start:start + batch_size]
        pad = batch_size - len(ids)  # one compiled shape: pad the last batch with empty rows
        ids, mask = np.pad(ids, ((0, pad), (0, 0))), np.pad(mask, ((0, pad), (0, 0)))
        out.append(np.asarray(forward(params, ids, mask))[: batch_size - pad])
    return np.concatenate(out)


def accuracy(model: EncoderClassifier, params: nnx.State, tokenizer: EncoderTokenizer,
             reviews: Reviews, batch_size: int = 128) -> float:
    """Fraction of ``reviews`` whose argmax class equals the label."""
    ids, mask = tokenizer(reviews.texts)
    logits = _batched_logits(model, params, ids, mask, batch_size)
    return float((logits.argmax(-1) == reviews.labels).mean())


def train_sentiment_classifier(
        config: SentimentTrainConfig, train: Reviews,
        progress: bool = True) -> tuple[EncoderClassifier, nnx.State, dict[str, Any]]:
    """Fine-tunes all-MiniLM-L6-v2 + a linear head on ``train``; returns model, params, stats.

    The returned model computes in float32 whatever ``config.compute_dtype`` trained it.
    """
    key = jax.random.key(config.seed)
    rng = np.random.default_rng(config.seed)
    model, params = load_minilm(num_classes=2, key=key)
    n = len(train) if config.train_examples is None else min(config.train_examples, len(train))
    subset = rng.permutation(len(train))[:n]
    ids_NxL, mask_NxL = config.tokenizer()([train.texts[i] for i in subset])
    labels_N = np.asarray(train.labels, np.int32)[subset]
    steps_per_epoch = n // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    warmup = max(1, int(config.warmup_fraction * total_steps))
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, config.learning_rate, warmup),
         optax.linear_schedule(config.learning_rate, 0.0, max(1, total_steps - warmup))],
        [warmup])
    tx = optax.adamw(schedule, weight_decay=config.weight_decay)

    train_model, _ = EncoderClassifier.abstract(
        dataclasses.replace(model.config, dtype=config.compute_dtype))
    graphdef, trainable, frozen = nnx.split(train_model.module(params),
                                            config.is_trainable, ...)
    opt_state = tx.init(trainable)
    L = config.max_length
    positions_BxL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (config.batch_size, L))

    def loss_fn(trainable, frozen, ids_BxL, mask_BxL, y_B):
        logits_BxC = nnx.merge(graphdef, trainable, frozen)(ids_BxL, mask_BxL,
                                                             positions_BxL).logits_BxC
        loss_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxC, y_B)
        return loss_B.mean(), (logits_BxC.argmax(-1) == y_B).mean()

    # the trainable parameters and optimiser state are replaced every step: donate them
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(trainable, opt_state, frozen, ids_BxL, mask_BxL, y_B):
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable, frozen, ids_BxL, mask_BxL, y_B)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss, acc

    from tqdm.auto import tqdm

    start = time.perf_counter()
    B = config.batch_size
    step = step.lower(trainable, opt_state, frozen, ids_NxL[:B], mask_NxL[:B],
                      labels_N[:B]).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    bar = tqdm(total=total_steps, disable=not progress, desc="fine-tuning", mininterval=5.0)
    ema_loss, ema_acc, losses = None, None, []

    def record(metrics):
        nonlocal ema_loss, ema_acc
        loss, acc = (float(m) for m in metrics)
        losses.append(loss)
        ema_loss = loss if ema_loss is None else 0.95 * ema_loss + 0.05 * loss
        ema_acc = acc if ema_acc is None else 0.95 * ema_acc + 0.05 * acc
        bar.set_postfix(loss=f"{ema_loss:.3f}", acc=f"{ema_acc:.3f}", refresh=False)
        bar.update()

    pending = None  # the previous step's metrics: fetched after the next step is dispatched
    for _ in range(config.epochs):
        order = rng.permutation(n)
        for s in range(steps_per_epoch):
            b = order[s * B:(s + 1) * B]
            trainable, opt_state, *metrics = step(trainable, opt_state, frozen, ids_NxL[b],
                                                  mask_NxL[b], labels_N[b])
            if pending is not None:
                record(pending)
            pending = metrics
    record(pending)
    bar.close()
    params = nnx.split(nnx.merge(graphdef, trainable, frozen))[1]
    train_seconds = time.perf_counter() - start
    stats = {"train_steps": total_steps, "train_examples": int(n),
             "compile_seconds": compile_seconds, "train_seconds": train_seconds,
             "seconds_per_step": train_seconds / total_steps,
             "final_train_loss_mean_last_50": float(np.mean(losses[-50:]))}
    return model, params, stats


def save_sentiment_classifier(path: str | os.PathLike, model: EncoderClassifier,
                              params: nnx.State, tokenizer: EncoderTokenizer,
                              metadata: dict[str, Any]) -> pathlib.Path:
    """Writes the artifact directory atomically (a complete directory or none)."""
    import orbax.checkpoint as ocp

    path = pathlib.Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.asdict(model.config)
    cfg["pooling"] = model.config.pooling.value
    record = {"format": _FORMAT, "base_model": "sentence-transformers/all-MiniLM-L6-v2",
              "labels": ["neg", "pos"], "positive_class": 1, "encoder_config": cfg,
              "tokenizer": {"max_length": tokenizer.max_length, "keep_tail": tokenizer.keep_tail},
              **metadata}
    staging = pathlib.Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    (staging / "reward.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    shutil.copy(tokenizer.file, staging / "tokenizer.json")
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(staging / "params", nnx.to_pure_dict(params))
    checkpointer.wait_until_finished()
    if path.exists():
        shutil.rmtree(path)
    os.replace(staging, path)
    return path


def load_sentiment_classifier(
        path: str | os.PathLike | None = None
) -> tuple[EncoderClassifier, nnx.State, EncoderTokenizer, dict[str, Any]]:
    """Model, parameters, tokenizer and metadata of a saved sentiment classifier."""
    import orbax.checkpoint as ocp

    path = default_reward_dir() if path is None else pathlib.Path(path).expanduser()
    if not (path / "reward.json").is_file() or not (path / "params").is_dir():
        raise FileNotFoundError(f"no trained sentiment reward at {path}; create it with "
                                f"`{TRAIN_COMMAND} --output_dir {path}` (about 16 minutes "
                                "of CPU time on 2 cores)")
    record = json.loads((path / "reward.json").read_text())
    if record.get("format") != _FORMAT:
        raise ValueError(f"{path / 'reward.json'} has format {record.get('format')!r}, "
                         f"expected {_FORMAT}; re-create it with `{TRAIN_COMMAND}`")
    cfg = dict(record["encoder_config"])
    config = BertConfig(**{**cfg, "pooling": Pooling(cfg["pooling"])})
    model, abstract = EncoderClassifier.abstract(config)
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          nnx.to_pure_dict(abstract))
    restored = ocp.StandardCheckpointer().restore(path / "params", target)
    nnx.replace_by_pure_dict(abstract, restored)
    tok = record["tokenizer"]
    tokenizer = EncoderTokenizer(path / "tokenizer.json", tok["max_length"],
                                 keep_tail=tok["keep_tail"])
    return model, abstract, tokenizer, record


def load_sentiment_reward(policy_tokenizer=None, path: str | os.PathLike | None = None, *,
                          output: ClassifierOutput = ClassifierOutput.LOGIT,
                          include_prompt: bool = True,
                          max_length: int | None = None) -> RetokenizedReward:
    """The trained IMDB sentiment reward, ready to score policy tokens (or texts).

    ``output`` picks the positive class's logit (the vBoN paper's choice), log-odds or
    probability. ``max_length`` (WordPiece tokens) defaults to the training length; a different
    one keeps the same head/tail proportion for long texts. Without a
    ``policy_tokenizer`` the reward only scores texts (:meth:`RetokenizedReward.score_texts`).
    Raises FileNotFoundError naming the command that creates a missing artifact.
    """
    model, params, tokenizer, _ = load_sentiment_classifier(path)
    if max_length is not None:
        keep_tail = tokenizer.keep_tail * max_length // tokenizer.max_length  # same proportion
        tokenizer = EncoderTokenizer(tokenizer.file, max_length, keep_tail=keep_tail)
    scorer = ClassifierScorer(model=model, params=params, positive_class=1, output=output)
    return RetokenizedReward(scorer=scorer, policy_tokenizer=policy_tokenizer,
                             reward_tokenizer=tokenizer, include_prompt=include_prompt)
