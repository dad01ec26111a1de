"""Tests for bonjax.evaluation: estimates against direct computation, the BoN order-statistics
estimators against enumeration of all subsets and against Monte Carlo, the Pareto frontier against
brute force, and the written plots and table."""

import itertools
import json
import math
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bonjax import bon
from bonjax import evaluation as ev

# Monte Carlo checks use 5-sigma bounds (two-sided normal false-alarm rate about 6e-7 each); the
# seeds are fixed, so a given run is deterministic.
SIGMAS = 5.0


def _direct_estimate(values_BxK):
    """Mean and standard error of the mean of per-prompt means, written out in float64."""
    x = np.asarray(values_BxK, np.float64)
    m = x.reshape(x.shape[0], -1).mean(axis=1)
    b = m.size
    mean = m.sum() / b
    return mean, math.sqrt(((m - mean) ** 2).sum() / (b * (b - 1)))


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


# ---- mean and standard error ----


@pytest.mark.parametrize("shape", [(7,), (6, 4)])
def test_mean_and_stderr_matches_direct(shape):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    mean, stderr = _direct_estimate(x)
    for fn in (ev.mean_and_stderr, jax.jit(ev.mean_and_stderr)):
        got = fn(jnp.asarray(x))
        np.testing.assert_allclose(float(got.mean), mean, rtol=1e-5)
        np.testing.assert_allclose(float(got.stderr), stderr, rtol=1e-5)


def test_stderr_is_calibrated_with_correlated_samples_per_prompt():
    """x_bk = u_b + e_bk: the K samples of a prompt share u_b. Over 4000 repeated experiments the
    mean estimated variance of the mean must match the variance of the means (relative standard
    error of that ratio ~ sqrt(2/4000) = 2.2%, bound 11%); the naive std/sqrt(BK) is off by ~3x."""
    rng = np.random.default_rng(1)
    reps, b, k = 4000, 20, 5
    x_RxBxK = rng.normal(size=(reps, b, 1)) + rng.normal(size=(reps, b, k))
    est = jax.vmap(ev.mean_and_stderr)(jnp.asarray(x_RxBxK, jnp.float32))
    ratio = float(jnp.mean(est.stderr**2)) / float(np.var(np.asarray(est.mean), ddof=1))
    assert abs(ratio - 1.0) < SIGMAS * math.sqrt(2 / reps), ratio
    naive = np.mean(x_RxBxK.reshape(reps, -1).var(axis=1, ddof=1) / (b * k))
    assert naive / np.var(np.asarray(est.mean), ddof=1) < 0.5


def test_bootstrap_ci_brackets_the_mean_like_the_normal_interval():
    x = np.random.default_rng(2).exponential(size=(400, 3))
    low, high = ev.bootstrap_ci(x, jax.random.key(0), num_resamples=4000)
    mean, stderr = _direct_estimate(x)
    assert float(low) < mean < float(high)
    # For B = 400 the percentile interval is close to mean +/- 1.96 se (skew shifts it slightly).
    np.testing.assert_allclose(float(high) - float(low), 2 * 1.96 * stderr, rtol=0.1)
    jitted = jax.jit(ev.bootstrap_ci, static_argnames="num_resamples")(
        x, jax.random.key(0), num_resamples=4000
    )
    np.testing.assert_allclose([float(v) for v in jitted], [float(low), float(high)], rtol=1e-5)


# ---- KL ----


def _random_sequences(rng, lead, t):
    logp = np.log(rng.uniform(0.05, 1.0, size=lead + (t,)))
    logp_ref = np.log(rng.uniform(0.05, 1.0, size=lead + (t,)))
    lengths = rng.integers(1, t + 1, size=lead)
    mask = np.arange(t) < lengths[..., None]
    logp[~mask] = np.nan  # padding is never read
    logp_ref[~mask] = -np.inf
    return logp.astype(np.float32), logp_ref.astype(np.float32), mask


