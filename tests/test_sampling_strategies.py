"""Sampling methods on fixed logits: frequencies, truncation sets, log-probabilities, errors.

Statistical checks: a chi-square goodness-of-fit test of the empirical token counts against the
method's target distribution, rejecting at a 1e-6 tail (bins with expected count < 5 are pooled
into one). Each test has a false-alarm rate of 1e-6 (the draws are seeded, so a given version
of the code passes or fails deterministically).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bonjax.sampling import Greedy, Temperature, TopK, TopP
from bonjax.sampling.strategies import categorical_sample

FALSE_ALARM = 1e-6
# 1,300 logits: two full blocks of 512 and a partial block of 276, so both levels of the
# blockwise draw and the tail block are exercised.
V = 1300
DRAWS = 120_000
# lax.top_k costs ~0.2 ms per row of 1,300 logits on CPU (per-row overhead; 64 rows of 262,144
# logits take ~30 ms), so the top-p tests draw fewer samples.
TOP_P_DRAWS = 30_000


def _logits(seed=0, scale=2.0):
    return np.random.default_rng(seed).normal(size=V).astype(np.float32) * scale


def _draw(method, logits_V, draws=DRAWS, rows=30_000):
    """``draws`` independent draws (rows of one call share the logits, not the randomness)."""
    fn = jax.jit(lambda z, key: method.next_tokens(z, key))
    tokens, logps = [], []
    for i in range(draws // rows):
        z = jnp.broadcast_to(jnp.asarray(logits_V), (rows, V))
        t, lp = fn(z, jax.random.key(i))
        tokens.append(np.asarray(t))
        logps.append(np.asarray(lp))
    return np.concatenate(tokens), np.concatenate(logps)


def _chi_square_pvalue(tokens, probs_V):
    counts = np.bincount(tokens, minlength=len(probs_V)).astype(np.float64)
    expected = probs_V * len(tokens)
    assert counts[expected == 0].sum() == 0, "a token of probability 0 was drawn"
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    stat = ((obs - exp) ** 2 / exp).sum()
    return stats.chi2.sf(stat, df=len(obs) - 1)


def _log_softmax(z):
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def _check(method, logits_V, target_logp_V, draws=DRAWS):
    tokens, logp = _draw(method, logits_V, draws, rows=min(draws, 30_000))
    probs = np.exp(target_logp_V)
    p = _chi_square_pvalue(tokens, probs / probs.sum())
    assert p > FALSE_ALARM, f"{method}: chi-square p-value {p:.3g} <= {FALSE_ALARM}"
    np.testing.assert_allclose(logp, target_logp_V[tokens], atol=2e-5, rtol=0)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_temperature_frequencies_match_softmax(temperature):
    logits = _logits()
    _check(Temperature(temperature), logits, _log_softmax(logits / temperature))


def test_top_k_frequencies_match_truncated_softmax():
    logits = _logits(1)
    k, t = 7, 0.8
    keep = np.zeros(V, bool)
    keep[np.argsort(-logits)[:k]] = True
    target = np.where(keep, _log_softmax(np.where(keep, logits / t, -np.inf)), -np.inf)
    _check(TopK(k, t), logits, target)


def _nucleus(probs, p):
    """Tokens whose strictly more probable tokens have mass < p (brute force)."""
    above = np.array([probs[probs > q].sum() for q in probs])
    return above < p


@pytest.mark.parametrize("p, candidates", [(0.3, 128), (0.3, 1), (0.9, 128)])
def test_top_p_frequencies_match_nucleus(p, candidates):
    """(0.3, 128): the nucleus lies among the top-128 candidates; candidates=1 and (0.9, 128)
    (a nucleus of several hundred tokens) take the bisection path."""
    logits = _logits(2, scale=1.5)
    t = 1.3
    keep = _nucleus(np.exp(_log_softmax(logits / t)), p)
    assert 1 < keep.sum() < V
    assert (keep.sum() < candidates) == (p == 0.3 and candidates == 128)
    target = np.where(keep, _log_softmax(np.where(keep, logits / t, -np.inf)), -np.inf)
    _check(TopP(p, t, candidates=candidates), logits, target, draws=TOP_P_DRAWS)


@pytest.mark.parametrize("candidates", [2, 128])
def test_top_p_keeps_all_tokens_tied_at_the_boundary(candidates):
    logits = np.full(V, -4.0, np.float32)
    logits[[10, 600]] = 3.0
    logits[[5, 700, 1299, 40]] = 2.0  # the boundary falls inside this tied group
    probs = np.exp(_log_softmax(logits))
    p = probs[10] * 2 + probs[5] * 1.5
    keep = _nucleus(probs, p)
    assert keep.sum() == 6
    target = np.where(keep, _log_softmax(np.where(keep, logits, -np.inf)), -np.inf)
    _check(TopP(p, 1.0, candidates=candidates), logits, target, draws=TOP_P_DRAWS)


def test_top_p_one_is_plain_temperature():
    logits = _logits(3)
    z = jnp.broadcast_to(jnp.asarray(logits), (64, V))
    a = TopP(1.0, 0.7).next_tokens(z, jax.random.key(5))
    b = Temperature(0.7).next_tokens(z, jax.random.key(5))
    np.testing.assert_array_equal(a[0], b[0])


def test_zero_mass_blocks_and_minus_inf_are_never_drawn():
    """Only five tokens, spread over blocks (one in the tail block), have finite logits."""
    logits = np.full(V, -np.inf, np.float32)
    support = np.array([3, 511, 512, 1100, 1299])
    logits[support] = [0.0, 1.0, -0.5, 2.0, 0.3]
    _check(Temperature(1.0), logits, _log_softmax(logits))


def test_large_vocabulary_draw():
    """Gemma's 262,144 logits: 512 blocks; frequencies of a peaked distribution."""
    rng = np.random.default_rng(4)
    logits = np.full(262_144, -30.0, np.float32)
    hot = rng.choice(262_144, 40, replace=False)
    logits[hot] = rng.normal(size=40) * 2
    z = jnp.broadcast_to(jnp.asarray(logits), (4_000, 262_144))
    fn = jax.jit(Temperature(1.0).next_tokens)
    tokens = np.concatenate([np.asarray(fn(z, jax.random.key(i))[0]) for i in range(5)])
    probs = np.exp(_log_softmax(logits.astype(np.float64)))
    p = _chi_square_pvalue(tokens, probs)
    assert p > FALSE_ALARM, f"chi-square p-value {p:.3g}"


