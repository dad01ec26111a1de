"""The scan sampler on tiny models: frequencies, EOS, padding, keys, caches, sharding, errors.

Statistical checks: chi-square goodness of fit of the sampled token counts against the
model's (truncated, tempered) next-token distribution from a plain full forward pass, rejecting
at a 1e-6 tail (bins with expected count < 5 pooled): a false-alarm rate of 1e-6 per check.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bonjax import sharding as shd
from bonjax.models import (
    DecoderLM,
    Gemma2Config,
    Gemma3Config,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    positions_from_mask,
)
from bonjax.models.llama import LLAMA_MODEL_TYPES
from bonjax.sampling import Greedy, Sampler, Temperature, TopK, TopP, completion_logprobs
from bonjax.sampling import sampler as sampler_module

FALSE_ALARM = 1e-6


def _sharpened(cfg, scale):
    """A tiny random model with weights scaled up, so next-token distributions are peaked."""
    lm, params = DecoderLM.init(cfg, jax.random.key(0))
    return lm, jax.tree.map(lambda x: x * scale, params)


# Each test model by name, with the scale of its weights.
MODELS = {"gpt2": (GPT2Config.tiny(), 4.0), "gemma": (Gemma3Config.tiny(), 8.0),
          "gemma2": (Gemma2Config.tiny(), 16.0), "gpt_neox": (GPTNeoXConfig.tiny(), 4.0),
          **{t: (LlamaConfig.tiny(t), 4.0) for t in LLAMA_MODEL_TYPES}}


@pytest.fixture(scope="module")
def models():
    """``models(name)``: the sharpened tiny model of that name, built once per module."""
    built = {}

    def get(name):
        if name not in built:
            built[name] = _sharpened(*MODELS[name])
        return built[name]

    return get


@pytest.fixture(scope="module")
def gpt2(models):
    return models("gpt2")


@pytest.fixture(scope="module")
def gemma(models):
    return models("gemma")


def _prompts(lengths, lm, seed=0):
    rng = np.random.default_rng(seed)
    P = max(lengths)
    tokens = np.full((len(lengths), P), lm.pad_id, np.int32)
    mask = np.zeros((len(lengths), P), bool)
    for i, n in enumerate(lengths):
        tokens[i, P - n:] = rng.integers(3, lm.vocab_size, n)
        mask[i, P - n:] = True
    return tokens, mask


def _next_token_logp(lm, params, tokens_1xS, temperature):
    """Log-softmax of the last position's logits / temperature, by a full forward pass."""
    tokens = jnp.asarray(tokens_1xS)
    mask = jnp.ones(tokens.shape, bool)
    logits = lm.forward(params, tokens, positions_from_mask(mask), mask).logits_BxTxV
    z = np.asarray(logits[0, -1], np.float64) / temperature
    return z - z.max() - np.log(np.exp(z - z.max()).sum())


def _truncate(logp_V, method):
    probs = np.exp(logp_V)
    if isinstance(method, TopK):
        keep = np.zeros(len(probs), bool)
        keep[np.argsort(-probs, kind="stable")[:method.k]] = True
    elif isinstance(method, TopP):
        keep = np.array([probs[probs > q].sum() for q in probs]) < method.p
    else:
        keep = np.ones(len(probs), bool)
    probs = np.where(keep, probs, 0.0)
    return probs / probs.sum()


def _chi_square_pvalue(tokens, probs_V):
    counts = np.bincount(tokens, minlength=len(probs_V)).astype(np.float64)
    expected = probs_V * len(tokens)
    assert counts[expected == 0].sum() == 0, "a token outside the kept set was sampled"
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return stats.chi2.sf(((obs - exp) ** 2 / exp).sum(), df=len(obs) - 1)


@pytest.mark.parametrize("method", [Temperature(1.0), Temperature(0.7), TopK(5, 0.9),
                                    TopP(0.6, 1.2)], ids=str)
