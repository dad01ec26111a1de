"""The BoNBoN system's evaluation records and report: one row per Best-of-n point and trained
policy, ``results.md``, ``results.json`` and the plot of win rate against KL.

Every row (a JSON record) has the same columns:

- ``win_rate``: against pi_ref, judged by the reward model, ties half. A trained policy's K
  samples per held-out prompt each meet all M reference samples of the prompt
  (:func:`~bonjax.experiment.win_rate_vs_references`); BoN_n's is the unbiased order-statistics
  estimate over the M samples (:func:`~bonjax.evaluation.bon_win_rate_empirical`), next to the
  analytic ``n / (n + 1)`` of continuous rewards (``win_rate_analytic``).
- ``kl_k1``, ``kl_k3``: ``KL(pi || pi_ref)`` in nats, Monte-Carlo over the policy's samples;
  BoN_n's is the analytic ``log n - (n-1)/n`` (``kl_k3`` None).
- ``reward``: the reward model's mean score.
- off-target (:mod:`bonjax.evaluation.off_target`): ``length`` (completion tokens, EOS
  included: mean and quantiles), ``at_length_limit`` (the fraction cut at T tokens without
  EOS) and ``holdout_reward`` (a second scorer, when configured). BoN_n's are the values of
  its choice among the M reference samples, weighted by
  :func:`~bonjax.evaluation.bon_selection_weights`.

Means carry standard errors across held-out prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bonjax.bon import bon_kl, bon_win_rate
from bonjax.evaluation import (
    BoNCurve,
    Estimate,
    EvalPoint,
    bon_reward,
    bon_selection_weights,
    bon_win_rate_empirical,
    completion_lengths,
    plot_reward_vs_kl,
    reaches_limit,
    summarize,
)
from bonjax.experiment.evaluate import EvalSamples, evaluate_samples
from bonjax.experiment.rundir import RunDirectory
from bonjax.objectives import bonbon_beta
from bonjax.training.reference_pool import ReferencePool

__all__ = ["bon_rows", "policy_row", "pool_rows", "write_report"]

PLOT = "win_rate_vs_kl.png"


def _off_target(tokens_QxKxT, mask_QxKxT, eos_id: int, holdout_QxK, weight_QxK=None) -> dict:
    at_limit = summarize(reaches_limit(tokens_QxKxT, mask_QxKxT, eos_id), weight_QxK)
    return {"length": summarize(completion_lengths(mask_QxKxT), weight_QxK).to_json(),
            "at_length_limit": list(at_limit.mean),
            "holdout_reward": None if holdout_QxK is None
            else summarize(holdout_QxK, weight_QxK).to_json()}


def bon_rows(test_pool: ReferencePool, ns: Sequence[int], eos_id: int,
             holdout_QxM: np.ndarray | None) -> list[dict]:
    """The Best-of-n rows from the M reference samples of every held-out prompt (n = 1 is
    pi_ref itself)."""
    reward_QxM = test_pool.reward_PxN
    rows = []
    for n in ns:
        n = int(n)
        weight_QxM = bon_selection_weights(reward_QxM, n)
        rows.append({
            "method": "BoN", "setting": f"n={n}", "key": f"bon-n{n}", "n": n,
            "win_rate": list(bon_win_rate_empirical(reward_QxM, n)),
            "win_rate_analytic": float(bon_win_rate(n)),
            "kl_k1": [float(bon_kl(n)), 0.0], "kl_k3": None,
            "reward": list(bon_reward(reward_QxM, n)),
            **_off_target(test_pool.tokens_PxNxT, test_pool.mask_PxNxT, eos_id, holdout_QxM,
                          weight_QxM)})
    return rows


def policy_row(key: str, name: str, setting: str, n: int, samples: EvalSamples,
               reward_ref_QxM: np.ndarray, eos_id: int, holdout_QxK: np.ndarray | None) -> dict:
    """The row of a trained policy from its K samples per held-out prompt."""
    point, kl_k3 = evaluate_samples(samples, reward_ref_QxM, name, setting)
    kl_QxK = np.where(samples.mask_PxKxT, samples.logp_PxKxT - samples.logp_ref_PxKxT,
                      0.0).sum(-1)
    return {"method": name, "setting": setting, "key": key, "n": n,
            "win_rate": list(point.win_rate), "win_rate_analytic": None,
            "kl_k1": list(point.kl), "kl_k3": list(kl_k3), "reward": list(point.reward),
            **_off_target(samples.tokens_PxKxT, samples.mask_PxKxT, eos_id, holdout_QxK),
            "eval_samples_per_prompt": int(samples.reward_PxK.shape[1]),
            # per held-out prompt, for paired comparisons between methods
            "reward_per_prompt": samples.reward_PxK.mean(1).astype(float).tolist(),
            "kl_per_prompt": kl_QxK.mean(1).astype(float).tolist()}


def pool_rows(pool: ReferencePool) -> list[dict]:
    """What the training pairs of each n hold: the mean reward of the best and of the worst,
    and the fraction of prompts whose best and worst tie (pairs without a preference)."""
    rows = []
    for n in pool.ns:
        if n < 2:
            continue
        pairs = pool.pairs(n)
        reward_Px2 = np.asarray(pairs.reward_Px2)
        rows.append({"n": int(n), "beta_star": bonbon_beta(n),
                     "reward_best": float(reward_Px2[:, 0].mean()),
                     "reward_worst": float(reward_Px2[:, 1].mean()),
                     "tied": float((reward_Px2[:, 0] == reward_Px2[:, 1]).mean())})
    return rows


def _estimate(value, digits: int = 3) -> str:
    if value is None:
        return ""
    mean, stderr = value
    return f"{mean:.{digits}f}" if stderr == 0 else f"{mean:.{digits}f} ± {stderr:.{digits}f}"


def _row_line(row: dict) -> str:
    bon = row["method"] == "BoN"
    win = _estimate(row["win_rate"])
    if row["win_rate_analytic"] is not None:
        win += f" (n/(n+1) = {row['win_rate_analytic']:.3f})"
    kl = f"{row['kl_k1'][0]:.3f} (analytic)" if bon else \
        f"{_estimate(row['kl_k1'])} / {_estimate(row['kl_k3'])}"
    length = row["length"]
    quantiles = dict((q, v) for q, v in length["quantiles"])
    spread = " / ".join(f"{quantiles[q]:g}" for q in (0.1, 0.5, 0.9) if q in quantiles)
    holdout = "" if row["holdout_reward"] is None else _estimate(row["holdout_reward"]["mean"])
    setting = row["setting"] + (" (pi_ref)" if bon and row["n"] == 1 else "")
    return (f"| {row['method']} | {setting} | {win} | {kl} | {_estimate(row['reward'])} | "
            f"{_estimate(length['mean'], 1)} | {spread} | "
            f"{100 * row['at_length_limit'][0]:.0f} % | {holdout} |")


def _points(rows: Sequence[dict]) -> list[EvalPoint]:
    """Points of the win-rate-vs-KL plot: the win rate in the reward's place."""
    return [EvalPoint(r["method"], r["setting"], Estimate(*r["win_rate"]), Estimate(*r["kl_k1"]))
            for r in rows]


