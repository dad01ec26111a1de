"""Figures of an evaluation, written as PNG files with matplotlib's Agg renderer (no display).

- :func:`plot_reward_vs_kl`: reward against ``KL(pi || pi_ref)``, the main plot of the vBoN
  paper (Amini et al., arXiv 2407.06057, Fig. 2): one series per method, the empirical BoN
  points, the BoN curve and each method's Pareto frontier.
- :func:`plot_training_curves`: reward, KL, ... against the training step from a run's metrics
  JSON-lines file (``bonjax.training`` writes ``run_dir/metrics.jsonl``).

Figures are built on a bare ``matplotlib.figure.Figure`` (no pyplot state), so plotting from
several threads or in a long loop neither leaks figures nor needs a display. matplotlib is
imported when a function runs, not with the module.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bonjax.checks import is_real
from bonjax.evaluation.metrics import BoNCurve, EvalPoint, pareto_frontier

__all__ = ["plot_reward_vs_kl", "plot_training_curves", "read_metrics_jsonl"]

KL_LABEL = r"$\mathrm{KL}(\pi \,\|\, \pi_{\mathrm{ref}})$ [nats]"
_BON_METHOD = "BoN"
_PALETTE = tuple(f"tab:{c}" for c in "blue orange green red purple brown pink olive cyan".split())


def _figure(size_px: tuple[int, int], dpi: int, rows: int = 1):
    from matplotlib.figure import Figure

    width, height = size_px
    if width < 100 or height < 100 or dpi < 10:
        raise ValueError(f"size_px must be at least 100 x 100 and dpi >= 10, got {size_px}, {dpi}")
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, axes


def _save(fig, path) -> str:
    path = os.fspath(path)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_reward_vs_kl(
    path: str | os.PathLike,
    points: Sequence[EvalPoint],
    *,
    bon_curve: BoNCurve | None = None,
    frontier: bool = True,
    annotate: bool = True,
    title: str | None = None,
    reward_label: str = "reward",
    size_px: tuple[int, int] = (900, 600),
    dpi: int = 100,
    background: Mapping[str, Any] | None = None,
    bon_curve_label: str | None = None,
) -> str:
    """Reward against ``KL(pi || pi_ref)`` for every method, saved as a PNG of ``size_px`` pixels.

    Each method (``EvalPoint.method``) is one colour: its points, with error bars of one standard
    error where they are non-zero, and (``frontier=True``) its Pareto frontier
    (:func:`~bonjax.evaluation.pareto_frontier`) as a step line: the best reward reachable at each
    KL budget. Points of method ``"BoN"`` (:func:`~bonjax.evaluation.bon_reference_points`) are
    drawn in black squares; ``bon_curve`` (:func:`~bonjax.evaluation.bon_curve`) adds the BoN
    reward over a fine grid of N as a dashed line. ``annotate`` writes each point's setting next
    to it. ``background`` (another run's ``results.json``, e.g. the committed frontier study)
    is drawn first and faded: its BoN curve dotted, its trained policies as small open circles
    in their methods' colours, so this run's points read against it. ``bon_curve_label``
    replaces the curve's legend entry (default: BoN's N range, order statistics).

    Returns:
      the path written.
    """
    if not points and bon_curve is None:
        raise ValueError("nothing to plot: points is empty and bon_curve is None")
    from matplotlib.lines import Line2D

    fig, (ax,) = _figure(size_px, dpi)
    methods = list(dict.fromkeys(p.method for p in points))
    if background is not None:
        methods += [m for m in dict.fromkeys(r["method"] for r in background["methods"])
                    if m not in methods]
    colors = dict(zip([m for m in methods if m != _BON_METHOD], itertools.cycle(_PALETTE)))
    colors[_BON_METHOD] = "black"
    if background is not None:
        _draw_background(ax, background, colors)
    if bon_curve is not None:
        ax.plot(
            bon_curve.kl,
            bon_curve.reward,
            color="0.45",
            linestyle="--",
            linewidth=1.2,
            label=bon_curve_label or
            f"BoN, N = {int(bon_curve.n[0])}..{int(bon_curve.n[-1])} (order statistics)",
        )
    for method in dict.fromkeys(p.method for p in points):
        group = [p for p in points if p.method == method]
        is_bon = method == _BON_METHOD
        color = colors[method]
        kl = np.array([p.kl.mean for p in group])
        reward = np.array([p.reward.mean for p in group])
        kl_err = np.array([p.kl.stderr for p in group])
        reward_err = np.array([p.reward.stderr for p in group])
        ax.errorbar(
            kl,
            reward,
            xerr=kl_err if kl_err.any() else None,
            yerr=reward_err if reward_err.any() else None,
            fmt="s" if is_bon else "o",
            color=color,
            markersize=5,
            capsize=2,
            elinewidth=0.8,
            label=f"{method} (empirical)" if is_bon else method,
            zorder=3,
        )
        if frontier:
            front = pareto_frontier(kl, reward)
            ax.step(kl[front], reward[front], where="post", color=color, alpha=0.5, linewidth=1.5)
        if annotate:
            for p in group:
                ax.annotate(
                    p.setting,
                    (p.kl.mean, p.reward.mean),
                    xytext=(4, -10),
                    textcoords="offset points",
                    fontsize=7,
                    color=color,
                )
    handles, labels = ax.get_legend_handles_labels()
    if frontier and points:
        handles.append(Line2D([], [], color="0.3", alpha=0.5, linewidth=1.5))
        labels.append("Pareto frontier (per method)")
    ax.legend(handles, labels, loc="lower right", fontsize=8)
    ax.set_xlabel(KL_LABEL)
    ax.set_ylabel(reward_label)
    ax.set_xlim(left=min(0.0, ax.get_xlim()[0]))
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "Reward vs KL to the reference policy")
    return _save(fig, path)


def read_metrics_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics JSON-lines file (one object per line), blank lines skipped.

    A torn last line (a write cut short by a kill) is dropped; any other line that is not a JSON
    object raises ``ValueError`` naming the file and line.
    """
    path = os.fspath(path)
    with open(path) as f:
        lines = f.read().splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1} is not a JSON line: {line[:80]!r}") from err
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{i + 1} is not a JSON object: {line[:80]!r}")
        records.append(record)
    return records


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    steps, values = [], []
    for i, record in enumerate(records):
        if key not in record:
            continue
        if "step" not in record:
            raise ValueError(f"metrics record {i} has {key!r} but no 'step': {dict(record)}")
        value = record[key]
        if not is_real(value):
            raise ValueError(f"metrics record {i}: {key!r} must be a number, got {value!r}")
        steps.append(float(record["step"]))
        values.append(float(value) if math.isfinite(value) else np.nan)
    order = np.argsort(steps, kind="stable")
    return np.asarray(steps)[order], np.asarray(values)[order]