def test_next_token_frequencies_match_the_model(gpt2, method):
    """Token 0 (from the prefill) of two left-padded prompts, and token 1 (from a decode step
    through the shared prompt cache) given the most frequent token 0 of prompt 0."""
    _check_frequencies(*gpt2, method)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_bfloat16_sampler_draws_from_the_bfloat16_model(model, models):
    """The same check under the bfloat16 policy (bonjax.precision): the sampler draws from the
    bfloat16 model's own next-token distribution, prefill and cached decode step alike."""
    lm, params = models(model)
    _check_frequencies(*lm.with_dtypes(params, dtype="bfloat16"), Temperature(1.0))


def _check_frequencies(lm, params, method):
    n = 20_000
    tokens, mask = _prompts([3, 6], lm)
    out = Sampler(lm, method, max_new_tokens=2).sample(params, tokens, mask, jax.random.key(1), n)
    sampled = np.asarray(out.tokens_BxNxT)
    for b in range(2):
        prompt = tokens[b][mask[b]][None]
        probs = _truncate(_next_token_logp(lm, params, prompt, method.temperature), method)
        p = _chi_square_pvalue(sampled[b, :, 0], probs)
        assert p > FALSE_ALARM, f"token 0 of prompt {b}: chi-square p-value {p:.3g}"
    first = np.bincount(sampled[0, :, 0]).argmax()
    rows = sampled[0, :, 0] == first
    assert rows.sum() > 1000
    context = np.append(tokens[0][mask[0]], first)[None]
    probs = _truncate(_next_token_logp(lm, params, context, method.temperature), method)
    p = _chi_square_pvalue(sampled[0, rows, 1], probs)
    assert p > FALSE_ALARM, f"token 1 given token 0 = {first}: chi-square p-value {p:.3g}"


def _with_eos(lm, eos_id, pad_id):
    return dataclasses.replace(lm, config=dataclasses.replace(lm.config, eos_id=eos_id,
                                                              pad_id=pad_id))


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_eos_masks_and_pads_the_rest(gpt2, pad_is_eos):
    """EOS is set to the model's most frequent sampled token, so many rows stop early."""
    lm, params = gpt2
    tokens, mask = _prompts([4, 2], lm, seed=1)
    key, n, T = jax.random.key(3), 64, 8
    free = Sampler(lm, Temperature(1.0), max_new_tokens=T).sample(params, tokens, mask, key, n)
    free_tokens = np.asarray(free.tokens_BxNxT)
    eos = int(np.bincount(free_tokens.ravel()).argmax())
    pad = eos if pad_is_eos else (eos + 1) % lm.vocab_size
    lm_eos = _with_eos(lm, eos, pad)
    out = Sampler(lm_eos, Temperature(1.0), max_new_tokens=T).sample(params, tokens, mask, key,
                                                                     n)
    toks, logp, m = (np.asarray(x) for x in (out.tokens_BxNxT, out.logp_BxNxT, out.mask_BxNxT))
    is_eos = toks == eos
    has_eos = is_eos.any(-1)
    first = np.where(has_eos, is_eos.argmax(-1), T)
    assert 0.2 < has_eos.mean() < 1.0 and (first < T - 1).any() and (first == 0).any()
    np.testing.assert_array_equal(m, np.arange(T) <= first[..., None])
    # EOS only masks: where both runs are unmasked (the first run stops at the model's own
    # EOS id), the samples are those of the run with another EOS id.
    both = m & np.asarray(free.mask_BxNxT)
    np.testing.assert_array_equal(toks[both], free_tokens[both])
    np.testing.assert_allclose(logp[both], np.asarray(free.logp_BxNxT)[both], atol=1e-5)
    assert (toks[~m] == pad).all() and (logp[~m] == 0).all()
    assert (logp[m] < 0).all()
    scored = completion_logprobs(lm_eos, params, tokens, mask, out.tokens_BxNxT,
                                 out.mask_BxNxT).logp_BxNxT
    np.testing.assert_allclose(scored, logp, atol=2e-5)


