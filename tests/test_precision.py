"""The bfloat16 dtype policy against float32 on the same weights: logits, sampled-token
log-probabilities and one vBoN training step, within the budgets of ``bonjax.precision``. (That
the bfloat16 sampler draws from its own model's distribution is tested in test_sampler.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _torch_reference import left_padded_batch

from bonjax import objectives as obj
from bonjax import precision
from bonjax.models import (
    DecoderLM,
    Gemma2Config,
    Gemma3Config,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
)
from bonjax.models.llama import LLAMA_MODEL_TYPES
from bonjax.rewards.synthetic import token_residue_reward
from bonjax.sampling import Sampler, Temperature
from bonjax.training import OptimizerConfig, Trainer, method_for, reference_store

# Every decoder family, each with the options that set it apart (LlamaConfig.tiny).
CONFIGS = {"gpt2": GPT2Config.tiny(), "gemma": Gemma3Config.tiny(), "gemma2": Gemma2Config.tiny(),
           "gpt_neox": GPTNeoXConfig.tiny(),
           **{name: LlamaConfig.tiny(name) for name in LLAMA_MODEL_TYPES}}


def _models(name):
    lm, params = DecoderLM.init(CONFIGS[name], jax.random.key(0))
    params = jax.tree.map(lambda x: 4.0 * x, params)  # peaked distributions, larger logits
    return (lm, params), lm.with_dtypes(params, dtype="bfloat16")


def _prompts(lm, lengths=(3, 9, 6, 12), seed=0):
    tokens, mask = left_padded_batch(lengths, lm.vocab_size, lm.pad_id, seed)
    return jnp.asarray(tokens), jnp.asarray(mask)


def test_with_dtypes_sets_the_policy_and_keeps_float32_outputs():
    (lm, params), (lm16, params16) = _models("gemma")
    assert lm16.config.dtype == "bfloat16" and lm16.config.param_dtype == "float32"
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params16))
    lm_b, params_b = lm.with_dtypes(params, dtype="bfloat16", param_dtype="bfloat16")
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params_b))
    assert lm_b.init_cache(2, 4).k[0].dtype == jnp.bfloat16
    back, _ = lm_b.with_dtypes(params_b, dtype="float32", param_dtype="float32")
    assert back.config == lm.config


def test_the_budgets_need_float32_master_weights():
    (lm, params), _ = _models("gpt2")
    lm_b, params_b = lm.with_dtypes(params, dtype="bfloat16", param_dtype="bfloat16")
    tokens, mask = _prompts(lm)
    with pytest.raises(ValueError, match=r"params must be the float32 master weights .* got "
                                         r"dtypes \['bfloat16'\]"):
        precision.logit_errors(lm_b, params_b, lm_b, params_b, tokens, mask)
    with pytest.raises(ValueError, match="trainable must be the float32 master weights"):
        precision.gradient_agreement(None, None, params_b, {}, None)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16"])
def test_bfloat16_logits_and_logprobs_within_budget(name, param_dtype):
    (lm, params), _ = _models(name)
    lm16, params16 = lm.with_dtypes(params, dtype="bfloat16", param_dtype=param_dtype)
    tokens, mask = _prompts(lm)
    err = precision.logit_errors(lm, params, lm16, params16, tokens, mask)
    assert err["logits_max_abs_err"] <= err["logits_err_budget"], err
    assert err["logits_max_abs_err"] > 0  # the policy is really in effect
    out = Sampler(lm, Temperature(1.0), max_new_tokens=8).sample(params, tokens, mask,
                                                                 jax.random.key(1), 4)
    lp = precision.logprob_errors(lm, params, lm16, params16, tokens, mask, out.tokens_BxNxT,
                                  out.mask_BxNxT)
    # A log-probability is a logit minus a logsumexp of logits: twice the logit budget.
    assert lp["logp_max_abs_err"] <= 2 * err["logits_err_budget"], lp


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_one_vbon_step_in_bfloat16_follows_float32(name):
    """Same batch, same float32 master weights: the bfloat16 gradient points the same way.

    Budget (``precision.gradient_error_budget``): 8u(L + 1), or four times the gradient change
    one bfloat16 rounding of the weights causes in float32 where that is larger, so that a model
    whose sharp attention amplifies every rounding (Llama, Qwen 3 at these weights) is judged on
    its own scale. The losses are
    not compared: the policy-gradient surrogate is 0 at the reference (its baseline-subtracted
    advantages times a ratio of 1), so its relative error is meaningless; its gradient is what
    the step uses."""
    (lm, params), (lm16, _) = _models(name)
    agree = precision.vbon_step_agreement(lm, lm16, params, *_prompts(lm))
    budget = agree["grad_err_budget"]
    assert agree["grad_weight_rounding_err"] > 0 and agree["grad_rel_err"] > 0, agree
    assert agree["grad_rel_err"] <= budget, agree
    assert agree["grad_cosine"] >= 1 - budget**2 / 2, agree
    refs = reference_store(np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32))
    trainer16 = Trainer(lm16, params, method_for(obj.VBoNConfig(n=4), samples_per_prompt=4),
                        token_residue_reward, max_new_tokens=8, ref_rewards=refs,
                        optimizer=OptimizerConfig(epochs=1))
    state16, metrics = trainer16.step(trainer16.init_state(jax.random.key(2)), *_prompts(lm))
    assert np.isfinite(float(metrics["loss"]))  # a bf16 step keeps float32 master weights
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state16.params))

