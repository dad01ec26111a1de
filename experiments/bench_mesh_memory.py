"""Benchmark: per-device memory of a sharded vBoN update and a sampling call, compiled for a mesh.

Run from the repository root, with as many (fake) devices as the mesh has:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        python -m experiments.bench_mesh_memory --models gemma3-4b --mesh 1,8,1

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
import time

import jax
import jax.numpy as jnp
import optax

from bonjax import objectives as obj
from bonjax import sharding as shd
from bonjax.models import DecoderLM, Gemma3Config, GPT2Config, LlamaConfig
from bonjax.models.lora import LoRAConfig, init_lora
from bonjax.sampling.sampler import Sampler
from bonjax.sampling.strategies import Temperature
from bonjax.training import OptimizerConfig, Trainer, method_for
from bonjax.training.state import ADAPTERS, TrainState, split_trainable
from experiments.bench_remat_memory import abstract_batch

CONFIGS = {"llama3-8b": LlamaConfig.llama3_8b, "gemma3-4b": Gemma3Config.gemma3_4b,
           "gemma3-1b": Gemma3Config.gemma3_1b, "gemma3-270m": Gemma3Config.gemma3_270m,
           "gpt2-124m": GPT2Config.gpt2_124m, "gemma3-tiny": Gemma3Config.tiny}


def _unused_reward(*args):
    raise AssertionError("the update does not call the reward")


def _with_shardings(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                        shardings)


def sharded_params(config, mesh, rules):
    lm, abstract = DecoderLM.abstract(config)
    return lm, _with_shardings(abstract, shd.param_shardings(abstract, mesh, rules))


def update_memory(lm, params, mesh, rules, *, lora: LoRAConfig | None, B: int, P: int, K: int,
                  T: int) -> dict:
    optimizer = OptimizerConfig(epochs=1, lora=lora)
    trainer = Trainer(lm, params, method_for(obj.VBoNConfig(n=8), samples_per_prompt=K),
                      _unused_reward, max_new_tokens=T, optimizer=optimizer, mesh=mesh,
                      rules=rules)
    replicated = shd.replicated(mesh)
    train, frozen = split_trainable(params, (lambda path: False) if lora else (lambda path: True))
    extra = {}
    if lora is not None:
        adapters = jax.eval_shape(lambda: init_lora(params, lora, jax.random.key(0)))
        extra[ADAPTERS] = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), adapters)
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
    batch = abstract_batch(B, P, K, T)
    batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=shd.batch_sharding(mesh, x.ndim, rules, B)), batch)
    start = time.perf_counter()
    compiled = trainer._compile_update(state, frozen, batch).lower(state, frozen, batch).compile()
    return _row(compiled, time.perf_counter() - start)


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gemma3-4b")
    parser.add_argument("--mesh", default="1,8,1", help="data,fsdp,tensor")
    parser.add_argument("--cases", default="f32,bf16-remat,bf16-lora",
                        help="f32 (float32, no remat), bf16-remat (bf16 parameters and compute, "
                             "remat block), bf16-lora (the same with rank-16 q/v adapters)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--what", default="update,sample")
    args = parser.parse_args()
    mesh = shd.make_mesh(tuple(int(s) for s in args.mesh.split(",")))
    rules = shd.ShardingRules()
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
            lm, params = sharded_params(config, mesh, rules)
            base = {"model": model, "case": case, "mesh": args.mesh, "devices": mesh.size,
                    "backend": jax.default_backend(), "prompts": B, "prompt_len": P,
                    "samples": K, "new_tokens": T, "dtype": config.dtype,
                    "param_dtype": config.param_dtype, "remat": config.remat,
                    "lora": None if lora is None else dataclasses.asdict(lora)}
            with jax.set_mesh(mesh):
                if "update" in args.what:
                    print(json.dumps({**base, "program": "vbon_update", **update_memory(
                        lm, params, mesh, rules, lora=lora, B=B, P=P, K=K, T=T)}), flush=True)
                if "sample" in args.what and case != "bf16-lora":
                    print(json.dumps({**base, "program": "sample", **sampling_memory(
                        lm, params, mesh, rules, B=B, P=P, N=K, T=T)}), flush=True)


if __name__ == "__main__":
    main()
