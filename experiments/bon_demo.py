"""Best-of-N sampling of IMDB review openings with the shipped Gemma-3-270M.

    python experiments/bon_demo.py [--prompts 4] [--n 8] [--new_tokens 32]

Loads Gemma-3-270M (the GGUF shipped in a package), takes openings of held-out IMDB reviews,
samples N continuations of each with the scan sampler, scores them with the IMDB sentiment
reward (the trained MiniLM classifier when its artifact exists, else the VADER lexicon) and
prints every continuation with its reward, the best marked. Ends with one JSON summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

import bonjax
from bonjax import bon
from bonjax.data.imdb import imdb_prompts
from bonjax.rewards import load_sentiment_reward, vader_reward
from bonjax.sampling import Sampler, Temperature


def _reward(tokenizer):
    try:
        return load_sentiment_reward(policy_tokenizer=tokenizer), "minilm-imdb sentiment logit"
    except FileNotFoundError as missing:
        print(f"[bon_demo] {missing}\n[bon_demo] scoring with VADER instead", flush=True)
        return vader_reward(tokenizer), "VADER compound"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m", help="name, HF directory or .gguf")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--n", type=int, default=8, help="samples per prompt (N)")
    parser.add_argument("--new_tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    print(f"[bon_demo] loading {args.model} ...", flush=True)
    lm, params, tokenizer = bonjax.load_model(args.model)
    load_s = time.perf_counter() - start
    reward, reward_name = _reward(tokenizer)
    prompts = imdb_prompts(tokenizer, "test", args.prompts, seed=args.seed)
    adds_bos = tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    bos = [tokenizer.bos_token_id] if adds_bos else []  # as the tokenizer itself would
    prompts_with_bos = [tuple(bos) + ids for ids in prompts.token_ids]
    P = max(len(ids) for ids in prompts_with_bos)
    tokens = np.full((len(prompts_with_bos), P), lm.pad_id, np.int32)
    mask = np.zeros(tokens.shape, bool)
    for i, ids in enumerate(prompts_with_bos):
        tokens[i, P - len(ids):], mask[i, P - len(ids):] = ids, True

    sampler = Sampler(lm, Temperature(1.0), max_new_tokens=args.new_tokens)
    print(f"[bon_demo] sampling {args.n} continuations of {len(prompts)} review openings "
          f"({args.new_tokens} new tokens, compiling first) ...", flush=True)
    start = time.perf_counter()
    result = bon.best_of_n(sampler, params, tokens, mask, jax.random.key(args.seed), args.n,
                           reward)
    rewards = np.asarray(result.rewards_BxN)
    sample_s = time.perf_counter() - start
    completions = np.asarray(result.samples.tokens_BxNxT)
    completion_mask = np.asarray(result.samples.mask_BxNxT)
    for b, text in enumerate(prompts.texts):
        print(f"\n=== prompt {b}: {text!r} (review label: {'pos' if prompts.labels[b] else 'neg'})")
        for i in np.argsort(-rewards[b]):
            ids = completions[b, i][completion_mask[b, i]]
            tag = "BEST " if i == int(result.best_B[b]) else "     "
            continuation = tokenizer.decode(ids, skip_special_tokens=True)
            print(f"{tag}r={rewards[b, i]:+.3f}  {continuation!r}")
    print(json.dumps({
        "model": args.model, "reward": reward_name, "prompts": len(prompts), "n": args.n,
        "new_tokens": args.new_tokens, "mean_reward": float(rewards.mean()),
        "bon_reward": float(rewards.max(axis=1).mean()), "load_s": round(load_s, 1),
        "sample_and_score_s": round(sample_s, 1),
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE", "0")}))


if __name__ == "__main__":
    main()
