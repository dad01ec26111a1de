"""Tests for bonjax.ecdf: brute-force counting, the NaN/inf order, sharding, bad input."""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bonjax import ecdf as E

ESTIMATORS = [E.SMOOTHED_LT, E.EMPIRICAL_LE, E.EMPIRICAL_LT]


def _less(a: float, b: float) -> bool:
    """The documented total order, written out: NaN below everything, NaNs tie."""
    if math.isnan(b):
        return False
    if math.isnan(a):
        return True
    return a < b


def _brute_count(ref_BxM, query_BxK, inequality: E.Inequality) -> np.ndarray:
    """Double loop over references and queries of every prompt."""
    count_BxK = np.zeros(query_BxK.shape, np.int64)
    for b in range(query_BxK.shape[0]):
        for k in range(query_BxK.shape[1]):
            r = float(query_BxK[b, k])
            for ref in ref_BxM[b]:
                below = _less(float(ref), r)
                if inequality is E.Inequality.LESS_EQUAL:
                    below = below or not _less(r, float(ref))
                count_BxK[b, k] += below
    return count_BxK


def _brute_estimate(count_BxK, num_refs: int, estimator: E.ECDFEstimator) -> np.ndarray:
    add = int(estimator.add_one)
    return (count_BxK + add) / (num_refs + add)


def _assert_float32_close(got, want_f64):
    """F_hat is a float32 ratio, exact up to the rounding of one division: 2 ulp."""
    np.testing.assert_allclose(np.asarray(got, np.float64), want_f64, rtol=2.5e-7, atol=0)


@pytest.mark.parametrize(
    "num_prompts,num_refs,num_queries,levels",
    [(3, 1, 5, 3), (4, 2, 7, 2), (5, 16, 9, 4), (2, 17, 33, 6), (6, 37, 3, 5), (3, 300, 64, 20)],
)
def test_counts_and_estimates_match_brute_force_with_heavy_ties(
    num_prompts, num_refs, num_queries, levels
):
    rng = np.random.default_rng(num_refs * 1000 + num_queries)
    # Integer-valued rewards from a few levels: most queries tie with some references, and the
    # levels reach one past both ends so queries fall below and above every reference.
    ref_BxM = rng.integers(0, levels, (num_prompts, num_refs)).astype(np.float32)
    query_BxK = rng.integers(-1, levels + 1, (num_prompts, num_queries)).astype(np.float32)
    refs = E.ReferenceRewards.create(ref_BxM)
    for inequality in E.Inequality:
        want = _brute_count(ref_BxM, query_BxK, inequality)
        np.testing.assert_array_equal(E.count_below(refs, query_BxK, inequality), want)
    for estimator in ESTIMATORS:
        count = _brute_count(ref_BxM, query_BxK, estimator.inequality)
        want = _brute_estimate(count, num_refs, estimator)
        _assert_float32_close(E.ecdf(refs, query_BxK, estimator), want)
        with np.errstate(divide="ignore"):
            np.testing.assert_allclose(
                E.log_ecdf(refs, query_BxK, estimator), np.log(want), rtol=0, atol=1e-6
            )


class RandomShapesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_continuous_rewards_match_numpy_searchsorted(self):
        rng = np.random.default_rng(0)
        for num_prompts, num_refs, num_queries in [(1, 1, 1), (7, 300, 11), (2, 1200, 5)]:
            ref_BxM = rng.normal(size=(num_prompts, num_refs)).astype(np.float32)
            query_BxK = rng.normal(size=(num_prompts, num_queries)).astype(np.float32)
            query_BxK[:, 0] = ref_BxM[:, 0]  # one exact tie per prompt

            @self.variant
            def counts(ref_BxM, query_BxK):
                refs = E.ReferenceRewards.create(ref_BxM)
                return (
                    E.count_below(refs, query_BxK, E.Inequality.LESS),
                    E.count_below(refs, query_BxK, E.Inequality.LESS_EQUAL),
                )

            lt, le = counts(ref_BxM, query_BxK)
            for b in range(num_prompts):
                sorted_refs = np.sort(ref_BxM[b])
                np.testing.assert_array_equal(
                    lt[b], np.searchsorted(sorted_refs, query_BxK[b], "left")
                )
                np.testing.assert_array_equal(
                    le[b], np.searchsorted(sorted_refs, query_BxK[b], "right")
                )


