"""Reference rewards: one pipeline for a whole table and for a table shared out over devices.

The rewards, and the cache file they are stored in, depend on the table, M, T, the key and the
chunk sizes, not on how the prompts are shared out; the cache file keeps the name run
directories written by earlier versions have, so those still resume without resampling. The
samples' sequence log-probabilities are kept next to the rewards.
"""

import jax
import numpy as np
import pytest

from bonjax import sharding as shd
from bonjax import training
from bonjax.prompt_shard import PromptShard, chunk_indices
from bonjax.sampling import Sampler, Temperature
from bonjax.toy import ToyProblem
from bonjax.training.reference import reference_rewards_of_shard, reference_samples_of_shard

# The name the cache file of these inputs has always had (runs written before still find it).
CACHE_NAME = "ref_rewards-f9ce262efaa5cbe8.npz"
OPTIONS = {"prompts_per_call": 4, "samples_per_call": 3, "fingerprint": {"toy": 3},
           "progress": False}


def _problem():
    toy = ToyProblem(seed=3)
    tokens_PxL = np.random.default_rng(0).integers(0, toy.vocab_size, (10, 1)).astype(np.int32)
    return toy, tokens_PxL, np.ones_like(tokens_PxL, bool)


def _no_sampling(*args):
    raise AssertionError("sampled although the rewards were cached")


@pytest.mark.parametrize("mesh_shape", [None, (2, 2, 2)])
def test_reference_rewards_do_not_depend_on_the_sharding_and_keep_their_cache_name(
        tmp_path, mesh_shape):
    """10 prompts in chunks of 4 (a padded last chunk), M = 7 in chunks of 3 (a short last one):
    the sharded pipeline gives the whole table's rewards, writes one cache file under the old
    name, and a second call (whole table or shard alike) reads it instead of sampling."""
    toy, tokens_PxL, mask_PxL = _problem()
    key = jax.random.key(5)
    want_PxM = training.reference_rewards(Sampler(toy.lm, Temperature(1.0), toy.length),
                                          toy.ref_params, toy.reward, tokens_PxL, mask_PxL, 7,
                                          key, **OPTIONS)
    assert want_PxM.shape == (10, 7) and len(np.unique(want_PxM)) > 10

    mesh = None if mesh_shape is None else shd.make_mesh(mesh_shape)
    params = toy.ref_params if mesh is None else shd.shard_params(toy.ref_params, mesh)
    sampler = Sampler(toy.lm, Temperature(1.0), toy.length, mesh)
    shard = PromptShard.keep(tokens_PxL, mask_PxL, [chunk_indices(10, 4)], mesh)
    got_PxM = reference_rewards_of_shard(sampler, params, toy.reward, shard, 7, key,
                                         cache_dir=tmp_path, **OPTIONS)
    np.testing.assert_array_equal(got_PxM, want_PxM)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CACHE_NAME]

    cached_PxM = training.reference_rewards(sampler, params, _no_sampling, tokens_PxL, mask_PxL,
                                            7, key, cache_dir=tmp_path, **OPTIONS)
    np.testing.assert_array_equal(cached_PxM, want_PxM)


def test_reference_rewards_refuse_bad_sizes():
    toy, tokens_PxL, mask_PxL = _problem()
    sampler = Sampler(toy.lm, Temperature(1.0), toy.length)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_samples"):
        training.reference_rewards(sampler, toy.ref_params, toy.reward, tokens_PxL, mask_PxL, 0,
                                   key)
    with pytest.raises(ValueError, match="prompts_per_call and samples_per_call"):
        training.reference_rewards(sampler, toy.ref_params, toy.reward, tokens_PxL, mask_PxL, 4,
                                   key, samples_per_call=0)
    with pytest.raises(ValueError, match="non-empty table"):
        training.reference_rewards(sampler, toy.ref_params, toy.reward, tokens_PxL[:0],
                                   mask_PxL[:0], 4, key)


def test_reference_samples_keep_the_exact_sequence_log_probabilities(tmp_path):
    """A temperature-1 sampler of pi_ref: each sample's log_ref is log pi_ref of the completion
    (the toy's reward table tells the completion); the cache file keeps both arrays, and one
    written before log-probabilities were kept reads as log_ref None."""
    toy = ToyProblem(seed=3)
    sampler = Sampler(toy.lm, Temperature(1.0), toy.length)
    tokens_1x1, mask_1x1 = toy.prompts(1)  # the prompt of toy.log_probs
    prompts = PromptShard.keep(np.asarray(tokens_1x1), np.asarray(mask_1x1), None, None)
    options = {**OPTIONS, "cache_dir": tmp_path}
    samples = reference_samples_of_shard(sampler, toy.ref_params, toy.reward, prompts, 9,
                                         jax.random.key(1), **options)
    assert len(np.unique(toy.reward_S)) == toy.reward_S.size  # the reward names the completion
    index_M = np.searchsorted(np.sort(toy.reward_S), samples.rewards_PxM[0])
    completion_M = np.argsort(toy.reward_S)[index_M]
    np.testing.assert_allclose(samples.log_ref_PxM[0], toy.log_probs(toy.ref_params)[completion_M],
                               atol=2e-5)
    (cache,) = tmp_path.iterdir()
    np.savez(cache, rewards_PxM=samples.rewards_PxM)  # the file an earlier version wrote
    old = reference_samples_of_shard(sampler, toy.ref_params, _no_sampling, prompts, 9,
                                     jax.random.key(1), **options)
    assert old.log_ref_PxM is None
    np.testing.assert_array_equal(old.rewards_PxM, samples.rewards_PxM)