@pytest.mark.parametrize("model", ["gpt2", "gemma"])
def test_greedy_continuation_in_a_mixed_batch_equals_alone(model, models):
    """Left-padded prompts of lengths 1, 9 and 5 (Gemma's window is 4): each row's greedy
    continuation equals that prompt's greedy continuation alone, without padding."""
    lm, params = models(model)
    tokens, mask = _prompts([1, 9, 5], lm, seed=2)
    sampler = Sampler(lm, Greedy(), max_new_tokens=6)
    batch = np.asarray(sampler.sample(params, tokens, mask, jax.random.key(0), 2).tokens_BxNxT)
    assert (batch[:, 0] == batch[:, 1]).all()
    assert len({tuple(r) for r in batch[:, 0]}) == 3
    for b in range(3):
        alone = tokens[b][mask[b]][None]
        single = sampler.sample(params, alone, np.ones_like(alone, bool), jax.random.key(0), 1)
        np.testing.assert_array_equal(batch[b, 0], np.asarray(single.tokens_BxNxT)[0, 0])


def test_a_rows_samples_do_not_depend_on_the_other_rows(gpt2):
    """Same key: prompt 0's samples are the same next to a short or a long prompt (its left
    padding changes from 0 to 7 slots)."""
    lm, params = gpt2
    base, _ = _prompts([3, 2, 10], lm, seed=4)
    sampler = Sampler(lm, Temperature(1.0), max_new_tokens=8)
    outs = []
    for other in (1, 2):
        tokens, mask = _prompts([3, [2, 10][other - 1]], lm, seed=4)
        tokens[0, -3:] = base[0, -3:]
        outs.append(sampler.sample(params, tokens, mask, jax.random.key(9), 4))
    np.testing.assert_array_equal(outs[0].tokens_BxNxT[0], outs[1].tokens_BxNxT[0])
    np.testing.assert_allclose(outs[0].logp_BxNxT[0], outs[1].logp_BxNxT[0], atol=1e-5)


def test_determinism_per_key(gemma):
    lm, params = gemma
    tokens, mask = _prompts([3, 5], lm)
    sampler = Sampler(lm, Temperature(1.5), max_new_tokens=6)
    a, b, c = (sampler.sample(params, tokens, mask, jax.random.key(k), 8) for k in (1, 1, 2))
    np.testing.assert_array_equal(a.tokens_BxNxT, b.tokens_BxNxT)
    np.testing.assert_array_equal(a.logp_BxNxT, b.logp_BxNxT)
    assert (np.asarray(a.tokens_BxNxT) != np.asarray(c.tokens_BxNxT)).mean() > 0.3
    # Different samples of one prompt differ: the N rows do not share randomness.
    assert len({tuple(r) for r in np.asarray(a.tokens_BxNxT)[0]}) > 4


@pytest.mark.parametrize("model, temperature", [
    ("gpt2", 1.0), ("gpt2", 0.8), ("gemma", 1.0), ("gemma", 0.8),
    *((t, 0.8) for t in LLAMA_MODEL_TYPES)])
def test_sampler_logprobs_equal_the_scorer(model, temperature, models):
    """Cached decode through the shared prompt cache == teacher-forced scoring (which
    tests/test_scorer.py checks against a full forward pass), on every decoder family."""
    lm, params = models(model)
    tokens, mask = _prompts([2, 7, 4], lm, seed=5)
    out = Sampler(lm, Temperature(temperature), max_new_tokens=10).sample(
        params, tokens, mask, jax.random.key(4), 3)
    scored = jax.jit(completion_logprobs, static_argnums=(0, 6))(
        lm, params, tokens, mask, out.tokens_BxNxT, out.mask_BxNxT, temperature)
    np.testing.assert_allclose(scored.logp_BxNxT, out.logp_BxNxT, atol=2e-5)


