"""Benchmark: where one training step's time goes, stage by stage, against its arithmetic.

    python -m experiments.bench_step_stages                       # Gemma-3-270M, cpu_demo shapes
    python -m experiments.bench_step_stages --model tiny-gpt2 --methods vbon

For each method, a real policy and reward (the experiment's components) run three training steps at
the shapes of an experiment config (the first compiles, the second is the first after an update,
whose outputs are new argument layouts; the third is timed). The rollout runs op by op with each
piece of its context timed as it is called (policy/anchor/reference sampling, teacher-forced
scoring, the reward); what ``collect`` spends outside them (the ECDF, the advantages, Python) is
``host_s``; each update epoch is timed on its own. Each stage's FLOPs are counted from the model's
shapes (``forward_flops``): the weight matmuls ``2 x params`` per token, the unembedding ``2 D V``
per position whose logits are used, attention ``4 L H_q S`` per token for S attended keys; an update
epoch is one forward and, over the trained blocks and the unembedding, a backward of twice the
forward. The reward's own FLOPs (the MiniLM classifier) are not counted. One JSON line per method
with each stage's seconds, GFLOP and fraction of the machine's f32 matmul peak measured in the same
run (``bench_sampling.matmul_peak_gflops``), the compile time, and ``fraction_of_matmul_peak`` of
the whole warm step; with a bfloat16 compute dtype also ``fraction_of_compute_dtype_peak``, against
the rate of a bfloat16 matmul with float32 results measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np

from bonjax import objectives as obj
from bonjax.data.imdb import imdb_prompts
from bonjax.experiment.components import load_policy, load_reward, prompt_batch
from bonjax.training import OptimizerConfig, Trainer, method_for, reference_store
from experiments import configs
from experiments.bench_sampling import matmul_peak_gflops

METHODS = {
    "vbon": lambda K: method_for(obj.VBoNConfig(n=16), samples_per_prompt=K),
    "kl_rl": lambda K: method_for(obj.KLRLConfig(beta=0.05), samples_per_prompt=K),
    "vbon_ppo": lambda K: method_for(obj.VBoNConfig(n=16), "ppo", samples_per_prompt=K),
    "bonbon": lambda K: method_for(obj.BoNBoNConfig(n=8)),
    "bond": lambda K: method_for(obj.BONDConfig(n=4), samples_per_prompt=K),
}


def forward_flops(params, config, tokens: int, logit_positions: int, keys: float) -> float:
    """FLOPs of a forward pass over ``tokens`` tokens attending to ``keys`` keys on average,
    with the unembedding computed at ``logit_positions`` positions."""
    block = sum(x.size for path, x in jax.tree_util.tree_leaves_with_path(params)
                if getattr(path[0], "key", None) == "blocks" and x.ndim >= 2)
    q_width = config.num_heads * config.head_dim
    per_token = 2 * block + 4 * config.num_layers * q_width * keys
    return per_token * tokens + 2 * config.d_model * config.vocab_size * logit_positions


def trained_fraction(params, config, train_top: int | None) -> float:
    """Share of the forward's weight FLOPs in the trained blocks (the backward's share)."""
    if train_top is None:
        return 1.0
    return train_top / config.num_layers


class Stages:
    """Seconds per stage name, each call blocked until its outputs are ready."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)

    def timed(self, name, fn):
        def run(*args, **kwargs):
            start = time.perf_counter()
            out = jax.block_until_ready(fn(*args, **kwargs))
            self.seconds[name] += time.perf_counter() - start
            self.calls[name] += 1
            return out
        return run


@dataclasses.dataclass
class _TimedSampler:
    sampler: object
    stages: Stages

    def sample(self, params, *args):
        return self.stages.timed("sample", self.sampler.sample)(params, *args)

    def __getattr__(self, name):
        return getattr(self.sampler, name)


