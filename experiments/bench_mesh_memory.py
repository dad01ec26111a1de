"""Benchmark: per-device memory of a sharded vBoN update and a sampling call, compiled for a mesh.

Run from the repository root, with as many (fake) devices as the mesh has:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        python -m experiments.bench_mesh_memory --models gemma3-4b --mesh 1,8,1

``--system=<config>`` compiles the BoNBoN system's programs instead, at the shapes of a
``bonbon_*`` config (experiments/configs): one training step of ``FixedPairs`` (BoNBoN on
``train.prompts_per_step`` best-and-worst pairs of ``max_new_tokens`` tokens after prompts of
``data.max_prompt_tokens``, every parameter trained unless ``train.train_top``, AdamW) and one
sampling call of the pool (``pool.prompts_per_call`` prompts x ``pool.samples_per_call``
samples), with the config's model shapes, compute dtype, remat policy and mesh (``--mesh``
overrides it):

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        python -m experiments.bench_mesh_memory --system=bonbon_hh

Nothing is materialised: parameters, optimiser state and batch are shapes with shardings
(``jax.ShapeDtypeStruct``), and the trainer's update (``Trainer._compile_update``: scorer,
loss, gradient, AdamW) and the sampler (prefill + ``lax.scan`` decode) are lowered and compiled
for the mesh of the default backend's devices. On 8 fake CPU devices in the shape of a TPU
v5e-8 slice (data x fsdp x tensor), XLA partitions the programs as it would for the slice, and
``memory_analysis()`` of the SPMD program reports one device's bytes: arguments (its shards of
parameters, optimiser state and batch), outputs, temporaries (activations, logits, gathered
weights) and the donated state aliased by the new one. One JSON line per case; ``peak_bytes =
arguments + outputs + temporaries - aliased``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import jax
import jax.numpy as jnp
import optax

from bonjax import objectives as obj
from bonjax import sharding as shd
from bonjax.experiment.bonbon_config import check_bonbon_config
from bonjax.experiment.components import config_mesh
from bonjax.models import DecoderLM, Gemma3Config, GPT2Config, GPTNeoXConfig, LlamaConfig
from bonjax.models.lora import LoRAConfig, init_lora, trained_in_full
from bonjax.sampling.sampler import Sampler
from bonjax.sampling.strategies import Temperature
from bonjax.training import FixedPairs, OptimizerConfig, Trainer, method_for
from bonjax.training.protocol import Batch
from bonjax.training.state import ADAPTERS, TrainState, split_trainable
from experiments import configs
from experiments.bench_remat_memory import abstract_batch

CONFIGS = {"llama3-8b": LlamaConfig.llama3_8b, "gemma3-4b": Gemma3Config.gemma3_4b,
           "gemma3-1b": Gemma3Config.gemma3_1b, "gemma3-270m": Gemma3Config.gemma3_270m,
           "gpt2-124m": GPT2Config.gpt2_124m, "gemma3-tiny": Gemma3Config.tiny}
CASES = ("f32", "bf16-remat", "bf16-lora", "bf16-top2")
# The models of the BoNBoN system's configs (config.model), by their shapes alone.
SYSTEM_MODELS = {"EleutherAI/pythia-2.8b": GPTNeoXConfig.pythia_2_8b,
                 "gemma3-270m": Gemma3Config.gemma3_270m,
                 "tiny-gpt2": lambda **kw: GPT2Config.tiny(vocab_size=50257, **kw)}


def _unused_reward(*args):
    raise AssertionError("the update does not call the reward")


def _with_shardings(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                        shardings)


def sharded_params(config, mesh, rules):
    lm, abstract = DecoderLM.abstract(config)
    return lm, _with_shardings(abstract, shd.param_shardings(abstract, mesh, rules))


def _trainable(lm, params, lora: LoRAConfig | None, train_top: int | None):
    """``({"params": ..., ["lora": adapters]}, frozen)`` as ``Trainer.init_state`` splits them
    (shapes only): LoRA adapters and what ``LoRAConfig.train_in_full`` names, the top
    ``train_top`` blocks, or every parameter."""
    train, frozen = split_trainable(params, trained_in_full(params, lora) if lora
                                    else lm.top_blocks_filter(train_top))
    if lora is None:
        return {"params": train}, frozen
    adapters = jax.eval_shape(lambda: init_lora(params, lora, jax.random.key(0)))
    return {"params": train, ADAPTERS: adapters}, frozen


def update_memory(lm, params, mesh, rules, *, lora: LoRAConfig | None, B: int, P: int, K: int,
                  T: int, method=None, batch=None, train_top: int | None = None,
                  score_chunks: int = 1) -> dict:
    """The compiled update of ``method`` (default vBoN, N = 8) on ``batch`` (default a vBoN
    batch of B prompts x K samples), training every parameter, the top ``train_top`` blocks,
    or LoRA adapters, scoring in ``score_chunks`` chunks (``Trainer.score_chunks``)."""
    optimizer = OptimizerConfig(epochs=1, lora=lora)
    method = method or method_for(obj.VBoNConfig(n=8), samples_per_prompt=K)
    trainer = Trainer(lm, params, method, _unused_reward, max_new_tokens=T, optimizer=optimizer,
                      mesh=mesh, rules=rules, score_chunks=score_chunks)
    replicated = shd.replicated(mesh)
    trainable, frozen = _trainable(lm, params, lora, train_top)
    train = trainable["params"]  # sharded as the parameters are; the adapters replicated
    extra = {name: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                               sharding=replicated), tree)
             for name, tree in trainable.items() if name != "params"}
    trainable = {"params": train, **extra}
    opt_state = jax.eval_shape(trainer.tx.init, trainable)
    opt_shardings = optax.tree_map_params(
        trainer.tx, lambda _, x: x.sharding, opt_state, trainable,
        transform_non_params=lambda _: replicated)
    opt_state = _with_shardings(opt_state, opt_shardings)
    scalar = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=replicated)
    state = TrainState(step=scalar, params=train, frozen=None, opt_state=opt_state, key=key,
                       extra=extra, anchor=None)
    batch = abstract_batch(B, P, K, T) if batch is None else batch
    batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=shd.batch_sharding(mesh, x.ndim, rules, B)), batch)
    start = time.perf_counter()
    compiled = trainer._compile_update(state, frozen, batch).lower(state, frozen, batch).compile()
    return _row(compiled, time.perf_counter() - start)


def state_bytes(lm, params, lora: LoRAConfig | None, train_top: int | None) -> dict:
    """Whole-model GiB of the parameters and of AdamW's state (two moments, in the trainable
    leaves' dtype) for what trains (``_trainable``; LoRA adapters in float32)."""
    tx = OptimizerConfig().make()
    trainable, _ = _trainable(lm, params, lora, train_top)
    gib = 2.0 ** 30

    def size(tree):
        return sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)) / gib

    return {"param_gib": round(size(params), 4), "trainable_gib": round(size(trainable), 4),
            "adam_state_gib": round(size(jax.eval_shape(tx.init, trainable)), 4)}


