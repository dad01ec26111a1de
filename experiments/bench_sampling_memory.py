"""Benchmark: peak memory of Best-of-N sampling with a shared prompt cache vs replicated prompts.

Run from the repository root:

    python -m experiments.bench_sampling_memory                   # Gemma-3-270M and GPT-2 124M
    python -m experiments.bench_sampling_memory --models gpt2 --run --prompts 2

For ``B`` prompts of ``P`` tokens, ``N`` samples and ``T`` new tokens, the same sampler is
compiled twice: ``share_prompt=True`` (each prompt prefilled once into a ``P``-slot cache that
the ``N`` rows read as a shared prefix, plus ``T - 1`` own slots per row) and
``share_prompt=False`` (each prompt replicated ``N`` times, as ``generate(num_return_sequences=
N)`` does: ``B * N`` rows of ``P + T - 1`` slots, and ``N`` times the prefill compute). One JSON
line per model and mode from XLA's ``memory_analysis()`` of the compiled call (no weights are
needed: it compiles against parameter shapes): ``peak_bytes = arguments + outputs + temporaries
- aliased``, the KV-cache bytes implied by the layout, and ``ratio`` (replicated / shared).
With ``--run`` each mode also runs in a fresh subprocess on random weights and reports its peak
resident memory (``ru_maxrss``) and wall time.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

from bonjax.models import DecoderLM, Gemma3Config, GPT2Config
from bonjax.sampling import Sampler, Temperature

CONFIGS = {"gemma": ("gemma-3-270m", Gemma3Config.gemma3_270m),
           "gpt2": ("gpt2-124m", GPT2Config.gpt2_124m)}


def _inputs(B: int, P: int):
    tokens = jax.ShapeDtypeStruct((B, P), jnp.int32)
    mask = jax.ShapeDtypeStruct((B, P), jnp.bool_)
    key = jax.eval_shape(lambda: jax.random.key(0))
    return tokens, mask, key


def kv_cache_bytes(cfg, B: int, P: int, n: int, T: int, shared: bool) -> int:
    slot = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * jnp.dtype(cfg.dtype).itemsize
    slots = B * P + B * n * max(T - 1, 1) if shared else B * n * (P + T - 1)
    return slot * slots


def compiled_memory(model: str, B: int, P: int, n: int, T: int, shared: bool) -> dict:
    name, make_config = CONFIGS[model]
    lm, abstract_params = DecoderLM.abstract(make_config())
    sampler = Sampler(lm, Temperature(1.0), max_new_tokens=T, share_prompt=shared)
    start = time.perf_counter()
    compiled = sampler.lower(abstract_params, *_inputs(B, P), n).compile()
    compile_s = time.perf_counter() - start
    m = compiled.memory_analysis()
    peak = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes)
    return {"model": name, "prompts": B, "prompt_len": P, "n": n, "new_tokens": T,
            "prompt_cache": "shared" if shared else "replicated",
            "peak_bytes": int(peak), "argument_bytes": int(m.argument_size_in_bytes),
            "output_bytes": int(m.output_size_in_bytes), "temp_bytes": int(m.temp_size_in_bytes),
            "kv_cache_bytes": kv_cache_bytes(lm.config, B, P, n, T, shared),
            "compile_s": round(compile_s, 1)}


def run_once(model: str, B: int, P: int, n: int, T: int, shared: bool) -> dict:
    """Runs one mode on random weights in this process: peak RSS and wall time."""
    _, make_config = CONFIGS[model]
    lm, params = DecoderLM.init(make_config(), jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (B, P), 3, lm.vocab_size)
    mask = jnp.ones((B, P), bool)
    sampler = Sampler(lm, Temperature(1.0), max_new_tokens=T, share_prompt=shared)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    compiled = sampler.lower(params, tokens, mask, jax.random.key(2), n).compile()
    start = time.perf_counter()
    jax.block_until_ready(compiled(params, tokens, mask, jax.random.key(2)))
    wall = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_rss_bytes": rss, "rss_before_run_bytes": rss_before, "run_s": round(wall, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gemma,gpt2")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--run", action="store_true",
                        help="also run each mode in a subprocess and report its peak RSS")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "SHARED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = (args.prompts, args.prompt_len, args.n, args.new_tokens)
    if args.child:
        print(json.dumps(run_once(args.child[0], *shape, args.child[1] == "1")))
        return
    for model in args.models.split(","):
        rows = {shared: compiled_memory(model, *shape, shared) for shared in (True, False)}
        if args.run:
            for shared, row in rows.items():
                out = subprocess.run(
                    [sys.executable, "-m", "experiments.bench_sampling_memory", "--child", model,
                     "1" if shared else "0", "--prompts", str(args.prompts), "--prompt-len",
                     str(args.prompt_len), "--n", str(args.n), "--new-tokens",
                     str(args.new_tokens)], capture_output=True, text=True, check=True)
                row.update(json.loads(out.stdout.strip().splitlines()[-1]))
        for shared, row in rows.items():
            if not shared:
                for key in ("peak_bytes", "kv_cache_bytes", "peak_rss_bytes"):
                    if key in row:
                        row[f"{key}_ratio_vs_shared"] = round(row[key] / rows[True][key], 2)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
