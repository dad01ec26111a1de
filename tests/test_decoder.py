"""The decoder interface: cached decode, shared prefixes, left padding and sharding.

Every test runs on every architecture (GPT-2, GPT-NeoX, Gemma 2, Gemma 3 and the Llama-style
families, tiny random configs; the windows of 4 of the Gemmas and Mistral make the sliding layers
matter at these lengths).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _torch_reference import left_padded_batch

from bonjax import sharding as shd
from bonjax.models import (
    DecoderLM,
    Gemma2Config,
    Gemma3Config,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    ModelOutput,
    positions_from_mask,
)
from bonjax.sampling import prefill

# Of the Llama-style families, Llama (untied, biases, llama3 RoPE) and Mistral (sliding window);
# Qwen 2 and 3 differ from them in options that a cached decode runs the same way (biases, q/k
# norms) and are checked against transformers in tests/test_llama.py.
CONFIGS = {"gpt2": GPT2Config.tiny(), "gemma3": Gemma3Config.tiny(),
           "gpt_neox": GPTNeoXConfig.tiny(), "gemma2": Gemma2Config.tiny(),
           "llama": LlamaConfig.tiny("llama"), "mistral": LlamaConfig.tiny("mistral")}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def model(request):
    return DecoderLM.init(CONFIGS[request.param], jax.random.key(7))


def _full_logits(lm, params, tokens, mask):
    tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)
    return np.asarray(lm.forward(params, tokens, positions_from_mask(mask), mask).logits_BxTxV)


def test_cached_decode_equals_full_forward(model):
    """Prefill a left-padded batch, then decode one token at a time: logits equal the full pass."""
    lm, params = model
    tokens, mask = left_padded_batch([9, 4, 6], lm.vocab_size, lm.pad_id, seed=1)
    P, steps = 5, tokens.shape[1] - 5
    expected = _full_logits(lm, params, tokens, mask)
    step = jax.jit(lm.forward)
    cache = lm.init_cache(tokens.shape[0], tokens.shape[1])
    positions = np.asarray(positions_from_mask(jnp.asarray(mask)))
    out = step(params, tokens[:, :P], positions[:, :P], mask[:, :P], cache)
    got = [np.asarray(out.logits_BxTxV)]
    for t in range(P, P + steps):
        out = step(params, tokens[:, t:t + 1], positions[:, t:t + 1], mask[:, t:t + 1],
                   out.cache)
        got.append(np.asarray(out.logits_BxTxV))
    cache = out.cache
    got = np.concatenate(got, axis=1)
    np.testing.assert_allclose(got[mask], expected[mask], atol=1e-5, rtol=0)
    assert int(cache.length) == tokens.shape[1]


def test_shared_prefix_equals_replicated_prompts(model):
    """n rows reading one prompt's cache as a prefix equal n full passes over prompt + suffix."""
    lm, params = model
    n = 3
    prompts, prompt_mask = left_padded_batch([7, 3], lm.vocab_size, lm.pad_id, seed=2)
    b, P = prompts.shape
    rng = np.random.default_rng(3)
    suffix = rng.integers(3, lm.vocab_size, (b * n, 4)).astype(np.int32)
    prefix = lm.init_cache(b, P)
    prefix = lm.forward(params, jnp.asarray(prompts),
                        positions_from_mask(jnp.asarray(prompt_mask)),
                        jnp.asarray(prompt_mask), prefix).cache
    lengths = prompt_mask.sum(1).repeat(n)
    suffix_positions = lengths[:, None] + np.arange(suffix.shape[1])[None]
    own = lm.init_cache(b * n, suffix.shape[1])
    logits = lm.forward(params, jnp.asarray(suffix), jnp.asarray(suffix_positions),
                        jnp.ones(suffix.shape, bool), own, prefix).logits_BxTxV
    full_tokens = np.concatenate([prompts.repeat(n, 0), suffix], axis=1)
    full_mask = np.concatenate([prompt_mask.repeat(n, 0), np.ones(suffix.shape, bool)], axis=1)
    expected = _full_logits(lm, params, full_tokens, full_mask)[:, P:]
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-5, rtol=0)