def sampling_memory(lm, params, mesh, rules, *, B: int, P: int, N: int, T: int) -> dict:
    sampler = Sampler(lm, Temperature(1.0), T, mesh, rules)
    batch = shd.batch_sharding(mesh, 2, rules, B)
    tokens = jax.ShapeDtypeStruct((B, P), jnp.int32, sharding=batch)
    mask = jax.ShapeDtypeStruct((B, P), jnp.bool_, sharding=batch)
    key = jax.random.key(0)
    start = time.perf_counter()
    compiled = sampler.lower(params, tokens, mask, key, N).compile()
    return _row(compiled, time.perf_counter() - start)


def _row(compiled, compile_s: float) -> dict:
    m = compiled.memory_analysis()
    peak = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes)
    gib = 2.0 ** 30
    return {"argument_gib": round(m.argument_size_in_bytes / gib, 3),
            "output_gib": round(m.output_size_in_bytes / gib, 3),
            "temp_gib": round(m.temp_size_in_bytes / gib, 3),
            "alias_gib": round(m.alias_size_in_bytes / gib, 3),
            "peak_gib": round(peak / gib, 3), "compile_s": round(compile_s, 1)}


def pair_batch(B: int, P: int, T: int) -> Batch:
    """The shapes of a collected fixed-pairs batch: B prompts of P tokens, their best and worst
    completions of T tokens with pi_ref's log-probabilities."""
    def s(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype)

    return Batch(prompt_tokens_BxP=s((B, P), jnp.int32), prompt_mask_BxP=s((B, P), jnp.bool_),
                 tokens_BxSxT=s((B, 2, T), jnp.int32), mask_BxSxT=s((B, 2, T), jnp.bool_),
                 logp_old_BxSxT=s((B, 2, T), jnp.float32),
                 logp_ref_BxSxT=s((B, 2, T), jnp.float32))