def test_smoothed_log_ecdf_stays_in_its_range_and_is_never_minus_inf():
    rng = np.random.default_rng(1)
    for num_refs in [1, 2, 300]:
        ref_BxM = rng.normal(size=(4, num_refs)).astype(np.float32)
        query_BxK = np.concatenate(
            [
                np.full((4, 1), -np.inf, np.float32),
                np.full((4, 1), np.nan, np.float32),
                ref_BxM.min(1, keepdims=True),
                ref_BxM.max(1, keepdims=True),
                np.full((4, 1), np.inf, np.float32),
                rng.normal(size=(4, 20)).astype(np.float32),
            ],
            axis=1,
        )
        refs = E.ReferenceRewards.create(ref_BxM)
        log_f = np.asarray(E.log_ecdf(refs, query_BxK))
        assert np.isfinite(log_f).all()
        assert (log_f >= -np.log(num_refs + 1) - 1e-6).all() and (log_f <= 0).all()
        # Below every reference: exactly 1 / (M + 1); above every reference: exactly 1.
        np.testing.assert_allclose(log_f[:, 0], -np.log(num_refs + 1), rtol=1e-6)
        np.testing.assert_array_equal(log_f[:, 4], 0.0)
        # The unsmoothed estimators reach -inf below every reference.
        assert np.isneginf(np.asarray(E.log_ecdf(refs, query_BxK, E.EMPIRICAL_LT))[:, 0]).all()


SPECIAL = [np.nan, -np.nan, -np.inf, -3.4e38, -1.0, -1e-45, -0.0, 0.0, 1e-45, 1.0, 3.4e38, np.inf]


def test_order_keys_realise_the_documented_total_order():
    values = np.array(SPECIAL, np.float32)
    keys = np.asarray(E.order_keys(values))
    for (a, ka), (b, kb) in itertools.product(zip(values, keys, strict=True), repeat=2):
        assert (ka < kb) == _less(a, b), (a, b)
        assert (ka == kb) == (not _less(a, b) and not _less(b, a)), (a, b)
    # The padding value (largest integer) is never a key.
    assert keys.max() < np.iinfo(np.int32).max


def test_nan_ranks_lowest_and_infinities_are_ordered_in_refs_and_queries():
    rng = np.random.default_rng(2)
    pool = np.array(SPECIAL + [2.0, 2.0, -1.0], np.float32)
    ref_BxM = rng.choice(pool, size=(6, 9)).astype(np.float32)
    query_BxK = np.tile(pool, (6, 1))
    refs = E.ReferenceRewards.create(ref_BxM)
    for estimator in ESTIMATORS:
        count = _brute_count(ref_BxM, query_BxK, estimator.inequality)
        _assert_float32_close(
            E.ecdf(refs, query_BxK, estimator), _brute_estimate(count, 9, estimator)
        )
    # A NaN query counts exactly the NaN references with `<=` and nothing with `<`.
    nan_refs = np.isnan(ref_BxM).sum(1)
    le = np.asarray(E.count_below(refs, query_BxK, E.Inequality.LESS_EQUAL))
    np.testing.assert_array_equal(le[:, 0], nan_refs)
    np.testing.assert_array_equal(np.asarray(E.count_below(refs, query_BxK))[:, 0], 0)


def test_narrow_floats_widen_exactly_and_float64_store_works_under_x64():
    rng = np.random.default_rng(3)
    ref_BxM = rng.normal(size=(3, 40)).astype(jnp.bfloat16)
    query_BxK = rng.normal(size=(3, 8)).astype(jnp.bfloat16)
    narrow = E.count_below(E.ReferenceRewards.create(ref_BxM), query_BxK)
    wide = E.count_below(
        E.ReferenceRewards.create(ref_BxM.astype(np.float32)), query_BxK.astype(np.float32)
    )
    np.testing.assert_array_equal(narrow, wide)
    with jax.enable_x64(True):
        ref64 = np.float64(1.0) + rng.integers(0, 3, (2, 5)) * 1e-12  # equal in float32
        query64 = np.array([[1.0 + 1e-12, 1.0], [1.0 + 3e-12, 1.0 - 1e-12]])
        refs64 = E.ReferenceRewards.create(ref64)
        assert refs64.blocks_BxCxS.dtype == jnp.int64
        np.testing.assert_array_equal(
            E.count_below(refs64, query64), _brute_count(ref64, query64, E.Inequality.LESS)
        )
        assert E.ecdf(refs64, query64).dtype == jnp.float64
        refs32 = E.ReferenceRewards.create(ref64.astype(np.float32))
        with pytest.raises(ValueError, match="float64"):
            E.count_below(refs32, query64)