def _draw_background(ax, results: Mapping[str, Any], colors: Mapping[str, str]) -> None:
    """Another run's BoN curve and trained policies, faded (see ``plot_reward_vs_kl``)."""
    run = results.get("run_id", "another run")
    curve = results.get("bon_curve")
    if curve:
        ax.plot(curve["kl"], curve["reward"], color="0.6", linestyle=":", linewidth=1.2,
                label=f"BoN curve of {run}", zorder=1)
    for method in dict.fromkeys(r["method"] for r in results["methods"]):
        rows = [r for r in results["methods"] if r["method"] == method]
        ax.scatter([r["kl_k1"][0] for r in rows], [r["reward"][0] for r in rows], s=18,
                   facecolors="none", edgecolors=colors[method], alpha=0.45, zorder=1,
                   label=f"{method} in {run}")


def plot_training_curves(
    path: str | os.PathLike,
    metrics: str | os.PathLike | Sequence[Mapping[str, Any]],
    *,
    keys: Sequence[str] = ("reward", "kl_k1"),
    labels: Mapping[str, str] | None = None,
    title: str | None = None,
    size_px: tuple[int, int] | None = None,
    dpi: int = 100,
) -> str:
    """One subplot per metric key against the training step, saved as a PNG.

    Args:
      path: the PNG to write.
      metrics: a metrics JSON-lines file (read with :func:`read_metrics_jsonl`) or its records:
        mappings with ``"step"`` and the keys (a record may lack some keys).
      keys: the metrics to plot, top to bottom.
      labels: y-axis label per key; defaults to the key, with "[nats]" for keys starting "kl".
      title: figure title.
      size_px: pixel size; defaults to 900 wide and 260 high per key (at least 300).
      dpi: dots per inch of the PNG.

    Non-finite values are drawn as gaps. Raises ``ValueError`` naming a key no record has.
    """
    if isinstance(keys, str) or not keys:
        raise ValueError(f"keys must be a non-empty sequence of metric names, got {keys!r}")
    records = (
        read_metrics_jsonl(metrics) if isinstance(metrics, str | os.PathLike) else list(metrics)
    )
    series = {key: _series(records, key) for key in keys}
    missing = [key for key, (steps, _) in series.items() if steps.size == 0]
    if missing:
        present = sorted({k for r in records for k in r} - {"step"})
        raise ValueError(f"no record has the metric(s) {missing}; present: {present}")
    labels = dict(labels or {})
    if size_px is None:
        size_px = (900, max(300, 260 * len(keys)))
    fig, axes = _figure(size_px, dpi, rows=len(keys))
    for ax, key in zip(axes, keys, strict=True):
        steps, values = series[key]
        ax.plot(steps, values, marker="." if steps.size <= 50 else None, linewidth=1.2)
        default = f"{key} [nats]" if key.lower().startswith("kl") else key
        ax.set_ylabel(labels.get(key, default))
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("training step")
    fig.suptitle(title or "Training curves")
    return _save(fig, path)
