"""The fixed best-and-worst data set: one pool of N reference samples, the best and worst of its
first n draws for every n, cached under its fingerprint and refused for other inputs."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bonjax import bon, training
from bonjax import sharding as shd
from bonjax.prompt_shard import PromptShard, chunk_indices
from bonjax.sampling import Sampler, Temperature
from bonjax.sampling.scorer import completion_logprobs
from bonjax.toy import ToyProblem
from bonjax.training.reference_pool import (
    PoolFingerprint,
    ReferencePool,
    reference_pool,
    reference_pool_of_shard,
)

N = 7
NS = (1, 2, 3, 5, 7)
CHUNKS = {"prompts_per_call": 4, "samples_per_call": 3}
IDS = {"model_id": "toy-3", "reward_id": "toy-table"}


def _problem():
    toy = ToyProblem(seed=3)
    tokens_PxL = np.random.default_rng(0).integers(0, toy.vocab_size, (10, 1)).astype(np.int32)
    return toy, tokens_PxL, np.ones_like(tokens_PxL, bool)


def _sampler(toy, mesh=None):
    return Sampler(toy.lm, Temperature(1.0), toy.length, mesh)


def _pool(toy, tokens_PxL, mask_PxL, reward=None, **options):
    options = {"ns": NS, **IDS, **CHUNKS, "progress": False, **options}
    return reference_pool(_sampler(toy), toy.ref_params, reward or toy.reward, tokens_PxL,
                          mask_PxL, N, jax.random.key(5), **options)


@pytest.fixture(scope="module")
def pool_and_problem():
    toy, tokens_PxL, mask_PxL = _problem()
    return _pool(toy, tokens_PxL, mask_PxL), toy, tokens_PxL, mask_PxL


def _no_sampling(*args):
    raise AssertionError("sampled although the pool was cached")


def test_best_and_worst_of_the_first_n_draws_follow_the_bon_rule(pool_and_problem):
    """For every n the pool's indices are bon.select_best_and_worst of the first n columns (the
    toy's 125 outcomes under a peaked pi_ref make tied draws common, so the tie rule is used)."""
    pool, *_ = pool_and_problem
    assert pool.ns == NS and pool.best_PxK.shape == (10, len(NS))
    ties = 0
    for n in NS:
        best_P, worst_P = pool.best_and_worst(n)
        want_best, want_worst = bon.select_best_and_worst(jnp.asarray(pool.reward_PxN[:, :n]))
        np.testing.assert_array_equal(best_P, want_best)
        np.testing.assert_array_equal(worst_P, want_worst)
        assert best_P.max() < n and worst_P.max() < n
        ties += int((pool.reward_PxN[:, :n, None] == pool.reward_PxN[:, None, :n]).sum()
                    - pool.reward_PxN[:, :n].size)
    assert ties > 0


def test_ties_and_nan_take_the_lowest_draw_index():
    """Rewards [1, 2, 2, NaN, 0]: the best is draw 1 (the first of the tied 2s) for n >= 3, the
    worst draw 0 for n = 3, the NaN (draw 3) for n = 4 and 5; n = 1 names draw 0 twice."""
    reward_1x5 = np.array([[1.0, 2.0, 2.0, np.nan, 0.0]], np.float32)
    z = np.zeros((1, 5, 2))
    pool = ReferencePool.create(z, np.ones_like(z, bool), z, reward_1x5, None, (1, 2, 3, 4, 5))
    got = {n: tuple(int(i[0]) for i in pool.best_and_worst(n)) for n in pool.ns}
    assert got == {1: (0, 0), 2: (1, 0), 3: (1, 0), 4: (1, 3), 5: (1, 3)}


def test_pool_holds_the_reference_samples_their_log_probs_and_rewards(pool_and_problem):
    """The rewards are reference_rewards' for the same key and chunks (one sampling loop); the
    reward of the stored tokens is the stored reward; the stored log-probs are pi_ref's
    teacher-forced ones; the pairs and best responses are the rows the indices name."""
    pool, toy, tokens_PxL, mask_PxL = pool_and_problem
    want_PxN = training.reference_rewards(_sampler(toy), toy.ref_params, toy.reward, tokens_PxL,
                                          mask_PxL, N, jax.random.key(5), progress=False,
                                          **CHUNKS)
    np.testing.assert_array_equal(pool.reward_PxN, want_PxN)
    np.testing.assert_array_equal(toy.reward(None, None, pool.tokens_PxNxT, pool.mask_PxNxT),
                                  pool.reward_PxN)
    scored = completion_logprobs(toy.lm, toy.ref_params, tokens_PxL, mask_PxL, pool.tokens_PxNxT,
                                 pool.mask_PxNxT).logp_BxNxT
    np.testing.assert_allclose(pool.logp_PxNxT, scored, atol=2e-5)
    rows_P = np.arange(10)
    best_P, worst_P = pool.best_and_worst(5)
    pairs = pool.pairs(5)
    assert pairs.n == 5
    np.testing.assert_array_equal(pairs.tokens_Px2xT[:, 0], pool.tokens_PxNxT[rows_P, best_P])
    np.testing.assert_array_equal(pairs.tokens_Px2xT[:, 1], pool.tokens_PxNxT[rows_P, worst_P])
    np.testing.assert_array_equal(pairs.logp_ref_Px2xT[:, 1], pool.logp_PxNxT[rows_P, worst_P])
    np.testing.assert_array_equal(pairs.reward_Px2[:, 0], pool.reward_PxN[rows_P, best_P])
    np.testing.assert_array_equal(pool.best_responses(5).tokens_PxT,
                                  pool.tokens_PxNxT[rows_P, best_P])