def test_shared_prompt_cache_equals_replicated_prompts(gemma):
    lm, params = gemma
    tokens, mask = _prompts([6, 3], lm, seed=6)
    key = jax.random.key(5)
    shared = Sampler(lm, Temperature(1.0), max_new_tokens=7).sample(params, tokens, mask, key, 3)
    copied = Sampler(lm, Temperature(1.0), max_new_tokens=7, share_prompt=False).sample(
        params, tokens, mask, key, 3)
    np.testing.assert_array_equal(shared.tokens_BxNxT, copied.tokens_BxNxT)
    np.testing.assert_allclose(shared.logp_BxNxT, copied.logp_BxNxT, atol=1e-5)


def test_init_state_and_donated_decode_equal_sample(gemma):
    lm, params = gemma
    tokens, mask = _prompts([6, 3], lm, seed=6)
    key = jax.random.key(5)
    sampler = Sampler(lm, Temperature(1.0), max_new_tokens=7)
    state = sampler.init_state(params, tokens, mask, key, 3)
    assert int(state.step) == 1 and state.prefix.max_len == tokens.shape[1]
    final = sampler.decode(params, state)
    assert state.cache.k[0].is_deleted(), "decode did not donate the state"
    assert int(final.step) == 7
    expected = sampler.sample(params, tokens, mask, key, 3)
    result = sampler.result(final, 3)
    np.testing.assert_array_equal(result.tokens_BxNxT, expected.tokens_BxNxT)
    np.testing.assert_array_equal(result.mask_BxNxT, expected.mask_BxNxT)


def test_one_new_token(gpt2):
    lm, params = gpt2
    tokens, mask = _prompts([3, 1], lm)
    out = Sampler(lm, Temperature(1.0), max_new_tokens=1).sample(params, tokens, mask,
                                                                 jax.random.key(0), 2)
    assert out.tokens_BxNxT.shape == (2, 2, 1)
    scored = completion_logprobs(lm, params, tokens, mask, out.tokens_BxNxT,
                                 out.mask_BxNxT).logp_BxNxT
    np.testing.assert_allclose(scored, out.logp_BxNxT, atol=2e-5)


def test_data_parallel_gives_the_same_tokens(gpt2):
    """Eight fake devices on the data axis: identical tokens (random bits do not depend on the
    sharding) and log-probabilities."""
    lm, params = gpt2
    tokens, mask = _prompts([2, 5, 3, 1, 4, 6, 2, 3], lm, seed=7)
    key = jax.random.key(6)
    single = Sampler(lm, Temperature(1.0), max_new_tokens=6).sample(params, tokens, mask, key, 2)
    mesh = shd.make_mesh((8, 1, 1))
    sharded_sampler = Sampler(lm, Temperature(1.0), max_new_tokens=6, mesh=mesh)
    data = shd.batch_sharding(mesh, 2, batch_size=8)
    out = sharded_sampler.sample(shd.shard_params(params, mesh), jax.device_put(tokens, data),
                                 jax.device_put(mask, data), key, 2)
    assert len(out.tokens_BxNxT.sharding.device_set) == 8
    np.testing.assert_array_equal(out.tokens_BxNxT, single.tokens_BxNxT)
    np.testing.assert_allclose(out.logp_BxNxT, single.logp_BxNxT, atol=1e-6)


TENSOR_TOL = 1e-5  # sharded contractions change the summation order of float32 sums


@pytest.mark.parametrize("model", ["gpt2", "gemma"])
def test_tensor_parallel_log_probabilities_agree(model, models):
    """Parameters sharded over a tensor axis of 4 (heads, MLP) and an FSDP axis of 2."""
    lm, params = models(model)
    tokens, mask = _prompts([2, 5], lm, seed=8)
    key = jax.random.key(7)
    single = Sampler(lm, Temperature(1.0), max_new_tokens=6).sample(params, tokens, mask, key, 2)
    mesh = shd.make_mesh((1, 2, 4))
    sharded = shd.shard_params(params, mesh)
    assert any(len(leaf.sharding.device_set) == 8 and not leaf.sharding.is_fully_replicated
               for leaf in jax.tree.leaves(sharded))
    out = Sampler(lm, Temperature(1.0), max_new_tokens=6, mesh=mesh).sample(
        sharded, tokens, mask, key, 2)
    rescored = completion_logprobs(lm, sharded, tokens, mask, single.tokens_BxNxT,
                                   single.mask_BxNxT).logp_BxNxT
    np.testing.assert_allclose(rescored, single.logp_BxNxT, atol=TENSOR_TOL)
    np.testing.assert_array_equal(out.tokens_BxNxT, single.tokens_BxNxT)
    np.testing.assert_allclose(out.logp_BxNxT, single.logp_BxNxT, atol=TENSOR_TOL)