def test_last_only_and_prefill_are_the_last_position_of_the_full_pass(model):
    """One output type for every call: ``last_only`` keeps the full pass's last position (logits
    and hidden states), and ``prefill`` is such a call into a cache of the prompts."""
    lm, params = model
    tokens, mask = left_padded_batch([6, 3, 5], lm.vocab_size, lm.pad_id, seed=6)
    tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)
    positions = positions_from_mask(mask)
    full = lm.forward(params, tokens, positions, mask)
    last = lm.forward(params, tokens, positions, mask, last_only=True)
    assert isinstance(full, ModelOutput) and isinstance(last, ModelOutput)
    assert full.cache is None and full.hidden_BxTxD.shape == (*tokens.shape, lm.config.d_model)
    assert last.logits_BxTxV.shape == (tokens.shape[0], 1, lm.vocab_size)
    np.testing.assert_allclose(last.logits_BxTxV, full.logits_BxTxV[:, -1:], atol=1e-5, rtol=0)
    np.testing.assert_allclose(last.hidden_BxTxD, full.hidden_BxTxD[:, -1:], atol=1e-5, rtol=0)
    first = prefill(lm, params, tokens, mask)
    np.testing.assert_allclose(first.logits_BxV, full.logits_BxTxV[:, -1], atol=1e-5, rtol=0)
    np.testing.assert_allclose(first.hidden_BxD, full.hidden_BxTxD[:, -1], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(first.length_B, mask.sum(-1))
    assert int(first.cache.length) == tokens.shape[1]


def test_left_padded_batch_equals_each_prompt_alone(model):
    lm, params = model
    tokens, mask = left_padded_batch([8, 2, 5], lm.vocab_size, lm.pad_id, seed=4)
    batched = _full_logits(lm, params, tokens, mask)
    for i in range(tokens.shape[0]):
        row = tokens[i][mask[i]][None]
        alone = _full_logits(lm, params, row, np.ones_like(row, bool))
        np.testing.assert_allclose(batched[i][mask[i]], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (2, 2, 2), (1, 2, 4)])
def test_sharded_equals_unsharded(model, mesh_shape):
    """Sharded initialisation and forward on 8 fake CPU devices equal the single-device run."""
    lm, params = model
    mesh = shd.make_mesh(mesh_shape)
    rules = shd.ShardingRules()
    _, sharded = DecoderLM.init(lm.config, jax.random.key(7), mesh=mesh, rules=rules)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(sharded), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    shardings = shd.param_shardings(sharded, mesh, rules)
    assert jax.tree.leaves(sharded)[0].sharding == jax.tree.leaves(shardings)[0]
    if mesh_shape[2] > 1:  # tensor-parallel meshes really split some parameter
        assert any(not leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(sharded))
    tokens, mask = left_padded_batch([9, 4, 6, 2, 7, 8, 1, 5], lm.vocab_size, lm.pad_id, seed=5)
    expected = _full_logits(lm, params, tokens, mask)
    batch = shd.batch_sharding(mesh, 2, rules, batch_size=tokens.shape[0])
    fwd = jax.jit(lambda p, t, m: lm.forward(p, t, positions_from_mask(m), m).logits_BxTxV,
                  in_shardings=(shardings, batch, batch), out_shardings=batch)
    with jax.set_mesh(mesh):
        got = fwd(sharded, jax.device_put(tokens, batch), jax.device_put(mask, batch))
    np.testing.assert_allclose(np.asarray(got)[mask], expected[mask], atol=1e-5, rtol=0)


def test_bad_inputs_raise(model):
    lm, params = model
    ctx = lm.config.max_positions
    too_long = jnp.ones((1, ctx + 1), jnp.int32)
    with pytest.raises(ValueError, match="context"):
        lm.forward(params, too_long, positions_from_mask(too_long), too_long > 0)
    with pytest.raises(ValueError, match="context"):
        lm.init_cache(1, ctx + 1)
    with pytest.raises(ValueError, match="shape"):
        lm.forward(params, jnp.ones((2, 3), jnp.int32), jnp.ones((2, 4), jnp.int32),
                   jnp.ones((2, 3), bool))
    with pytest.raises(ValueError, match="batch"):
        lm.init_cache(0, 4)


def test_top_blocks_filter_selects_the_top_blocks_and_the_final_norm(model):
    """The model, not the trainer, knows which parameters are "the top k blocks"."""
    from flax import nnx

    lm, params = model
    paths = [tuple(getattr(k, "key", k) for k in p) for p, _ in nnx.to_flat_state(params)]
    top = lm.top_blocks_filter(1)
    chosen = {p for p in paths if top(p)}
    last = lm.config.num_layers - 1
    assert chosen == {p for p in paths if (p[0] == "blocks" and int(p[1]) == last)
                      or p[0] == lm.config.final_norm_name}
    assert any(p[0] == lm.config.final_norm_name for p in chosen)
    assert all(lm.top_blocks_filter(None)(p) for p in paths)
    with pytest.raises(ValueError, match=r"train_top must be in \[1, "):
        lm.top_blocks_filter(lm.config.num_layers + 1)


def test_param_names_every_axis_and_known_inits():
    from flax import nnx

    from bonjax.models.params import param

    rngs = nnx.Rngs(0)
    assert param(rngs, (2, 3), ("embed", "mlp"), jnp.float32, "ones").value.sum() == 6
    with pytest.raises(ValueError, match="do not name every dimension"):
        param(rngs, (2, 3), ("embed",), jnp.float32)
    with pytest.raises(ValueError, match="init must be one of"):
        param(rngs, (2,), ("embed",), jnp.float32, "uniform")
