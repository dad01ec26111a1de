"""Benchmark: bonjax's empirical CDF against a numpy loop over prompts (the vBoN reference code).

Run from the repository root:  python -m experiments.bench_ecdf

Prints one JSON line per case. `bonjax_ms` is the steady-state time of one `bonjax.ecdf.ecdf` call
on a cached `ReferenceRewards` store (compiled once, `block_until_ready`, median of repeats);
`reference_ms` is the numpy loop (per prompt: `np.sort` the references, `np.searchsorted` the
queries, `(1 + count) / (M + 1)`); `ratio = reference_ms / bonjax_ms`. Both see the same inputs in
the same run and their results are compared: counts exactly, F_hat to float32 rounding.
`store_build_ms` is the one-time cost of sorting the references into the store. `alternatives_ms`
times other jnp formulations of the same count on the same inputs (each checked equal), for the
record of what the store's blocked layout is measured against.
"""

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from bonjax import ecdf as E

CASES = [(512, 300, 64), (4096, 300, 64), (512, 16, 64)]  # vBoN M = 300; BOND k = 16


def numpy_reference(ref_BxM: np.ndarray, query_BxK: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vBoN reference computation: a Python loop over prompts, sort + searchsorted each."""
    num_refs = ref_BxM.shape[1]
    count_BxK = np.empty(query_BxK.shape, np.int64)
    for b in range(ref_BxM.shape[0]):
        count_BxK[b] = np.searchsorted(np.sort(ref_BxM[b]), query_BxK[b], side="left")
    return count_BxK, (1 + count_BxK) / (num_refs + 1)


def _searchsorted_per_prompt(sorted_BxM, query_BxK, method):
    return jax.vmap(functools.partial(jnp.searchsorted, side="left", method=method))(
        sorted_BxM, query_BxK
    )


@jax.jit
def _sort_then_searchsorted(ref_BxM, query_BxK):
    return _searchsorted_per_prompt(jnp.sort(ref_BxM, axis=1), query_BxK, "scan")


@functools.partial(jax.jit, static_argnames=("method",))
def _presorted_searchsorted(sorted_BxM, query_BxK, method):
    return _searchsorted_per_prompt(sorted_BxM, query_BxK, method)


@jax.jit
def _presorted_binary_search(sorted_padded_BxP, query_BxK):
    """Branch-free binary search, one gather per halving step, on refs padded with +inf to 2^k."""
    pos_BxK = jnp.zeros(query_BxK.shape, jnp.int32)
    step = sorted_padded_BxP.shape[1] // 2
    while step >= 1:
        value_BxK = jnp.take_along_axis(sorted_padded_BxP, pos_BxK + (step - 1), axis=1)
        pos_BxK = jnp.where(value_BxK < query_BxK, pos_BxK + step, pos_BxK)
        step //= 2
    return pos_BxK


@jax.jit
def _compare_all(ref_BxM, query_BxK):
    return jnp.sum(ref_BxM[:, None, :] < query_BxK[:, :, None], axis=-1, dtype=jnp.int32)


def _time_per_call(fn, rounds: int, calls: int) -> list[float]:
    """Per-call wall times (ms) of `fn`, `calls` consecutive calls in each of `rounds` rounds."""
    times = []
    for _ in range(rounds):
        for _ in range(calls):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times.append((time.perf_counter() - start) * 1e3)
    return times


def run_case(num_prompts: int, num_refs: int, num_queries: int, rounds: int) -> dict:
    rng = np.random.default_rng(0)
    ref_BxM = rng.normal(size=(num_prompts, num_refs)).astype(np.float32)
    query_BxK = rng.normal(size=(num_prompts, num_queries)).astype(np.float32)
    ties = min(8, num_refs, num_queries)
    query_BxK[:, :ties] = ref_BxM[:, :ties]  # exact ties with references
    ref_dev, query_dev = jnp.asarray(ref_BxM), jnp.asarray(query_BxK)

    refs = E.ReferenceRewards.create(ref_dev)
    want_count, want_f = numpy_reference(ref_BxM, query_BxK)
    got_count = np.asarray(E.count_below(refs, query_dev))
    got_f = np.asarray(E.ecdf(refs, query_dev), np.float64)
    counts_equal = bool((got_count == want_count).all())
    max_abs_diff = float(np.abs(got_f - want_f).max())
    if not counts_equal or max_abs_diff > 2 * np.spacing(np.float32(1.0)):
        raise AssertionError(
            f"bonjax differs from numpy: counts equal {counts_equal}, "
            f"max |F_hat diff| {max_abs_diff}"
        )

    sorted_BxM = jnp.sort(ref_dev, axis=1)
    padded = 1 << int(np.ceil(np.log2(num_refs + 1)))
    sorted_padded = jnp.pad(sorted_BxM, ((0, 0), (0, padded - num_refs)), constant_values=jnp.inf)
    alternatives = {
        "sort_and_searchsorted_every_call": lambda: _sort_then_searchsorted(ref_dev, query_dev),
        "presorted_searchsorted_scan": lambda: _presorted_searchsorted(
            sorted_BxM, query_dev, "scan"
        ),
        "presorted_searchsorted_scan_unrolled": lambda: _presorted_searchsorted(
            sorted_BxM, query_dev, "scan_unrolled"
        ),
        "presorted_searchsorted_compare_all": lambda: _presorted_searchsorted(
            sorted_BxM, query_dev, "compare_all"
        ),
        "presorted_searchsorted_sort": lambda: _presorted_searchsorted(
            sorted_BxM, query_dev, "sort"
        ),
        "presorted_binary_search_take_along_axis": lambda: _presorted_binary_search(
            sorted_padded, query_dev
        ),
        "compare_all_sum": lambda: _compare_all(ref_dev, query_dev),
    }
    for name, fn in alternatives.items():
        if not (np.asarray(fn()) == want_count).all():
            raise AssertionError(f"alternative {name} differs from numpy")

    bonjax_times, reference_times = [], []
    for _ in range(rounds):
        bonjax_times += _time_per_call(lambda: E.ecdf(refs, query_dev), 1, 20)
        reference_times += _time_per_call(lambda: numpy_reference(ref_BxM, query_BxK), 1, 5)
    build_times = _time_per_call(lambda: E.ReferenceRewards.create(ref_dev), 3, 3)
    alternative_ms = {}
    for name, fn in alternatives.items():
        slow = name in (
            "presorted_searchsorted_compare_all",
            "presorted_searchsorted_sort",
            "compare_all_sum",
            "sort_and_searchsorted_every_call",
        )
        alternative_ms[name] = float(np.median(_time_per_call(fn, 1, 3 if slow else 20)))

    bonjax_ms = float(np.median(bonjax_times))
    reference_ms = float(np.median(reference_times))
    return {
        "case": "ecdf_smoothed_lt",
        "prompts": num_prompts,
        "refs": num_refs,
        "queries": num_queries,
        "bonjax_ms": round(bonjax_ms, 4),
        "reference": "numpy loop over prompts: np.sort + np.searchsorted",
        "reference_ms": round(reference_ms, 4),
        "ratio": round(reference_ms / bonjax_ms, 2),
        "store_build_ms": round(float(np.median(build_times)), 4),
        "block_size": int(refs.blocks_BxCxS.shape[2]),
        "counts_equal": counts_equal,
        "max_abs_diff_f_hat": max_abs_diff,
        "alternatives_ms": {k: round(v, 4) for k, v in alternative_ms.items()},
        "alternatives_ratio": {k: round(reference_ms / v, 2) for k, v in alternative_ms.items()},
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "jax": jax.__version__,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="timing rounds per case")
    args = parser.parse_args()
    for num_prompts, num_refs, num_queries in CASES:
        print(json.dumps(run_case(num_prompts, num_refs, num_queries, args.rounds)), flush=True)


if __name__ == "__main__":
    main()