def system_memory(config, mesh=None, rules: shd.ShardingRules = shd.ShardingRules(),
                  what: tuple[str, ...] = ("update", "sample")) -> list:
    """Per-device memory of the BoNBoN system's FixedPairs training step (``"update"``) and
    pool sampling call (``"sample"``) at the shapes of ``config`` (a ``bonbon_*`` config),
    compiled for ``mesh`` (None: the config's ``mesh_shape`` over the default backend's
    devices); one row per program of ``what``."""
    check_bonbon_config(config)
    if config.model not in SYSTEM_MODELS:
        raise ValueError(f"no shapes for config.model {config.model!r}; known: "
                         f"{', '.join(SYSTEM_MODELS)}")
    if mesh is None:
        mesh = config_mesh(tuple(config.mesh_shape), {
            "config.train.prompts_per_step": int(config.train.prompts_per_step)})
        mesh = mesh if mesh is not None else shd.make_mesh((1, 1, 1))
    model_config = SYSTEM_MODELS[config.model](dtype=config.compute_dtype, remat=config.remat)
    lm, params = sharded_params(model_config, mesh, rules)
    P = (int(config.data.max_tokens) + 1 if config.data.source == "imdb"
         else int(config.data.max_prompt_tokens))
    T, B = int(config.max_new_tokens), int(config.train.prompts_per_step)
    base = {"model": config.model, "mesh": ",".join(str(n) for n in mesh.devices.shape),
            "devices": mesh.size, "backend": jax.default_backend(), "prompt_len": P,
            "new_tokens": T, "dtype": model_config.dtype,
            "param_dtype": model_config.param_dtype, "remat": model_config.remat}
    method = FixedPairs(obj.BoNBoNConfig(n=max(config.bonbon.ns), alpha=config.bonbon.alpha))
    rows = []
    with jax.set_mesh(mesh):
        if "update" in what:
            rows.append({**base, "program": "fixed_pairs_update", "prompts": B, "samples": 2,
                         **update_memory(lm, params, mesh, rules, lora=None, B=B, P=P, K=2, T=T,
                                         method=method, batch=pair_batch(B, P, T),
                                         train_top=int(config.train.train_top) or None,
                                         score_chunks=int(config.train.score_chunks))})
        if "sample" in what:
            per_call, N = int(config.pool.prompts_per_call), int(config.pool.samples_per_call)
            rows.append({**base, "program": "pool_sample", "prompts": per_call, "samples": N,
                         **sampling_memory(lm, params, mesh, rules, B=per_call, P=P, N=N, T=T)})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gemma3-4b")
    parser.add_argument("--mesh", default="1,8,1", help="data,fsdp,tensor")
    parser.add_argument("--cases", default="f32,bf16-remat,bf16-lora,bf16-top2",
                        help="f32 (float32, no remat), bf16-remat (bf16 parameters and compute, "
                             "remat block), bf16-lora (the same with rank-16 q/v adapters), "
                             "bf16-top2 (the same training the top 2 blocks and the final norm)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--score-chunks", type=int, default=1,
                        help="the update scores each prompt's samples in this many chunks")
    parser.add_argument("--what", default="update,sample",
                        help="update, sample (compiled per-device memory), state (whole-model "
                             "bytes of the parameters and of AdamW's state for what trains; "
                             "nothing compiled)")
    parser.add_argument("--system", default="",
                        help="a bonbon_* config: its FixedPairs step and pool sampling call "
                             "(--mesh, when given, replaces its mesh)")
    args, given = parser.parse_args(), {a.split("=")[0] for a in sys.argv[1:]}
    unknown = [case for case in args.cases.split(",") if case not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}; choose from {', '.join(CASES)}")
    rules = shd.ShardingRules()
    if args.system:
        mesh = (shd.make_mesh(tuple(int(s) for s in args.mesh.split(",")))
                if "--mesh" in given else None)
        for row in system_memory(configs.get(args.system), mesh, rules,
                                 tuple(args.what.split(","))):
            print(json.dumps({"system": args.system, **row}), flush=True)
        return
    mesh = shd.make_mesh(tuple(int(s) for s in args.mesh.split(",")))
    B, P, K, T = args.prompts, args.prompt_len, args.samples, args.new_tokens
    for model in args.models.split(","):
        for case in args.cases.split(","):
            if case == "f32":
                config, lora = CONFIGS[model](), None
            else:
                config = CONFIGS[model](dtype="bfloat16", param_dtype="bfloat16", remat="block")
                lora = LoRAConfig(rank=16, targets=("q", "v")) if case == "bf16-lora" else None
                if lora is not None and model.startswith("gpt2"):
                    lora = LoRAConfig(rank=16, targets=("qkv",))
            train_top = 2 if case == "bf16-top2" else None
            lm, params = sharded_params(config, mesh, rules)
            base = {"model": model, "case": case, "mesh": args.mesh, "devices": mesh.size,
                    "backend": jax.default_backend(), "prompts": B, "prompt_len": P,
                    "samples": K, "new_tokens": T, "dtype": config.dtype,
                    "param_dtype": config.param_dtype, "remat": config.remat,
                    "lora": None if lora is None else dataclasses.asdict(lora),
                    "train_top": train_top, "score_chunks": args.score_chunks}
            if "state" in args.what:
                print(json.dumps({**base, "program": "state", **state_bytes(
                    lm, params, lora, train_top)}), flush=True)
            with jax.set_mesh(mesh):
                if "update" in args.what:
                    print(json.dumps({**base, "program": "vbon_update", **update_memory(
                        lm, params, mesh, rules, lora=lora, B=B, P=P, K=K, T=T,
                        train_top=train_top, score_chunks=args.score_chunks)}), flush=True)
                if "sample" in args.what and case in ("f32", "bf16-remat"):  # the other
                    # cases sample exactly as bf16-remat does
                    print(json.dumps({**base, "program": "sample", **sampling_memory(
                        lm, params, mesh, rules, B=B, P=P, N=K, T=T)}), flush=True)


if __name__ == "__main__":
    main()