@pytest.mark.parametrize("lead", [(6,), (5, 3)])
def test_kl_summary_matches_direct_computation(lead):
    logp, logp_ref, mask = _random_sequences(np.random.default_rng(3), lead, 7)
    d = np.where(mask, logp_ref.astype(np.float64) - logp, 0.0)
    k1 = (-d).sum(axis=-1)
    k3 = (np.expm1(d) - d).sum(axis=-1)
    for fn in (ev.kl_summary, jax.jit(ev.kl_summary)):
        got = fn(logp, logp_ref, mask)
        for est, per_seq in ((got.k1, k1), (got.k3, k3)):
            mean, stderr = _direct_estimate(per_seq)
            np.testing.assert_allclose(float(est.mean), mean, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(float(est.stderr), stderr, rtol=1e-5)


def test_kl_summary_is_within_its_stderr_of_the_exact_kl():
    """Tokens drawn independently per position from pi_theta: KL = sum_t KL_t exactly. pi_ref is
    a perturbation of pi_theta, where k3 has the lower variance (Schulman 2020)."""
    rng = np.random.default_rng(4)
    v, t, b = 6, 4, 20_000
    p_TxV = rng.dirichlet(np.ones(v), size=t)
    q_TxV = p_TxV * np.exp(0.4 * rng.normal(size=(t, v)))
    q_TxV /= q_TxV.sum(axis=1, keepdims=True)
    exact = float((p_TxV * np.log(p_TxV / q_TxV)).sum())
    tokens_BxT = np.stack([rng.choice(v, size=b, p=p_TxV[i]) for i in range(t)], axis=1)
    logp = np.log(p_TxV[np.arange(t), tokens_BxT])
    logp_ref = np.log(q_TxV[np.arange(t), tokens_BxT])
    got = ev.kl_summary(logp, logp_ref, np.ones((b, t), bool))
    for est in got:
        assert abs(float(est.mean) - exact) < SIGMAS * float(est.stderr), (est, exact)
    assert float(got.k3.stderr) < float(got.k1.stderr)


# ---- win rate ----


def test_win_rate_hand_cases():
    policy, ref = jnp.array([1.0, 2.0, 3.0, 3.0]), jnp.array([2.0, 2.0, 1.0, 4.0])
    half = ev.win_rate(policy, ref)  # scores 0, 1/2, 1, 0
    assert float(half.mean) == pytest.approx(0.375)
    assert float(half.stderr) == pytest.approx(math.sqrt(0.6875 / 3) / 2, rel=1e-6)
    loss = ev.win_rate(policy, ref, tie_credit=0.0)  # scores 0, 0, 1, 0
    assert float(loss.mean) == pytest.approx(0.25)
    assert float(loss.stderr) == pytest.approx(0.25, rel=1e-6)

    policy_BxK = jnp.array([[1.0, 3.0], [2.0, 2.0], [0.0, 0.0]])
    ref_B = jnp.array([2.0, 2.0, 1.0])
    half = jax.jit(ev.win_rate)(policy_BxK, ref_B)  # prompt means 1/2, 1/2, 0
    assert float(half.mean) == pytest.approx(1 / 3)
    assert float(half.stderr) == pytest.approx(1 / 6, rel=1e-6)
    loss = ev.win_rate(policy_BxK, ref_B, tie_credit=0.0)  # prompt means 1/2, 0, 0
    assert float(loss.mean) == pytest.approx(1 / 6)
    assert float(loss.stderr) == pytest.approx(1 / 6, rel=1e-6)


@pytest.mark.parametrize("n", [1, 4])
def test_win_rate_of_bon_samples_matches_n_over_n_plus_1(n):
    rng = np.random.default_rng(5 + n)
    b, k = 4000, 3
    policy_BxK = rng.uniform(size=(b, k, n)).max(axis=-1)
    got = ev.win_rate(policy_BxK, rng.uniform(size=b))
    assert abs(float(got.mean) - float(bon.bon_win_rate(n))) < SIGMAS * float(got.stderr)


# ---- Best-of-N order statistics ----


def _tied_rewards(rng, b, m):
    return rng.integers(0, 4, size=(b, m)).astype(np.float64) * 0.5


def test_bon_expected_max_equals_enumeration_of_all_subsets():
    rng = np.random.default_rng(6)
    m = 7
    reward_BxM = np.concatenate([_tied_rewards(rng, 3, m), rng.normal(size=(2, m))])
    got_BxQ = ev.bon_expected_max(reward_BxM, list(range(1, m + 1)))
    for n in range(1, m + 1):
        subsets = list(itertools.combinations(range(m), n))
        brute_B = np.array([np.mean([row[list(s)].max() for s in subsets]) for row in reward_BxM])
        np.testing.assert_allclose(got_BxQ[:, n - 1], brute_B, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ev.bon_expected_max(reward_BxM, n), brute_B, rtol=1e-12)
    np.testing.assert_allclose(got_BxQ[:, 0], reward_BxM.mean(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(got_BxQ[:, -1], reward_BxM.max(axis=1))


def test_bon_reward_matches_uniform_order_statistics():
    """E[max of N uniforms] = N / (N + 1), within 5 standard errors."""
    reward_BxM = np.random.default_rng(7).uniform(size=(3000, 32))
    for n in (1, 2, 5, 16, 32):
        got = ev.bon_reward(reward_BxM, n)
        assert abs(got.mean - n / (n + 1)) < SIGMAS * got.stderr, (n, got)


def test_bon_expected_max_is_stable_for_large_m():
    reward_BxM = np.random.default_rng(8).normal(size=(2, 20_000))
    got_BxQ = ev.bon_expected_max(reward_BxM, [1, 10, 1000, 19_999, 20_000])
    assert np.isfinite(got_BxQ).all()
    assert (np.diff(got_BxQ, axis=1) > 0).all()
    np.testing.assert_allclose(got_BxQ[:, 0], reward_BxM.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(got_BxQ[:, -1], reward_BxM.max(axis=1), rtol=1e-12)
    # N = M - 1 leaves out one sample: (M - 1) / M of the time the maximum survives.
    top2 = np.sort(reward_BxM, axis=1)[:, -2:]
    expected = (top2[:, 1] * (20_000 - 1) + top2[:, 0]) / 20_000
    np.testing.assert_allclose(got_BxQ[:, -2], expected, rtol=1e-9)


@pytest.mark.parametrize("tie_credit", [0.5, 0.0])
def test_bon_win_rate_empirical_equals_enumeration(tie_credit):
    rng = np.random.default_rng(9)
    m = 6
    reward_BxM = np.concatenate([_tied_rewards(rng, 4, m), rng.normal(size=(1, m))])
    for n in range(1, m):
        per_prompt = []
        for row in reward_BxM:
            scores = []
            for j in range(m):
                others = [i for i in range(m) if i != j]
                for s in itertools.combinations(others, n):
                    best = row[list(s)].max()
                    scores.append(float(best > row[j]) + tie_credit * float(best == row[j]))
            per_prompt.append(np.mean(scores))
        mean, stderr = _direct_estimate(per_prompt)
        got = ev.bon_win_rate_empirical(reward_BxM, n, tie_credit=tie_credit)
        assert got.mean == pytest.approx(mean, rel=1e-12)
        assert got.stderr == pytest.approx(stderr, rel=1e-9, abs=1e-15)


def test_bon_win_rate_empirical_without_ties_is_n_over_n_plus_1():
    reward_BxM = np.random.default_rng(10).normal(size=(5, 40))
    for n in (1, 3, 39):
        got = ev.bon_win_rate_empirical(reward_BxM, n)
        assert got.mean == pytest.approx(float(bon.bon_win_rate(n)), rel=1e-12)
        assert got.stderr == 0.0  # the same on every prompt, up to rounding


def test_bon_reference_points_and_curve():
    reward_BxM = np.random.default_rng(11).uniform(size=(50, 16))
    points = ev.bon_reference_points(reward_BxM, [1, 4, 16])
    assert [p.setting for p in points] == ["N=1", "N=4", "N=16"]
    assert {p.method for p in points} == {"BoN"}
    for p, n in zip(points, (1, 4, 16), strict=True):
        assert p.kl == (pytest.approx(float(bon.bon_kl(n))), 0.0)
        assert p.reward == pytest.approx(tuple(ev.bon_reward(reward_BxM, n)))
    assert points[1].win_rate.mean == pytest.approx(0.8)
    assert points[2].win_rate is None  # N = M: no sample is left to play the opponent
    curve = ev.bon_curve(reward_BxM, num=8)
    assert curve.n[0] == 1 and curve.n[-1] == 16 and (np.diff(curve.n) > 0).all()
    np.testing.assert_allclose(curve.kl, bon.bon_kl(curve.n))
    np.testing.assert_allclose(
        curve.reward, ev.bon_expected_max(reward_BxM, curve.n.astype(int)).mean(axis=0)
    )
    np.testing.assert_array_equal(ev.bon_curve(reward_BxM, num=100).n, np.arange(1, 17))


# ---- Pareto frontier ----


def _brute_frontier(kl, reward):
    keep = []
    for i in range(len(kl)):
        dominated = any(
            kl[j] <= kl[i] and reward[j] >= reward[i] and (kl[j] < kl[i] or reward[j] > reward[i])
            for j in range(len(kl))
        )
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: (kl[i], i))


def test_pareto_frontier_hand_made_with_ties_and_duplicates():
    kl = [0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 0.5, 1.0]
    reward = [0.0, 1.0, 1.0, 0.5, 2.0, 2.0, 0.0, 0.5]
    # (0.5, 0) is dominated by (0, 0) (same reward, more KL); (1, 1) appears twice and both stay;
    # (1, 0.5) and (2, 0.5) lose to (1, 1) and (2, 2); (3, 2) loses to (2, 2).
    np.testing.assert_array_equal(ev.pareto_frontier(kl, reward), [0, 1, 2, 4])
    np.testing.assert_array_equal(ev.pareto_frontier([1.0], [3.0]), [0])
    np.testing.assert_array_equal(ev.pareto_frontier([1.0, 1.0], [3.0, 3.0]), [0, 1])


def test_pareto_frontier_equals_brute_force():
    rng = np.random.default_rng(12)
    for _ in range(50):
        p = int(rng.integers(1, 30))
        kl, reward = rng.integers(0, 5, size=p) * 0.5, rng.integers(0, 5, size=p) * 1.0
        got = ev.pareto_frontier(kl, reward)
        assert got.tolist() == _brute_frontier(kl, reward)


# ---- plots and table ----


def _method_points(rng):
    points = []
    for method, scale in (("vBoN", 1.0), ("PPO", 0.8)):
        for i, setting in enumerate(("beta=1", "beta=0.3", "beta=0.1", "beta=0.03")):
            kl = 0.4 * (i + 1) + rng.uniform(0, 0.2)
            reward = scale * (1 - math.exp(-kl)) + rng.normal(0, 0.03)
            points.append(
                ev.EvalPoint(method, setting, ev.Estimate(reward, 0.02), ev.Estimate(kl, 0.05))
            )
    return points


def test_plot_reward_vs_kl_writes_a_png_of_the_requested_size(tmp_path):
    rng = np.random.default_rng(13)
    reward_BxM = rng.normal(size=(64, 64))
    points = ev.bon_reference_points(reward_BxM, [1, 2, 4, 8, 16, 32]) + _method_points(rng)
    path = ev.plot_reward_vs_kl(
        tmp_path / "sub" / "reward_vs_kl.png",
        points,
        bon_curve=ev.bon_curve(reward_BxM),
        reward_label="reward (classifier logit)",
        size_px=(800, 560),
    )
    assert path.endswith("reward_vs_kl.png")
    assert _png_size(path) == (800, 560)
    with pytest.raises(ValueError, match="nothing to plot"):
        ev.plot_reward_vs_kl(tmp_path / "empty.png", [])


def test_plot_training_curves_from_a_jsonl_file(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [
        json.dumps({"step": s, "reward": 0.1 * s, "kl_k1": 0.01 * s, "loss": 1.0})
        for s in range(30)
    ]
    lines.insert(5, json.dumps({"step": 4, "grad_norm": 2.0}))  # a record without the keys
    metrics.write_text("\n".join(lines) + '\n{"step": 30, "rew')  # torn last line
    assert len(ev.read_metrics_jsonl(metrics)) == 31
    path = ev.plot_training_curves(tmp_path / "curves.png", metrics, keys=("reward", "kl_k1"))
    assert _png_size(path) == (900, 520)
    records = ev.read_metrics_jsonl(metrics)
    path = ev.plot_training_curves(tmp_path / "c3.png", records, keys=("reward", "kl_k1", "loss"))
    assert _png_size(path) == (900, 780)
    with pytest.raises(ValueError, match="kl_k3"):
        ev.plot_training_curves(tmp_path / "x.png", metrics, keys=("reward", "kl_k3"))
    metrics.write_text('{"step": 1, "reward": 1}\nnot json\n{"step": 2, "reward": 2}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        ev.read_metrics_jsonl(metrics)


def test_results_table_rows(tmp_path):
    # Ten reward levels: ties make the BoN win rate vary across prompts, the maxima vary too.
    reward_BxM = np.random.default_rng(14).integers(0, 10, size=(20, 8)) * 0.1
    points = ev.bon_reference_points(reward_BxM, [2, 8]) + [
        ev.EvalPoint(
            "vBoN", "N=8", ev.Estimate(0.9, 0.01), ev.Estimate(1.1, 0.04), ev.Estimate(0.85, 0.02)
        ),
        ev.EvalPoint("PPO|KL", "beta=0.1", ev.Estimate(0.8, 0.015), ev.Estimate(0.7, 0.03)),
    ]
    path = ev.write_results_table(tmp_path / "results.md", points)
    lines = open(path).read().splitlines()
    assert lines[0] == "| Method | Setting | Reward | KL (nats) | Win rate vs ref |"
    rows = [line for line in lines[2:] if line.startswith("|")]
    bon2, bon8 = points[:2]
    assert rows == [
        f"| BoN | N=2 | {bon2.reward.mean:.3f} ± {bon2.reward.stderr:.3f} | 0.193 | "
        f"{bon2.win_rate.mean:.3f} ± {bon2.win_rate.stderr:.3f} |",
        f"| BoN | N=8 | {bon8.reward.mean:.3f} ± {bon8.reward.stderr:.3f} | 1.204 | n/a |",
        "| vBoN | N=8 | 0.900 ± 0.010 | 1.100 ± 0.040 | 0.850 ± 0.020 |",
        r"| PPO\|KL | beta=0.1 | 0.800 ± 0.015 | 0.700 ± 0.030 | n/a |",
    ]
    assert "standard error" in lines[-1]


# ---- bad input ----


def test_bad_input_raises_value_error_naming_the_value():
    with pytest.raises(ValueError, match=r"values_BxK.*\(0,\)"):
        ev.mean_and_stderr(jnp.zeros((0,)))
    with pytest.raises(ValueError, match="B = 1"):
        ev.mean_and_stderr(jnp.zeros((1, 4)))
    with pytest.raises(ValueError, match="non-finite.*index \\(2,\\)"):
        ev.mean_and_stderr(jnp.array([0.0, 1.0, jnp.nan]))
    with pytest.raises(ValueError, match=r"reward_ref_B must have shape \[B\] = \(3,\)"):
        ev.win_rate(jnp.zeros((3, 2)), jnp.zeros(4))
    with pytest.raises(ValueError, match="tie_credit.*1.5"):
        ev.win_rate(jnp.zeros(3), jnp.zeros(3), tie_credit=1.5)
    logp = jnp.zeros((3, 5))
    with pytest.raises(ValueError, match="logp_ref_BxT"):
        ev.kl_summary(logp, jnp.zeros((3, 4)), jnp.ones((3, 5)))
    with pytest.raises(ValueError, match="shape"):
        ev.kl_summary(jnp.zeros(5), jnp.zeros(5), jnp.ones(5))
    with pytest.raises(ValueError, match="N = 9 is outside \\[1, 8\\].*M = 8"):
        ev.bon_expected_max(np.zeros((2, 8)), [2, 9])
    with pytest.raises(ValueError, match="N = 8 is outside \\[1, 7\\]"):
        ev.bon_win_rate_empirical(np.zeros((2, 8)), 8)
    with pytest.raises(ValueError, match="N must be integers"):
        ev.bon_expected_max(np.zeros((2, 8)), 2.5)
    with pytest.raises(ValueError, match=r"reward_ref_BxM.*\(2, 0\)"):
        ev.bon_expected_max(np.zeros((2, 0)), 1)
    with pytest.raises(ValueError, match="reward_ref_BxM has 1 non-finite"):
        ev.bon_reward(np.array([[0.0, np.inf], [0.0, 1.0]]), 1)
    with pytest.raises(ValueError, match=r"shapes \(3,\) and \(2,\)"):
        ev.pareto_frontier([0.0, 1.0, 2.0], [0.0, 1.0])
    with pytest.raises(ValueError, match=r"shapes \(0,\)"):
        ev.pareto_frontier([], [])
    with pytest.raises(ValueError, match="num_resamples.*1"):
        ev.bootstrap_ci(jnp.zeros(4), jax.random.key(0), num_resamples=1)
    with pytest.raises(ValueError, match="EvalPoint.kl of PPO beta=1"):
        ev.EvalPoint("PPO", "beta=1", ev.Estimate(0.0, 0.1), ev.Estimate(float("nan"), 0.0))
    with pytest.raises(ValueError, match="points is empty"):
        ev.results_table([])