def test_bad_input_raises_before_compiling(gpt2):
    lm, params = gpt2
    tokens, mask = _prompts([2, 3], lm)
    sampler = Sampler(lm, Temperature(1.0), max_new_tokens=4)
    before = sampler_module._sample_jit._cache_size()
    key = jax.random.key(0)
    cases = [
        (lambda: sampler.sample(params, tokens, mask, key, 0), "n must be an integer >= 1, got 0"),
        (lambda: sampler.sample(params, tokens, mask, key, -2), "got -2"),
        (lambda: sampler.sample(params, tokens, mask, key, 2.0), "got 2.0"),
        (lambda: sampler.sample(params, tokens[:, :0], mask[:, :0], key, 2), "P = 0"),
        (lambda: sampler.sample(params, tokens, mask & np.array([[False], [True]]), key, 2),
         r"rows \[0\] have no real token"),
        (lambda: sampler.sample(params, tokens[:, ::-1], mask[:, ::-1], key, 2),
         r"rows \[0\] are not left-padded"),
        (lambda: sampler.sample(params, np.full((2, 62), 5), np.ones((2, 62), bool), key, 2),
         "62 \\+ 4 new tokens = 66 exceeds the model's context of 64"),
        (lambda: sampler.sample(params, tokens + 200, mask, key, 2), "outside the vocabulary"),
        (lambda: sampler.sample(params, tokens[0], mask[0], key, 2), r"\[batch, length\]"),
        (lambda: Sampler(lm, Temperature(1.0), max_new_tokens=0), "max_new_tokens .* got 0"),
        (lambda: Sampler(lm, Temperature(1.0), max_new_tokens=64), "context of 64"),
        (lambda: Sampler(lm, TopK(98)), "k=98 exceeds the vocabulary size 97"),
        (lambda: Sampler(lm, Temperature(0.0)), "temperature .* got 0.0"),
        (lambda: Sampler(lm, TopP(1.2)), "p=1.2"),
        (lambda: Sampler(lm, TopK(-1)), "k=-1"),
        (lambda: Sampler(lm, cache_block=0), "cache_block must be an integer >= 1 or None"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message):
            make()
    assert sampler_module._sample_jit._cache_size() == before


@pytest.mark.parametrize("model", ["gpt2", "gemma"])
def test_cache_grown_in_blocks_equals_one_cache_of_all_slots(model, models):
    """Blocks of 3 and 8 slots, and 1 (enlarged to 2: at most 8 blocks), give the tokens and
    log-probabilities of a cache allocated whole (Gemma's window is 4: its local layers mask
    early blocks' slots), for mixed-length left-padded prompts and T = 11 (blocks that do not
    divide T - 1 = 10)."""
    lm, params = models(model)
    tokens, mask = _prompts([5, 1, 3], lm, seed=4)
    key = jax.random.key(9)
    whole = Sampler(lm, Temperature(1.0), max_new_tokens=11, cache_block=None).sample(
        params, tokens, mask, key, 4)
    for block in (1, 3, 8):
        got = Sampler(lm, Temperature(1.0), max_new_tokens=11, cache_block=block).sample(
            params, tokens, mask, key, 4)
        np.testing.assert_array_equal(got.tokens_BxNxT, whole.tokens_BxNxT)
        np.testing.assert_array_equal(got.mask_BxNxT, whole.mask_BxNxT)
        np.testing.assert_allclose(got.logp_BxNxT, whole.logp_BxNxT, atol=1e-5)
