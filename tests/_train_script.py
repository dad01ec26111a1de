"""A tiny GPT-2 next-token training run, importable by tests and runnable as a killable process.

    python tests/_train_script.py RUN_DIR NUM_STEPS SAVE_EVERY

trains with checkpoints in ``RUN_DIR/checkpoints`` and metrics in ``RUN_DIR``, then prints the
data positions it consumed as one JSON line (``{"positions": [...]}``). With
``BONJAX_TEST_SLEEP_FROM=P`` and ``BONJAX_TEST_SLEEP_S=S`` in the environment, loading each batch
at data position ``>= P`` first sleeps ``S`` seconds, so a test can kill the run mid-way.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bonjax.models import DecoderLM, GPT2Config, positions_from_mask
from bonjax.training.state import TrainState
from bonjax.training.update import apply_updates

CONFIG = GPT2Config.tiny()
BATCH, LENGTH = 4, 16
TX = optax.adamw(3e-3, weight_decay=0.01)


def batch_at(position: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    """The batch of data position ``position``: random tokens, a pure function of it."""
    rng = np.random.default_rng(position)
    tokens_BxT = rng.integers(2, CONFIG.vocab_size, (BATCH, LENGTH), dtype=np.int32)
    return {"tokens": tokens_BxT, "scale": np.float32(scale)}


def next_token_loss(lm: DecoderLM, params, tokens_BxT, keep_BxT, scale):
    """Mean next-token cross-entropy over the kept target positions, times ``scale``."""
    mask_BxT = jnp.ones_like(tokens_BxT, dtype=bool)
    out = lm.forward(params, tokens_BxT, positions_from_mask(mask_BxT), mask_BxT)
    logits_BxTxV = out.logits_BxTxV
    logp_BxTxV = jax.nn.log_softmax(logits_BxTxV[:, :-1], axis=-1)
    target_logp_BxT = jnp.take_along_axis(logp_BxTxV, tokens_BxT[:, 1:, None], -1)[..., 0]
    keep_BxT = keep_BxT[:, 1:].astype(jnp.float32)
    return -scale * jnp.sum(target_logp_BxT * keep_BxT) / jnp.maximum(keep_BxT.sum(), 1.0)


def train_step(lm: DecoderLM, state: TrainState, batch):
    """One step; the state's key drops a random 10% of the targets (so resume must restore it)."""
    key, drop_key = jax.random.split(jax.random.wrap_key_data(state.key))
    keep_BxT = jax.random.bernoulli(drop_key, 0.9, batch["tokens"].shape)

    def loss_fn(params):
        return next_token_loss(lm, nnx.merge_state(params, state.frozen), batch["tokens"],
                               keep_BxT, batch["scale"])

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    state, metrics = apply_updates(state.replace(key=jax.random.key_data(key)),
                                   {"params": grads}, TX, loss)
    return state, {"loss": loss, **metrics}


def make_workload():
    """(a fresh-state factory, the jitted step with the state donated)."""
    lm, _ = DecoderLM.abstract(CONFIG)

    def fresh_state() -> TrainState:
        _, params = DecoderLM.init(CONFIG, jax.random.key(0))
        return TrainState.create(params, nnx.State({}), TX, jax.random.key(1))

    # The state is donated: the step writes the new parameters over the old buffers.
    step_fn = jax.jit(functools.partial(train_step, lm), donate_argnums=0)
    return fresh_state, step_fn


def main(run_dir: str, num_steps: int, save_every: int) -> None:
    from bonjax.training.checkpoint import Checkpointer, config_fingerprint
    from bonjax.training.loop import train_loop
    from bonjax.training.metrics import MetricsWriter

    sleep_from = int(os.environ.get("BONJAX_TEST_SLEEP_FROM", "-1"))
    sleep_s = float(os.environ.get("BONJAX_TEST_SLEEP_S", "0"))
    positions = []

    def batches(position: int):
        positions.append(position)
        if 0 <= sleep_from <= position:
            time.sleep(sleep_s)
        return batch_at(position)

    fresh_state, step_fn = make_workload()
    with Checkpointer(os.path.join(run_dir, "checkpoints"), save_every=save_every,
                      fingerprint=config_fingerprint(CONFIG)) as ckpt, \
            MetricsWriter(run_dir) as writer:
        train_loop(step_fn, fresh_state(), batches, num_steps=num_steps, checkpointer=ckpt,
                   metrics=writer, progress=False)
    print(json.dumps({"positions": positions}), flush=True)


if __name__ == "__main__":
    jax.config.update("jax_default_matmul_precision", "highest")
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
