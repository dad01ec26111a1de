"""The alignment trainer: one rollout, then ``epochs`` jitted gradient steps, per training step.

    trainer = Trainer(lm, ref_params, method_for(VBoNConfig(n=8)), reward, ref_rewards=store)
    state = trainer.init_state(jax.random.key(0))
    state, metrics = trainer.step(state, prompt_tokens_BxP, prompt_mask_BxP, prompt_index_B)

The gradient step is ``jax.jit``-compiled once per run with explicit in/out shardings over the
mesh (the state keeps the shardings it was created with: parameters by their logical axes,
optimiser moments like their parameters) and donates the state.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from bonjax import sharding as shd
from bonjax.checks import check_int
from bonjax.models.decoder import DecoderLM
from bonjax.models.lora import LoRAConfig, init_lora, trained_in_full
from bonjax.models.remat import compiler_options as remat_compiler_options
from bonjax.objectives import ema_update
from bonjax.sampling.sampler import Sampler
from bonjax.sampling.scorer import completion_logprobs
from bonjax.sampling.strategies import Temperature
from bonjax.training.protocol import Batch, Context, Method, RewardFn
from bonjax.training.state import (
    ADAPTERS,
    TrainState,
    merge_params,
    policy_params,
    split_trainable,
)
from bonjax.training.update import apply_updates, trainable_tree

__all__ = ["OptimizerConfig", "Trainer"]


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with global-norm clipping; defaults follow the vBoN paper's PPO setup.

    Attributes:
      learning_rate: AdamW step size.
      b1, b2: Adam moment decay rates (paper: 0.9, 0.95).
      weight_decay: decoupled weight decay.
      max_grad_norm: clip the global gradient norm to this (None: no clipping).
      epochs: gradient steps on each rollout (paper: 4).
      train_top: train only the top ``train_top`` blocks and the final norm (paper: 2), or
        every parameter (None).
      lora: train low-rank adapters (``bonjax.models.lora.LoRAConfig``) instead: the base model
        stays frozen and shared with the reference, but for the parameters its
        ``train_in_full`` names (None: no adapters).
      decay_steps: with a value, the learning rate follows a cosine from ``learning_rate`` to 0
        over this many optimiser updates (``epochs`` per training step); None keeps it constant.
      warmup_steps: linear warm-up updates before the cosine (only with ``decay_steps``).
    """

    learning_rate: float = 3e-5
    b1: float = 0.9
    b2: float = 0.95
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    epochs: int = 4
    train_top: int | None = None
    lora: LoRAConfig | None = None
    decay_steps: int | None = None
    warmup_steps: int = 0

    def __post_init__(self):
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.lora is not None and self.train_top is not None:
            raise ValueError(f"train_top = {self.train_top} and lora set together: with LoRA "
                             "the base model is frozen and only the adapters (and the parameters "
                             "LoRAConfig.train_in_full names) train")
        if self.decay_steps is not None and self.decay_steps <= self.warmup_steps:
            raise ValueError(f"decay_steps {self.decay_steps} must exceed warmup_steps "
                             f"{self.warmup_steps}")

    def make(self) -> optax.GradientTransformation:
        learning_rate = self.learning_rate
        if self.decay_steps is not None:
            learning_rate = optax.warmup_cosine_decay_schedule(
                0.0 if self.warmup_steps else self.learning_rate, self.learning_rate,
                self.warmup_steps, self.decay_steps)
        adamw = optax.adamw(learning_rate, b1=self.b1, b2=self.b2,
                            weight_decay=self.weight_decay)
        if self.max_grad_norm is None:
            return adamw
        return optax.chain(optax.clip_by_global_norm(self.max_grad_norm), adamw)