def write_report(run_dir: RunDirectory, *, title: str, facts: Sequence[str],
                 bon: Sequence[dict], methods: Sequence[dict], pool: Sequence[dict],
                 sft: dict | None, summary: dict, complete: bool) -> None:
    """Writes ``results.md``, ``results.json`` and the win-rate-vs-KL plot (process 0)."""
    if not run_dir.is_main:
        return
    max_n = max([r["n"] for r in bon] + [r["n"] for r in methods] + [2])
    ns_Q = np.unique(np.round(np.geomspace(1, max_n, 64)).astype(np.int64))
    curve = BoNCurve(ns_Q.astype(np.float64), bon_kl(ns_Q), bon_win_rate(ns_Q))
    plot_reward_vs_kl(run_dir.path / PLOT, _points(list(bon) + list(methods)), bon_curve=curve,
                      frontier=False, reward_label="win rate vs pi_ref (reward model, ties half)",
                      title=f"{title}: win rate vs KL to pi_ref",
                      bon_curve_label=f"BoN, n = 1..{max_n}: n/(n+1) at log n - (n-1)/n")
    lines = [f"# {title}", "", *facts, "",
             "| Method | Setting | Win rate vs pi_ref | KL k1 / k3 (nats) | Reward | Length "
             "(tokens) | Length q10 / q50 / q90 | At length limit | Held-out reward |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [_row_line(r) for r in list(bon) + list(methods)]
    lines += ["", "Mean ± standard error across held-out prompts. Win rate: against pi_ref "
              "samples, judged by the reward model, ties half; BoN rows from the order "
              "statistics of the reference samples, with the analytic n/(n+1), and the analytic "
              "KL log n - (n-1)/n. Trained rows: Monte-Carlo KL (k1 / k3). Length: completion "
              "tokens, EOS included; at the limit: cut at T tokens without EOS."]
    if pool:
        lines += ["", "## Training pairs", "",
                  "| n | beta*_n | Reward of the best | Reward of the worst | Tied pairs |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {p['n']} | {p['beta_star']:.4g} | {p['reward_best']:.3f} | "
                  f"{p['reward_worst']:.3f} | {100 * p['tied']:.0f} % |" for p in pool]
    if sft is not None:
        loss = sft.get("final_loss")
        lines += ["", f"SFT stage: {sft['steps']} steps of {sft['prompts_per_step']} records"
                  + ("" if loss is None or not math.isfinite(loss)
                     else f", final loss {loss:.3f} nats per response token") + "."]
    status = "complete" if complete else "INCOMPLETE (training budget reached; call again)"
    lines += ["", f"Status: {status}. Wall time: {run_dir.wall_seconds:.0f} s over "
              f"{len(run_dir.record['invocations'])} call(s) (see run.json)."]
    (run_dir.path / "results.md").write_text("\n".join(lines) + "\n")
    run_dir.write_json("results.json", {
        "run_id": run_dir.run_id, "complete": complete, **summary, "sft": sft,
        "pool": list(pool), "bon": list(bon), "methods": list(methods)})
