"""The GPU check: equivalence on the new backend, then sampling and training measured.

    bash experiments/device_check.sh            # on a GPU machine (no network needed)
    bash experiments/device_check.sh --cpu      # dry run of every section on CPU, small models

Prints one JSON line per measurement (and appends it to ``<out>/device_check.jsonl``):

1. ``env``: jax / flax / optax / orbax / transformers / torch versions and the device.
2. ``anchors``: the device's copy bandwidth (``2 x 1 GiB / t`` of ``x * 2``) and its bf16 and
   f32 matmul rates (8192^3 on a GPU), measured in this run.
3. ``vs_transformers``: full-size GPT-2 124M and Gemma-3-270M (random weights, made by
   transformers and saved as safetensors) in float32 against transformers on the same device.
4. ``precision``: the bfloat16 policy against float32 (``bonjax.precision``): logits,
   sampled-token log-probabilities, one vBoN gradient.
5. ``train``: the vBoN update (bf16 compute, float32 master weights, every parameter trained)
   in tokens/s and model-FLOPs utilisation against the measured bf16 matmul rate and the
   card's nominal dense bf16 peak.
6. ``sampling``: bonjax ``Sampler.sample`` against transformers ``generate`` (same weights,
   bfloat16 both, same device), tokens/s and the fraction of the HBM roofline (the bytes a
   decode step must read: bf16 parameters + the KV cache, at the measured copy bandwidth;
   ``..._with_logits`` also counts the float32 logits the step writes and reads back).
7. ``tests``: the equivalence tests that matter on a new backend, run by pytest on the device
   (models vs transformers, cached decode vs full forward, scorer vs forward, sampler
   statistics, bfloat16 vs float32).

Every section runs even if an earlier one fails (its traceback is printed as an ``error`` line);
the tests run last, in what is left of ``--budget-s``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import bench_sampling as bench

NOMINAL_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}
"""Dense bf16 tensor-core peaks from the vendors' data sheets (SXM parts)."""

TESTS = ["tests/test_gpt2.py", "tests/test_gemma3.py", "tests/test_decoder.py",
         "tests/test_scorer.py", "tests/test_sampler.py", "tests/test_precision.py"]
TEST_FILTER = "not sharded and not parallel"  # one device: no meshes of 8


class Report:
    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "device_check.jsonl"

    def __call__(self, section: str, **row):
        line = json.dumps({"section": section, **row})
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


# ----------------------------------------------------------------------------- sections


def env(report, args):
    import importlib.metadata as md

    versions = {}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "transformers",
                 "torch", "numpy"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    device = jax.devices()[0]
    report("env", backend=jax.default_backend(), device=device.device_kind,
           devices=len(jax.devices()), python=sys.version.split()[0], **versions)


def tests(report, args):
    env_vars = {**os.environ, "HF_HUB_OFFLINE": "1",
                "JAX_PLATFORMS": "cpu" if args.cpu else ""}
    start = time.perf_counter()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", TEST_FILTER,
               *TESTS]
    try:
        proc = subprocess.run(command, env=env_vars, capture_output=True, text=True,
                              timeout=args.tests_timeout)
        stdout, returncode = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as e:  # report what finished
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        returncode = None
    progress = "".join(ln for ln in stdout.splitlines() if set(ln.split(" [")[0]) <= set(".FEsx"))
    failures = [ln for ln in stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    report("tests", returncode=returncode, timed_out=returncode is None,
           passed=progress.count("."), failed=progress.count("F") + progress.count("E"),
           summary=stdout.strip().splitlines()[-1] if stdout.strip() else "",
           failures=failures[:20], seconds=round(time.perf_counter() - start, 1))
    if returncode:
        print(stdout[-6000:], file=sys.stderr, flush=True)


def anchors(report, args) -> dict:
    size = 2048 if args.cpu else 8192
    rates = {dtype: bench.matmul_peak_gflops(size, 10, dtype) / 1e3
             for dtype in ("bfloat16", "float32")}
    bandwidth = bench.hbm_bandwidth_gbs(24 if args.cpu else 28)
    kind = jax.devices()[0].device_kind
    nominal = next((v for k, v in NOMINAL_BF16_TFLOPS.items() if k in kind), None)
    row = {"matmul_size": size, "bf16_matmul_tflops": round(rates["bfloat16"], 1),
           "f32_matmul_tflops": round(rates["float32"], 1), "copy_gbs": round(bandwidth, 1),
           "nominal_bf16_tflops": nominal}
    report("anchors", **row)
    return row


def _make_models(workdir: Path, cpu: bool) -> dict:
    """GPT-2 124M and Gemma-3-270M with random weights (small stand-ins with ``cpu``), made by
    transformers and saved as float32 safetensors: ``{name: (directory, torch model)}``."""
    import torch
    import transformers

    torch.manual_seed(0)
    if cpu:
        gpt2 = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000,
                                       bos_token_id=0, eos_token_id=0, pad_token_id=0)
        gemma = dict(vocab_size=2048, hidden_size=64, intermediate_size=128,
                     num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
                     head_dim=16, layer_types=["sliding_attention"] * 2 + ["full_attention"])
    else:
        gpt2 = transformers.GPT2Config()
        gemma = dict(vocab_size=262144, hidden_size=640, intermediate_size=2048,
                     num_hidden_layers=18, num_attention_heads=4, num_key_value_heads=1,
                     head_dim=256, layer_types=(["sliding_attention"] * 5 + ["full_attention"])
                     * 3)
    gemma_cfg = transformers.Gemma3TextConfig(
        **gemma, sliding_window=512, query_pre_attn_scalar=256, max_position_embeddings=32768,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "default", "rope_theta": 1e6}},
        bos_token_id=2, eos_token_id=1, pad_token_id=0)
    models = {"gpt2-124m": transformers.GPT2LMHeadModel(gpt2),
              "gemma-3-270m": transformers.Gemma3ForCausalLM(gemma_cfg)}
    out = {}
    for name, model in models.items():
        with torch.no_grad():  # Gemma's norm scales start at 0 (x * (1 + w)): make them count
            for pname, p in model.named_parameters():
                if p.ndim == 1 and "norm" in pname:
                    p.copy_(0.1 * torch.randn(p.shape))
        model.eval().save_pretrained(workdir / name, safe_serialization=True)
        out[name] = (workdir / name, model)
    return out