def test_n_above_N_and_unnamed_n_are_refused(pool_and_problem):
    pool, toy, tokens_PxL, mask_PxL = pool_and_problem
    with pytest.raises(ValueError, match="n = 9 exceeds the pool's N = 7"):
        _pool(toy, tokens_PxL, mask_PxL, ns=(2, 9))
    with pytest.raises(ValueError, match="n = 8 exceeds the pool's N = 7"):
        ReferencePool.create(pool.tokens_PxNxT, pool.mask_PxNxT, pool.logp_PxNxT,
                             pool.reward_PxN, pool.fingerprint, (8,))
    with pytest.raises(ValueError, match=r"for n in \(1, 2, 3, 5, 7\), not n = 4"):
        pool.pairs(4)
    with pytest.raises(ValueError, match="PairTable.n must be an integer >= 2, got 1"):
        pool.pairs(1)
    with pytest.raises(ValueError, match="Temperature"):
        reference_pool(Sampler(toy.lm, Temperature(0.7), toy.length), toy.ref_params,
                       toy.reward, tokens_PxL, mask_PxL, N, jax.random.key(5), ns=NS, **IDS)


def test_cached_pool_is_reused_without_sampling(tmp_path, pool_and_problem):
    pool, toy, tokens_PxL, mask_PxL = pool_and_problem
    built = _pool(toy, tokens_PxL, mask_PxL, cache_dir=tmp_path)
    (path,) = tmp_path.iterdir()
    assert path.name == built.fingerprint.file_name
    mtime = os.stat(path).st_mtime_ns
    cached = _pool(toy, tokens_PxL, mask_PxL, cache_dir=tmp_path, reward=_no_sampling,
                   ns=(2, 7))
    assert os.stat(path).st_mtime_ns == mtime and len(list(tmp_path.iterdir())) == 1
    for name in ("tokens_PxNxT", "mask_PxNxT", "logp_PxNxT", "reward_PxN"):
        np.testing.assert_array_equal(getattr(cached, name), getattr(pool, name))
    assert cached.ns == (2, 7) and cached.fingerprint == pool.fingerprint
    np.testing.assert_array_equal(cached.best_and_worst(7), pool.best_and_worst(7))
    np.testing.assert_array_equal(ReferencePool.load(path).best_PxK, pool.best_PxK)


def test_a_pool_of_another_reference_or_reward_is_refused_naming_the_fields(tmp_path,
                                                                            pool_and_problem):
    """Loading the saved pool as another model's and reward's is refused, naming both fields
    with both values; so is a cache file under the other fingerprint's name holding it."""
    pool, toy, tokens_PxL, mask_PxL = pool_and_problem
    path = tmp_path / "pool.npz"
    pool.save(path)
    other = PoolFingerprint.of(_sampler(toy), PromptShard.keep(tokens_PxL, mask_PxL, None, None),
                               N, jax.random.key(5), model_id="gpt2-imdb", reward_id="distilbert",
                               **CHUNKS)
    assert set(pool.fingerprint.differences(other)) == {"model", "reward"}
    message = (r"model: saved 'toy-3', expected 'gpt2-imdb'; "
               r"reward: saved 'toy-table', expected 'distilbert'")
    with pytest.raises(ValueError, match=message):
        ReferencePool.load(path, other)
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(path, cache / other.file_name)
    with pytest.raises(ValueError, match=message):
        _pool(toy, tokens_PxL, mask_PxL, cache_dir=cache, reward=_no_sampling,
              model_id="gpt2-imdb", reward_id="distilbert")
    assert ReferencePool.load(path, pool.fingerprint).fingerprint == pool.fingerprint
    # A named file: checked without reading its arrays, and refused when drawn anew into it.
    with pytest.raises(ValueError, match=message):
        other.check_file(path)
    pool.fingerprint.check_file(path)
    other.check_file(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match=message):
        _pool(toy, tokens_PxL, mask_PxL, cache_file=path, reward=_no_sampling,
              model_id="gpt2-imdb", reward_id="distilbert")


def test_a_named_pool_file_is_drawn_once_then_reused(tmp_path, pool_and_problem):
    pool, toy, tokens_PxL, mask_PxL = pool_and_problem
    path = tmp_path / "shared" / "pool.npz"
    _pool(toy, tokens_PxL, mask_PxL, cache_file=path)
    assert PoolFingerprint.read(path) == pool.fingerprint
    cached = _pool(toy, tokens_PxL, mask_PxL, cache_file=path, reward=_no_sampling)
    np.testing.assert_array_equal(cached.reward_PxN, pool.reward_PxN)
    with pytest.raises(ValueError, match="cache_dir .* or cache_file .*, not both"):
        _pool(toy, tokens_PxL, mask_PxL, cache_file=path, cache_dir=tmp_path)


def test_pool_does_not_depend_on_the_sharding(pool_and_problem):
    """Drawn on 8 fake devices from a PromptShard, the pool is the one-device pool."""
    pool, toy, tokens_PxL, mask_PxL = pool_and_problem
    mesh = shd.make_mesh((2, 2, 2))
    shard = PromptShard.keep(tokens_PxL, mask_PxL, [chunk_indices(10, 4)], mesh)
    got = reference_pool_of_shard(_sampler(toy, mesh), shd.shard_params(toy.ref_params, mesh),
                                  toy.reward, shard, N, jax.random.key(5), ns=NS, **IDS,
                                  **CHUNKS, progress=False)
    for name in ("tokens_PxNxT", "mask_PxNxT", "reward_PxN", "best_PxK", "worst_PxK"):
        np.testing.assert_array_equal(getattr(got, name), getattr(pool, name), err_msg=name)
    np.testing.assert_allclose(got.logp_PxNxT, pool.logp_PxNxT, atol=1e-6)
    assert got.fingerprint == pool.fingerprint