def test_sharded_over_prompts_equals_unsharded_without_collectives():
    mesh = jax.make_mesh((8,), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))
    batch = NamedSharding(mesh, P("batch"))
    rng = np.random.default_rng(4)
    ref_BxM = rng.integers(0, 30, (16, 300)).astype(np.float32)
    query_BxK = rng.integers(0, 30, (16, 64)).astype(np.float32)

    def step(ref_BxM, query_BxK):
        refs = E.ReferenceRewards.create(ref_BxM)
        return refs, E.log_ecdf(refs, query_BxK), E.count_below(refs, query_BxK)

    sharded_step = jax.jit(step, in_shardings=(batch, batch), out_shardings=batch)
    with jax.set_mesh(mesh):
        ref_sharded = jax.device_put(ref_BxM, batch)
        query_sharded = jax.device_put(query_BxK, batch)
        refs, log_f, count = sharded_step(ref_sharded, query_sharded)
        hlo = sharded_step.lower(ref_sharded, query_sharded).compile().as_text()
        # The cached store is reused in later sharded calls: per-query work only.
        log_f_again = jax.jit(E.log_ecdf, in_shardings=(batch, batch), out_shardings=batch)(
            refs, query_sharded
        )
    assert log_f.sharding.is_equivalent_to(batch, 2)
    assert refs.blocks_BxCxS.sharding.is_equivalent_to(batch, 3)
    _, want_log_f, want_count = step(ref_BxM, query_BxK)
    np.testing.assert_array_equal(count, want_count)
    np.testing.assert_array_equal(log_f, want_log_f)
    np.testing.assert_array_equal(log_f_again, want_log_f)
    for collective in ["all-gather", "all-reduce", "all-to-all", "collective-permute"]:
        assert collective not in hlo, f"prompts should be independent; found {collective}"


def test_bad_input_raises_value_error_naming_the_value():
    good_ref = np.zeros((2, 5), np.float32)
    refs = E.ReferenceRewards.create(good_ref)
    with pytest.raises(ValueError, match=r"shape \[B, M\].*\(5,\)"):
        E.ReferenceRewards.create(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="M = 0"):
        E.ReferenceRewards.create(np.zeros((2, 0), np.float32))
    with pytest.raises(ValueError, match="B = 0"):
        E.ReferenceRewards.create(np.zeros((0, 5), np.float32))
    with pytest.raises(ValueError, match="int32"):
        E.ReferenceRewards.create(np.zeros((2, 5), np.int32))
    with pytest.raises(ValueError, match=r"B = 3 prompts .* B = 2"):
        E.ecdf(refs, np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"shape \[B, K\].*\(2, 4, 1\)"):
        E.log_ecdf(refs, np.zeros((2, 4, 1), np.float32))
    with pytest.raises(ValueError, match="K = 0"):
        E.count_below(refs, np.zeros((2, 0), np.float32))
    with pytest.raises(ValueError, match="'<'"):
        E.count_below(refs, np.zeros((2, 1), np.float32), "<")
    with pytest.raises(ValueError, match="'smoothed'"):
        E.ecdf(refs, np.zeros((2, 1), np.float32), "smoothed")
    with pytest.raises(ValueError, match="'<='"):
        E.ECDFEstimator(inequality="<=")
    with pytest.raises(ValueError, match="list"):
        E.ecdf([[0.0]], np.zeros((1, 1), np.float32))


def test_block_size_balances_block_maxima_and_in_block_comparisons():
    assert [E.block_size_for(m) for m in [1, 15, 16, 31, 32, 300, 600, 1200, 4096]] == [
        16,
        16,
        32,
        32,
        16,
        16,
        32,
        48,
        80,
    ]
    for num_refs in [1, 15, 16, 31, 32, 300, 1200]:
        refs = E.ReferenceRewards.create(np.zeros((1, num_refs), np.float32))
        _, num_blocks, block = refs.blocks_BxCxS.shape
        assert num_blocks * block >= num_refs + 1 > (num_blocks - 1) * block