# Teacher-forced scoring as one compiled program per model and shape: a rollout run op by op
# (``jit_collect`` False) would otherwise materialise every elementwise step over the
# ``[rows, T, V]`` logits separately (on Gemma-3-270M, the reference scoring of a vBoN rollout
# took 7.4 s op by op against 1.4 s compiled). Inside a compiled ``collect`` it is inlined.
_compiled_score = jax.jit(completion_logprobs, static_argnums=0,
                          static_argnames=("temperature", "num_chunks"))


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer:
    """Runs any :class:`~bonjax.training.protocol.Method` on a decoder LM, never asking which.

    Attributes:
      lm: the policy's architecture (also the reference's and the anchor's).
      ref_params: the reference policy; the policy starts from it.
      method: what is sampled and which loss is minimised.
      reward: ``reward(prompt_tokens_BxP, prompt_mask_BxP, tokens_BxSxT, mask_BxSxT) -> [B, S]``.
      max_new_tokens: completion length T.
      optimizer: the optimiser and which parameters train.
      ref_rewards: ``prompt_index_B -> ReferenceRewards`` (vBoN's cached reference CDFs).
      mesh, rules: where the batch and the parameters live (None: the default device).
      jit_collect: run ``collect`` as one compiled program (the reward must be traceable, as
        every :mod:`bonjax.rewards` reward is); its batch comes out sharded over the batch
        axes. None: only when the job has several JAX processes, where a rollout dispatched
        op by op would be hundreds of cross-process programs (and with several CPU devices per
        process, jaxlib 0.10 deadlocks once ~32 of them are queued ahead on a device).
      data: ``prompt_index_B -> rows`` of the fixed data set a fixed-data method trains on
        (``FixedPairs``' ``PairTable``, ``SupervisedFineTuning``'s ``ResponseTable``); None for
        the methods that sample. On a mesh, its arrays replicated over it (``on_mesh``).
      score_chunks: the update scores each prompt's ``S`` completions in ``gcd(score_chunks,
        S)`` chunks, one after another, and its backward pass recomputes a chunk's logits
        instead of keeping all of them (``completion_logprobs``' ``num_chunks``): the
        ``[rows, T, V]`` float32 logits dominate the update's memory for large vocabularies
        (``docs/scaling.md``). The gcd lets one setting serve methods whose batches hold
        different ``S`` (vBoN's samples, BoNBoN's pairs).
    """

    lm: DecoderLM
    ref_params: nnx.State
    method: Method
    reward: RewardFn
    max_new_tokens: int = 40
    optimizer: OptimizerConfig = OptimizerConfig()
    ref_rewards: Callable | None = None
    mesh: Mesh | None = None
    rules: shd.ShardingRules = shd.ShardingRules()
    jit_collect: bool | None = None
    data: Callable | None = None
    score_chunks: int = 1

    def __post_init__(self):
        check_int("Trainer.score_chunks", self.score_chunks, minimum=1)
        if self.optimizer.lora is not None and self.method.uses_anchor and \
                self.method.anchor_eta > 0:
            raise ValueError(f"an EMA anchor (anchor_eta = {self.method.anchor_eta}) follows the "
                             "policy's parameters, not LoRA adapters: use anchor_eta = 0 or "
                             "train without lora")
        sampler = Sampler(self.lm, Temperature(1.0), self.max_new_tokens, self.mesh, self.rules)
        object.__setattr__(self, "sampler", sampler)
        object.__setattr__(self, "tx", self.optimizer.make())
        object.__setattr__(self, "context", Context(
            sampler=sampler, score=functools.partial(_compiled_score, self.lm),
            ref_params=self.ref_params, reward=self.reward, ref_rewards=self.ref_rewards,
            data=self.data))
        object.__setattr__(self, "_update_jit", None)
        object.__setattr__(self, "_collect_jit", jax.jit(self._collect))

    # ------------------------------------------------------------------------- state

    def init_state(self, key: jax.Array) -> TrainState:
        """The policy starts at the reference; an anchor (BOND, J-BOND) starts there too; the
        method's extras (a value head) start as it initialises them."""
        lora = self.optimizer.lora
        trainable_filter = trained_in_full(self.ref_params, lora) if lora is not None else \
            self.lm.top_blocks_filter(self.optimizer.train_top)
        params, frozen = split_trainable(self.ref_params, trainable_filter)
        if self.mesh is not None:  # parameters by their logical axes; moments follow them
            params = shd.shard_params(params, self.mesh, self.rules)
            frozen = shd.shard_params(frozen, self.mesh, self.rules)
        # The update donates the trainable parameters, which share arrays with the reference
        # until copied; the frozen ones are never donated and stay shared with it.
        params = jax.tree.map(jnp.copy, params)
        anchor = jax.tree.map(jnp.copy, params) if self.method.uses_anchor else None
        extra = self.method.init_extras(self.lm, jax.random.fold_in(key, 1))
        if lora is not None:
            if ADAPTERS in extra:
                raise ValueError(f"the method's extras already use the name {ADAPTERS!r}")
            extra[ADAPTERS] = init_lora(self.ref_params, lora, jax.random.fold_in(key, 2))
        state = TrainState.create(params, frozen, self.tx, key, extra=extra, anchor=anchor)
        if self.mesh is None:
            return state
        replicated = shd.replicated(self.mesh)

        def on_mesh(x):  # counters, keys and anything not derived from a sharded parameter
            sharding = getattr(x, "sharding", None)
            if isinstance(sharding, NamedSharding) and sharding.mesh == self.mesh:
                return x
            return jax.device_put(x, replicated)

        return jax.tree.map(on_mesh, state)

    def anchor_params(self, state: TrainState) -> nnx.State | None:
        if not self.method.uses_anchor:
            return None
        return merge_params(state.anchor, state.frozen)

    # ------------------------------------------------------------------------- one step

    def collect(self, state: TrainState, prompt_tokens_BxP, prompt_mask_BxP, prompt_index_B,
                key) -> tuple[Batch, dict]:
        """The method's rollout from the state's policy, extras and anchor."""
        jit_collect = jax.process_count() > 1 if self.jit_collect is None else self.jit_collect
        if jit_collect:
            return self._collect_jit(self._context_arrays(), state.full_params(), state.extra,
                                     self.anchor_params(state), prompt_tokens_BxP,
                                     prompt_mask_BxP, prompt_index_B, key)
        return self.method.collect(self.context, state.full_params(), state.extra,
                                   self.anchor_params(state), prompt_tokens_BxP, prompt_mask_BxP,
                                   prompt_index_B, key)

    def _context_arrays(self) -> dict:
        """The context's pytrees of arrays (reference parameters, a reward model's parameters,
        the reference store, a fixed data set): arguments of the compiled ``collect``, never its
        constants."""
        fields = {"ref_params": self.ref_params, "reward": self.reward,
                  "ref_rewards": self.ref_rewards, "data": self.data}
        return {name: value for name, value in fields.items()
                if jax.tree.leaves(value)
                and all(isinstance(x, jax.Array | np.ndarray) for x in jax.tree.leaves(value))}

    def _collect(self, context_arrays, policy, extras, anchor, prompt_tokens_BxP,
                 prompt_mask_BxP, prompt_index_B, key):
        """Traced body of a compiled ``collect``: the batch is laid out as ``update`` takes it."""
        context = dataclasses.replace(self.context, **context_arrays)
        batch, metrics = self.method.collect(context, policy, extras, anchor, prompt_tokens_BxP,
                                             prompt_mask_BxP, prompt_index_B, key)
        if self.mesh is not None:
            batch = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(
                x, shd.batch_sharding(self.mesh, x.ndim, self.rules, x.shape[0])), batch)
        return batch, metrics

    def step(self, state: TrainState, prompt_tokens_BxP, prompt_mask_BxP,
             prompt_index_B=None) -> tuple[TrainState, dict]:
        """A rollout of the method on these prompts, then ``epochs`` gradient steps."""
        if prompt_index_B is None:
            prompt_index_B = jnp.arange(prompt_tokens_BxP.shape[0])
        key, collect_key = jax.random.split(jax.random.wrap_key_data(state.key))
        batch, metrics = self.collect(state, jnp.asarray(prompt_tokens_BxP),
                                      jnp.asarray(prompt_mask_BxP), prompt_index_B, collect_key)
        next_step = state.step + 1  # taken before the update donates the state
        for _ in range(self.optimizer.epochs):
            state, update_metrics = self.update(state, batch)
        if self.method.uses_anchor and self.method.anchor_eta > 0:
            state = state.replace(anchor=ema_update(state.anchor, state.params,
                                                    self.method.anchor_eta))
        state = state.replace(step=next_step, key=jax.random.key_data(key))
        return state, {**metrics, **update_metrics}

    def update(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        """One jitted, donated gradient step on a collected batch."""
        # Reduced on device to replicated scalars: a multi-process batch is not readable here.
        has_tokens_B = jnp.any(batch.mask_BxSxT, axis=(1, 2))
        if not bool(jnp.all(has_tokens_B)):
            raise ValueError(f"prompt {int(jnp.argmin(has_tokens_B))} has no completion tokens in "
                             "the batch: every prompt needs at least one completion token")
        if self.mesh is not None:  # e.g. a replicated reward from an eager rollout
            batch = jax.tree.map(self._on_batch_axes, batch)
        trainable_state = state.replace(frozen=None)  # donated; the frozen parameters are not
        if self._update_jit is None:
            object.__setattr__(self, "_update_jit",
                               self._compile_update(trainable_state, state.frozen, batch))
        new_state, metrics = self._update_jit(trainable_state, state.frozen, batch)
        return new_state.replace(frozen=state.frozen), metrics

    def _on_batch_axes(self, x: jax.Array) -> jax.Array:
        """``x`` laid out as the compiled update takes it: split over the batch axes."""
        sharding = shd.batch_sharding(self.mesh, x.ndim, self.rules, x.shape[0])
        if getattr(x, "sharding", None) == sharding:
            return x
        return jax.device_put(x, sharding)

    def loss(self, trainable: dict, frozen: nnx.State, batch: Batch):
        """Mean per-prompt loss of the method; ``trainable`` is ``trainable_tree(state)``,
        ``{"params": ..., **extras}``. One forward pass scores the batch (log-probs and the
        hidden states, which a method may read, e.g. through a value head)."""
        extras = {name: value for name, value in trainable.items() if name != "params"}
        scores = completion_logprobs(self.lm, policy_params(trainable["params"], frozen, extras),
                                     batch.prompt_tokens_BxP, batch.prompt_mask_BxP,
                                     batch.tokens_BxSxT, batch.mask_BxSxT,
                                     num_chunks=math.gcd(self.score_chunks,
                                                         batch.tokens_BxSxT.shape[1]))
        loss_B, metrics = self.method.loss(scores, batch, extras)
        return loss_B.mean(), metrics

    def _compile_update(self, state: TrainState, frozen: nnx.State, batch: Batch):
        """The jitted step on ``(state without its frozen parameters, frozen, batch)``; only the
        first is donated. The model's ``remat`` policy decides what the backward pass keeps of
        each block (compiled with the XLA options it needs on CPU, ``bonjax.models.remat``)."""
        def update(state: TrainState, frozen: nnx.State, batch: Batch):
            (loss, metrics), grads = jax.value_and_grad(self.loss, has_aux=True)(
                trainable_tree(state), frozen, batch)
            state, update_metrics = apply_updates(state, grads, self.tx, loss)
            return state, {"loss": loss, **metrics, **update_metrics}

        platform = (jax.default_backend() if self.mesh is None
                    else self.mesh.devices.flat[0].platform)
        options = remat_compiler_options(self.lm.config.remat, platform)
        if self.mesh is None:
            return jax.jit(update, donate_argnums=0, compiler_options=options)
        state_shardings = jax.tree.map(lambda x: x.sharding, state)
        frozen_shardings = jax.tree.map(lambda x: x.sharding, frozen)
        batch_shardings = jax.tree.map(
            lambda x: shd.batch_sharding(self.mesh, x.ndim, self.rules, x.shape[0]), batch)
        return jax.jit(update, in_shardings=(state_shardings, frozen_shardings, batch_shardings),
                       out_shardings=(state_shardings, shd.replicated(self.mesh)),
                       donate_argnums=0, compiler_options=options)
