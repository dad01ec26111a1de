"""Gradient-step throughput of each objective against a plain LM step on the same batch.

    python experiments/bench_train_step.py [--model gpt2|tiny] [--prompts 8] [--new_tokens 40]

For every method a batch is collected once (sampling, rewards and reference log-probs are not
timed: they are the rollout, not the step); then the method's jitted update and a plain
next-token cross-entropy update (``-sum_t log pi(y_t)`` over the same completions, same
optimiser, same scorer) are timed alternately in the same run. One JSON line per objective:

    objective, tok_s, plain_tok_s, overhead = plain_tok_s / tok_s - 1

The extra forward passes an objective needs by definition (reference or anchor log-probs, and
for the PPO variants ``vbon_ppo`` / ``kl_rl_ppo`` the value head's ``V_old``) are part of the
rollout, so the update itself needs none: its overhead is the objective's own arithmetic on top
of one policy forward and backward pass over the batch (for PPO: the value head on the final
hidden states and the value loss).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from bonjax import objectives as obj
from bonjax.models import DecoderLM, GPT2Config
from bonjax.objectives import sft_loss
from bonjax.rewards.synthetic import token_residue_reward
from bonjax.sampling.scorer import completion_logprobs
from bonjax.training import OptimizerConfig, Trainer, method_for, reference_store
from bonjax.training.state import merge_params
from bonjax.training.update import apply_updates, trainable_tree


def _methods(samples: int):
    return {
        "vbon": method_for(obj.VBoNConfig(n=8), samples_per_prompt=samples),
        "kl_rl": method_for(obj.KLRLConfig(beta=0.05), samples_per_prompt=samples),
        "vbon_ppo": method_for(obj.VBoNConfig(n=8), "ppo", samples_per_prompt=samples),
        "kl_rl_ppo": method_for(obj.KLRLConfig(beta=0.05), "ppo", samples_per_prompt=samples),
        "bonbon": method_for(obj.BoNBoNConfig(n=8)),
        "dpo": method_for(obj.DPOConfig(beta=0.1), n=8),
        "bond": method_for(obj.BONDConfig(n=4), samples_per_prompt=samples),
        "jbond": method_for(obj.JBONDConfig()),
    }


def _plain_update(trainer: Trainer):
    def loss(trainable, frozen, batch):
        logp = completion_logprobs(trainer.lm, merge_params(trainable, frozen),
                                   batch.prompt_tokens_BxP, batch.prompt_mask_BxP,
                                   batch.tokens_BxSxT, batch.mask_BxSxT).logp_BxNxT
        T = logp.shape[-1]
        return sft_loss(logp.reshape(-1, T), batch.mask_BxSxT.reshape(-1, T)).mean()

    def update(state, batch):
        value, grads = jax.value_and_grad(loss)(state.params, state.frozen, batch)
        # The optimiser's tree: extras (a value head) get no gradient from the plain loss.
        grads = {**jax.tree.map(jnp.zeros_like, trainable_tree(state)), "params": grads}
        state, metrics = apply_updates(state, grads, trainer.tx, value)
        return state, {"loss": value, **metrics}

    return jax.jit(update, donate_argnums=0)


def _time(fn, state, batch, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = fn(state, batch)
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - start)
    return state, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["gpt2", "tiny"], default="gpt2")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--new_tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--objectives",
                        default="vbon,kl_rl,vbon_ppo,kl_rl_ppo,bonbon,dpo,bond,jbond")
    args = parser.parse_args()

    config = GPT2Config.gpt2_124m() if args.model == "gpt2" else GPT2Config.tiny()
    lm, params = DecoderLM.init(config, jax.random.key(0))
    rng = np.random.default_rng(0)
    prompt_tokens = jnp.asarray(rng.integers(0, config.vocab_size, (args.prompts, 8)), jnp.int32)
    prompt_mask = jnp.ones(prompt_tokens.shape, jnp.bool_)
    ref_rewards = reference_store(rng.normal(size=(args.prompts, 64)).astype(np.float32))
    for name, method in _methods(args.samples).items():
        if name not in args.objectives.split(","):
            continue
        trainer = Trainer(lm, params, method, token_residue_reward, max_new_tokens=args.new_tokens,
                          optimizer=OptimizerConfig(epochs=1), ref_rewards=ref_rewards)
        state = trainer.init_state(jax.random.key(1))
        batch, _ = trainer.collect(state, prompt_tokens, prompt_mask,
                                   jnp.arange(args.prompts), jax.random.key(2))
        plain = _plain_update(trainer)
        state, _ = _time(trainer.update, state, batch, 1)  # compile
        state, _ = _time(plain, state, batch, 1)
        step_s, plain_s = [], []
        for _ in range(args.repeats):
            state, t = _time(trainer.update, state, batch, 1)
            step_s.append(t)
            state, t = _time(plain, state, batch, 1)
            plain_s.append(t)
        tokens = int(np.prod(batch.tokens_BxSxT.shape)) + int(
            np.prod(batch.prompt_tokens_BxP.shape))
        tok_s = tokens / statistics.median(step_s)
        plain_tok_s = tokens / statistics.median(plain_s)
        print(json.dumps({"objective": name, "model": args.model,
                          "sequences": int(np.prod(batch.tokens_BxSxT.shape[:2])),
                          "tokens": tokens, "tok_s": round(tok_s, 1),
                          "plain_tok_s": round(plain_tok_s, 1),
                          "overhead": round(plain_tok_s / tok_s - 1, 4)}), flush=True)


if __name__ == "__main__":
    main()