def run_method(name: str, lm, params, reward, tokens_BxP, mask_BxP, ref_rewards, config,
               peak_gflops: float, compute_peak_gflops: float) -> dict:
    t = config.train
    K, B, T = int(t.samples_per_prompt), tokens_BxP.shape[0], int(config.max_new_tokens)
    train_top = int(t.train_top) or None
    trainer = Trainer(lm, params, METHODS[name](K), reward, max_new_tokens=T,
                      optimizer=OptimizerConfig(epochs=int(t.epochs), train_top=train_top),
                      ref_rewards=ref_rewards, jit_collect=False)
    stages = Stages()
    ctx = trainer.context
    object.__setattr__(trainer, "context", dataclasses.replace(
        ctx, sampler=_TimedSampler(ctx.sampler, stages), score=stages.timed("score", ctx.score),
        reward=stages.timed("reward", ctx.reward)))
    state = trainer.init_state(jax.random.key(0))
    index_B = jnp.arange(B)
    rows = []
    for step in range(3):  # compiles; first step after an update (new argument layouts); warm
        stages.seconds.clear()
        start = time.perf_counter()
        batch, _ = trainer.collect(state, tokens_BxP, mask_BxP, index_B, jax.random.key(step))
        collect_s = time.perf_counter() - start
        epochs_s = []
        for _ in range(int(t.epochs)):
            start = time.perf_counter()
            state, metrics = trainer.update(state, batch)
            jax.block_until_ready(metrics)
            epochs_s.append(time.perf_counter() - start)
        rows.append((dict(stages.seconds), collect_s, epochs_s, batch))
    (cold, cold_collect, cold_epochs, _), _, (warm, collect_s, epochs_s, batch) = rows
    S = batch.tokens_BxSxT.shape[1]
    P = tokens_BxP.shape[1]
    keys = P + T / 2
    completions = int(np.asarray(batch.mask_BxSxT).sum())
    scored = B * P + B * S * T
    fwd = forward_flops(params, lm.config, scored, B * S * T, keys)
    share = trained_fraction(params, lm.config, train_top)
    unembed = 2 * lm.config.d_model * lm.config.vocab_size * B * S * T
    epoch_flops = fwd + 2 * (share * (fwd - unembed) + unembed)
    # sampling: prefill of the prompts plus T decode steps for every sampled row
    sampled_rows = {"vbon": K, "kl_rl": K, "vbon_ppo": K, "bonbon": 8, "bond": 4 + K}[name]
    sample_flops = forward_flops(params, lm.config, B * P + B * sampled_rows * T,
                                 B * sampled_rows * T, keys)
    score_calls = max(1, stages.calls["score"] // 2)
    score_flops = forward_flops(params, lm.config, B * P + B * K * T, B * K * T, keys) * (
        score_calls)
    gflop = {"sample": sample_flops / 1e9, "score": score_flops / 1e9,
             "update_epoch": epoch_flops / 1e9}
    out = {"method": name, "model": config.model, "compute_dtype": config.compute_dtype,
           "prompts": B, "prompt_len": P,
           "samples_per_prompt": K, "new_tokens": T, "epochs": int(t.epochs),
           "train_top": train_top, "completion_tokens": completions,
           "matmul_peak_gflops": round(peak_gflops, 1), "stages": {}}
    for stage in ("sample", "score", "reward"):
        if stage in warm:
            row = {"s": round(warm[stage], 3)}
            if stage in gflop:
                row["gflop"] = round(gflop[stage], 1)
                row["fraction_of_peak"] = round(gflop[stage] / warm[stage] / peak_gflops, 3)
            out["stages"][stage] = row
    out["stages"]["host"] = {"s": round(collect_s - sum(warm.values()), 3)}
    epoch_s = float(np.median(epochs_s))
    out["stages"]["update_epoch"] = {"s": round(epoch_s, 3), "gflop": round(
        gflop["update_epoch"], 1), "fraction_of_peak": round(
        gflop["update_epoch"] / epoch_s / peak_gflops, 3)}
    step_s = collect_s + sum(epochs_s)
    step_gflop = sum(v.get("gflop", 0.0) for v in out["stages"].values()) + gflop[
        "update_epoch"] * (int(t.epochs) - 1)
    out.update(step_s=round(step_s, 2), step_gflop=round(step_gflop, 1),
               compile_s=round(cold_collect + sum(cold_epochs) - step_s, 1),
               fraction_of_matmul_peak=round(step_gflop / step_s / peak_gflops, 3),
               compute_dtype_matmul_peak_gflops=round(compute_peak_gflops, 1),
               fraction_of_compute_dtype_peak=round(step_gflop / step_s / compute_peak_gflops, 3))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="cpu_demo", help="experiment config for the shapes")
    parser.add_argument("--model", default=None, help="override config.model")
    parser.add_argument("--methods", default="vbon,kl_rl,bonbon,bond")
    parser.add_argument("--compute_dtype", default=None,
                        help="override config.compute_dtype (float32, bfloat16)")
    args = parser.parse_args()
    config = configs.get(args.config)
    if args.model:
        config.model = args.model
    lm, params, tokenizer = load_policy(config.model)
    if args.compute_dtype:
        config.compute_dtype = args.compute_dtype
    if config.compute_dtype != "float32":
        lm, params = lm.with_dtypes(params, dtype=config.compute_dtype)
    reward, _ = load_reward(config.reward, tokenizer, fallback=config.reward_fallback,
                            max_length=int(config.reward_max_length))
    B = int(config.train.prompts_per_step)
    prompts = imdb_prompts(tokenizer, "train", B, min_tokens=int(config.data.min_tokens),
                           max_tokens=int(config.data.max_tokens))
    tokens_BxP, mask_BxP = prompt_batch(prompts, tokenizer, lm.pad_id)
    rng = np.random.default_rng(0)
    ref_rewards = reference_store(rng.normal(size=(B, int(config.reference.samples))).astype(
        np.float32))
    peak = matmul_peak_gflops()
    # The rate of the step's own matmuls: bfloat16 operands with float32 results, as
    # models/matmul.einsum runs them (on CPUs with bfloat16 matrix units, above the f32 rate).
    compute_peak = peak if config.compute_dtype == "float32" else matmul_peak_gflops(
        dtype=jnp.dtype(config.compute_dtype), accumulate=jnp.float32)
    for name in args.methods.split(","):
        row = run_method(name, lm, params, reward, jnp.asarray(tokens_BxP), jnp.asarray(mask_BxP),
                         ref_rewards, config, peak, compute_peak)
        row["matmul_peak_gflops_after"] = round(matmul_peak_gflops(), 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
