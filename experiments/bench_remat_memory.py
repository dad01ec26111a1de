"""Benchmark: compiled memory of a vBoN training update with and without rematerialisation.

Run from the repository root:

    python -m experiments.bench_remat_memory                          # GPT-2 124M, Gemma-3-270M
    python -m experiments.bench_remat_memory --models gpt2 --remat none,block

For each model, compute dtype (``float32``; ``bfloat16`` with float32 parameters) and remat
policy (``none``, ``block``, ``dots``; see ``bonjax.models.remat``), the trainer's jitted vBoN
update (``Trainer._compile_update``: the clipped policy-gradient loss on ``completion_logprobs``,
its gradient and the AdamW step) is lowered against parameter and batch shapes only (no weights
are materialised) and compiled for the default backend, with the options the trainer compiles
it with. One JSON line per case from XLA's ``memory_analysis()``: ``temp_bytes`` (the
activations the backward pass keeps, the logits and the other temporaries), ``peak_bytes =
arguments + outputs + temporaries - aliased`` (the donated state aliases the new one), and
``temp_ratio_vs_none``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp

from bonjax import objectives as obj
from bonjax.models import DecoderLM, Gemma3Config, GPT2Config
from bonjax.training import OptimizerConfig, Trainer, method_for
from bonjax.training.algorithms import PolicyGradientBatch
from bonjax.training.state import TrainState, split_trainable

CONFIGS = {"gpt2": ("gpt2-124m", GPT2Config.gpt2_124m),
           "gemma": ("gemma-3-270m", Gemma3Config.gemma3_270m),
           "tiny": ("gpt2-tiny", GPT2Config.tiny)}  # a quick check that the script runs


def _unused_reward(prompt_tokens_BxP, prompt_mask_BxP, tokens_BxSxT, mask_BxSxT):
    raise AssertionError("the update does not call the reward")


def abstract_batch(B: int, P: int, K: int, T: int) -> PolicyGradientBatch:
    """The shapes of a collected vBoN batch: B prompts of P tokens, K completions of T tokens."""
    def s(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype)

    return PolicyGradientBatch(
        prompt_tokens_BxP=s((B, P), jnp.int32), prompt_mask_BxP=s((B, P), jnp.bool_),
        tokens_BxSxT=s((B, K, T), jnp.int32), mask_BxSxT=s((B, K, T), jnp.bool_),
        logp_old_BxSxT=s((B, K, T), jnp.float32), logp_ref_BxSxT=s((B, K, T), jnp.float32),
        advantage_BxS=s((B, K), jnp.float32))


def compiled_update_memory(model: str, dtype: str, remat: str, B: int, P: int, K: int,
                           T: int) -> dict:
    name, make_config = CONFIGS[model]
    config = dataclasses.replace(make_config(), dtype=dtype, remat=remat)
    lm, abstract_params = DecoderLM.abstract(config)
    trainer = Trainer(lm, abstract_params, method_for(obj.VBoNConfig(n=8), samples_per_prompt=K),
                      _unused_reward, max_new_tokens=T, optimizer=OptimizerConfig(epochs=1))
    params, frozen = split_trainable(abstract_params, lambda path: True)
    state = jax.eval_shape(
        lambda p, f: TrainState.create(p, f, trainer.tx, jax.random.key(0)), params, frozen)
    state = state.replace(frozen=None)
    batch = abstract_batch(B, P, K, T)
    start = time.perf_counter()
    compiled = trainer._compile_update(state, frozen, batch).lower(state, frozen, batch).compile()
    compile_s = time.perf_counter() - start
    m = compiled.memory_analysis()
    peak = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes)
    return {"model": name, "dtype": dtype, "param_dtype": config.param_dtype, "remat": remat,
            "prompts": B, "prompt_len": P, "samples": K, "new_tokens": T,
            "temp_bytes": int(m.temp_size_in_bytes), "peak_bytes": int(peak),
            "argument_bytes": int(m.argument_size_in_bytes),
            "output_bytes": int(m.output_size_in_bytes),
            "alias_bytes": int(m.alias_size_in_bytes),
            "backend": jax.default_backend(), "compile_s": round(compile_s, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gpt2,gemma")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--remat", default="none,block,dots")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=24)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=40)
    args = parser.parse_args()
    shape = (args.prompts, args.prompt_len, args.samples, args.new_tokens)
    for model in args.models.split(","):
        for dtype in args.dtypes.split(","):
            none_temp = None
            for remat in args.remat.split(","):
                row = compiled_update_memory(model, dtype, remat, *shape)
                if remat == "none":
                    none_temp = row["temp_bytes"]
                if none_temp:
                    row["temp_ratio_vs_none"] = round(row["temp_bytes"] / none_temp, 3)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