def test_greedy_is_first_argmax():
    rng = np.random.default_rng(6)
    z = rng.normal(size=(6, V)).astype(np.float32)
    z[1, 1200] = 50.0  # maximum in the tail block
    z[2, [700, 20, 1250]] = 50.0  # ties across blocks: the first index wins
    z[3, [513, 514]] = 50.0  # tie inside a block
    tokens, logp = Greedy().next_tokens(jnp.asarray(z), jax.random.key(0))
    np.testing.assert_array_equal(tokens, np.argmax(z, axis=-1))
    np.testing.assert_array_equal(logp, 0.0)


def test_categorical_sample_log_probabilities_are_normalised():
    z = jnp.asarray(np.random.default_rng(7).normal(size=(3, 40)).astype(np.float32))
    keys = jax.random.split(jax.random.key(8), 2000)
    tokens, logp = jax.vmap(lambda k: categorical_sample(z, k))(keys)
    expected = jax.nn.log_softmax(z, axis=-1)
    np.testing.assert_allclose(logp, np.take_along_axis(
        np.asarray(expected)[None], np.asarray(tokens)[..., None], axis=-1)[..., 0], atol=1e-5)


@pytest.mark.parametrize("make, value", [
    (lambda: Temperature(0.0), "0.0"),
    (lambda: Temperature(-1.0), "-1.0"),
    (lambda: Temperature(float("nan")), "nan"),
    (lambda: TopK(-3), "-3"),
    (lambda: TopK(0), "k=0"),
    (lambda: TopK(2.5), "2.5"),
    (lambda: TopK(5, temperature=0), "0"),
    (lambda: TopP(0.0), "0.0"),
    (lambda: TopP(1.5), "1.5"),
    (lambda: TopP(-0.2), "-0.2"),
    (lambda: TopP(0.5, temperature=-2.0), "-2.0"),
    (lambda: TopP(0.5, candidates=0), "0"),
])
def test_bad_settings_raise(make, value):
    with pytest.raises(ValueError, match=value.replace(".", r"\.")):
        make()


def test_methods_are_hashable_static_settings():
    assert hash(TopK(5, 0.7)) == hash(TopK(5, 0.7))
    assert TopP(0.9) != TopP(0.8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        TopK(5).k = 6