def _prompts(lm, batch: int, length: int, seed: int = 0):
    """Random left-padded prompts of lengths ``length // 2 .. length``."""
    rng = np.random.default_rng(seed)
    tokens = np.full((batch, length), lm.pad_id, np.int32)
    mask = np.zeros((batch, length), bool)
    for i in range(batch):
        n = int(rng.integers(length // 2, length + 1))
        tokens[i, length - n:] = rng.integers(3, min(lm.vocab_size, 30_000), n)
        mask[i, length - n:] = True
    return jnp.asarray(tokens), jnp.asarray(mask)


def _torch_device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def vs_transformers(report, args, models):
    import torch

    from bonjax.models import positions_from_mask
    from bonjax.models.weights import load_hf_decoder

    torch.backends.cuda.matmul.allow_tf32 = False
    device = _torch_device()
    for name, (path, reference) in models.items():
        lm, params = load_hf_decoder(path)
        tokens, mask = _prompts(lm, 4, 48, seed=1)
        positions = positions_from_mask(mask)
        with jax.default_matmul_precision("highest"):
            logits = jax.jit(lm.forward)(params, tokens, positions, mask).logits_BxTxV
        reference.to(device=device, dtype=torch.float32)
        with torch.no_grad():
            expected = reference(
                input_ids=torch.tensor(np.asarray(tokens), dtype=torch.long, device=device),
                attention_mask=torch.tensor(np.asarray(mask), dtype=torch.long, device=device),
                position_ids=torch.tensor(np.asarray(positions), dtype=torch.long,
                                          device=device)).logits.float().cpu().numpy()
        reference.to("cpu")
        real = np.asarray(mask)
        err = np.abs(np.asarray(logits) - expected)[real]
        report("vs_transformers", model=name, dtype="float32", logits_max_abs_err=float(err.max()),
               logits_rms=float(np.sqrt(np.mean(expected[real] ** 2))), tolerance=1e-3)


def precision_section(report, args, models):
    from bonjax import precision
    from bonjax.models.weights import load_hf_decoder
    from bonjax.sampling import Sampler, Temperature

    for name, (path, _) in models.items():
        lm, params = load_hf_decoder(path)
        for param_dtype in ("float32", "bfloat16"):
            lm16, params16 = lm.with_dtypes(params, dtype="bfloat16", param_dtype=param_dtype)
            tokens, mask = _prompts(lm, 8, 64, seed=2)
            with jax.default_matmul_precision("highest"):
                err = precision.logit_errors(lm, params, lm16, params16, tokens, mask)
                out = Sampler(lm, Temperature(1.0), max_new_tokens=24).sample(
                    params, tokens, mask, jax.random.key(1), 4)
                lp = precision.logprob_errors(lm, params, lm16, params16, tokens, mask,
                                              out.tokens_BxNxT, out.mask_BxNxT)
            report("precision", model=name, what="logits+logprobs", param_dtype=param_dtype,
                   **err, **lp, within_budget=err["logits_max_abs_err"]
                   <= err["logits_err_budget"])
        tokens, mask = _prompts(lm, 4, 32, seed=3)
        with jax.default_matmul_precision("highest"):
            agree = precision.vbon_step_agreement(lm, lm16, params, tokens, mask,
                                                  max_new_tokens=24)
        report("precision", model=name, what="vbon_gradient", **agree,
               within_budget=agree["grad_rel_err"] <= agree["grad_err_budget"])


def sampling(report, args, models, anchor):
    import torch

    from bonjax.models.weights import load_hf_decoder

    cases = [tuple(map(int, c.split("x"))) for c in args.cases.split(",")]
    if args.cpu:
        cases = [(2, 4), (4, 8)]
    for name, (path, reference) in models.items():
        lm, params = load_hf_decoder(path, dtype="bfloat16", param_dtype="bfloat16")
        reference.to(device=_torch_device(), dtype=torch.bfloat16)
        for B, n in cases:
            report("sampling", model=name, dtype="bfloat16",
                   **_sampling_case(lm, params, reference, B, n, args, anchor))
        reference.to("cpu")


def _sampling_case(lm, params, reference, B: int, n: int, args, anchor) -> dict:
    """bonjax and ``generate`` on ``B`` prompts x ``n`` samples, repeats interleaved."""
    import torch

    from bonjax.sampling import Sampler, Temperature

    device = _torch_device()
    T, P = (40, 24) if not args.cpu else (8, 8)
    tokens, mask = _prompts(lm, B, P, seed=4)
    sampler = Sampler(lm, Temperature(1.0), max_new_tokens=T)
    start = time.perf_counter()
    out = jax.block_until_ready(sampler.sample(params, tokens, mask, jax.random.key(0), n))
    compile_s = time.perf_counter() - start
    assert np.isfinite(np.asarray(out.logp_BxNxT)).all()
    ids = torch.tensor(np.asarray(tokens), dtype=torch.long, device=device)
    att = torch.tensor(np.asarray(mask), dtype=torch.long, device=device)

    def generate(seed, new_tokens=T):
        torch.manual_seed(seed)
        with torch.inference_mode():
            seqs = reference.generate(
                input_ids=ids, attention_mask=att, do_sample=True, top_k=0, top_p=1.0,
                temperature=1.0, num_return_sequences=n, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, pad_token_id=lm.pad_id)
        if device == "cuda":
            torch.cuda.synchronize()
        return seqs

    generate(0, new_tokens=2)  # warm-up
    ours, theirs = [], []
    for r in range(args.repeats):
        ours.append(bench.timed(lambda r=r: sampler.sample(params, tokens, mask,
                                                      jax.random.key(r + 1), n)))
        start = time.perf_counter()
        generate(r)
        theirs.append(time.perf_counter() - start)
    generated = B * n * T
    tok_s = generated / min(ours)
    step_s = bench.decode_step_bytes(lm, params, B, P, n, T) / (anchor["copy_gbs"] * 1e9)
    # The float32 logits a decode step writes and its sampling reads back: outside the roofline
    # above, and at a large batch over Gemma's 262k-word vocabulary larger than the weights.
    logits_bytes = B * n * lm.vocab_size * 4
    with_logits_s = step_s + 2 * logits_bytes / (anchor["copy_gbs"] * 1e9)
    return {"prompts": B, "n": n, "new_tokens": T, "prompt_slots": P,
            "bonjax_tok_s": round(tok_s, 1), "reference_tok_s": round(generated / min(theirs), 1),
            "ratio": round(min(theirs) / min(ours), 2), "roofline_tok_s": round(B * n / step_s, 1),
            "hbm_roofline_fraction": round(tok_s * step_s / (B * n), 3),
            "logits_bytes_per_step": logits_bytes,
            "hbm_roofline_fraction_with_logits": round(tok_s * with_logits_s / (B * n), 3),
            "bonjax_times_s": [round(t, 4) for t in ours],
            "reference_times_s": [round(t, 4) for t in theirs],
            "bonjax_compile_s": round(compile_s, 1)}


def _train_flops(lm, tokens: int, attended: float) -> float:
    """Model FLOPs of one forward + backward over ``tokens`` tokens: 6 x matmul parameters
    (the unembedding included) per token, plus attention 12 x (query width) x keys per layer."""
    cfg = lm.config
    per_layer, q_width, _ = bench.matmul_widths(cfg)
    matmul = cfg.num_layers * per_layer + cfg.vocab_size * cfg.d_model
    return 6 * matmul * tokens + 12 * cfg.num_layers * q_width * attended * tokens


def train(report, args, models, anchor):
    from bonjax import objectives as obj
    from bonjax.models.weights import load_hf_decoder
    from bonjax.rewards.synthetic import token_residue_reward
    from bonjax.training import OptimizerConfig, Trainer, method_for, reference_store

    shapes = {"gpt2-124m": (32, 8), "gemma-3-270m": (16, 4)} if not args.cpu else {}
    T, P = (40, 24) if not args.cpu else (8, 8)
    for name, (path, _) in models.items():
        B, S = shapes.get(name, (2, 2))
        lm, params = load_hf_decoder(path, dtype="bfloat16")  # float32 master weights
        refs = reference_store(np.random.default_rng(0).normal(size=(B, 64)).astype(np.float32))
        trainer = Trainer(lm, params, method_for(obj.VBoNConfig(n=8), samples_per_prompt=S),
                          token_residue_reward, max_new_tokens=T, ref_rewards=refs,
                          optimizer=OptimizerConfig(epochs=1))
        state = trainer.init_state(jax.random.key(1))
        tokens, mask = _prompts(lm, B, P, seed=5)
        batch, _ = trainer.collect(state, tokens, mask, jnp.arange(B), jax.random.key(2))
        start = time.perf_counter()
        state, metrics = trainer.update(state, batch)
        jax.block_until_ready(metrics["loss"])
        compile_s = time.perf_counter() - start
        times = []
        for _ in range(args.repeats + 2):
            start = time.perf_counter()
            state, metrics = trainer.update(state, batch)
            jax.block_until_ready(metrics["loss"])
            times.append(time.perf_counter() - start)
        step_s = statistics.median(times)
        # Teacher-forced tokens: the prompts once (shared prefix), then T - 1 fed per sample.
        n_tokens = B * P + B * S * (T - 1)
        flops = _train_flops(lm, n_tokens, attended=P + T / 2)
        achieved = flops / step_s / 1e12
        report("train", model=name, objective="vbon (RLOO)", dtype="bfloat16 compute, float32 "
               "params", prompts=B, samples=S, new_tokens=T, tokens=n_tokens,
               tok_s=round(n_tokens / step_s, 1), step_s=round(step_s, 4),
               model_tflops=round(achieved, 2),
               mfu_vs_measured_bf16_matmul=round(achieved / anchor["bf16_matmul_tflops"], 3),
               mfu_vs_nominal=round(achieved / anchor["nominal_bf16_tflops"], 3)
               if anchor["nominal_bf16_tflops"] else None,
               compile_s=round(compile_s, 1), times_s=[round(t, 4) for t in times])
        del state, trainer, params


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="dry run on CPU with small models")
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/device_check"))
    parser.add_argument("--sections", default="env,tests,anchors,vs_transformers,precision,"
                        "sampling,train")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default="8x8,8x32,64x16",
                        help="sampling cases, prompts x samples per prompt")
    parser.add_argument("--tests-timeout", type=int, default=240)
    parser.add_argument("--budget-s", type=float, default=450,
                        help="the tests run last, for at most what is left of this budget")
    args = parser.parse_args()
    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    report = Report(Path(args.out))
    wanted = args.sections.split(",")
    state: dict = {}

    def run(name, fn, *needs):
        if name not in wanted:
            return
        start = time.perf_counter()
        try:
            state[name] = fn(report, args, *(state[k] for k in needs))
        except Exception as e:  # noqa: BLE001 - every section runs; the failure is reported
            report("error", where=name, error=repr(e)[:500],
                   traceback=traceback.format_exc()[-3000:])
        report("timing", where=name, seconds=round(time.perf_counter() - start, 1))

    run("env", env)
    run("anchors", anchors)
    with tempfile.TemporaryDirectory() as workdir:
        state["models"] = _make_models(Path(workdir), args.cpu)
        if "anchors" not in state:
            state["anchors"] = {"copy_gbs": float("nan"), "bf16_matmul_tflops": float("nan"),
                                "nominal_bf16_tflops": None}
        run("vs_transformers", vs_transformers, "models")
        run("precision", precision_section, "models")
        run("train", train, "models", "anchors")
        run("sampling", sampling, "models", "anchors")
    # Last, in the time left: the suite compiles many small programs (over 200 s on an H100
    # machine with jax 0.11.2, where one program of a full-size model took 40-60 s to compile).
    args.tests_timeout = max(30, min(args.tests_timeout,
                                     int(args.budget_s - (time.perf_counter() - started))))
    run("tests", tests)


if __name__ == "__main__":
    main()
