"""Evaluation of aligned policies: reward, KL to the reference, win rate, Best-of-N reference
points, Pareto frontiers, plots and the results table.

- :mod:`~bonjax.evaluation.metrics`: estimates with standard errors (jnp, jit-compatible) and the
  Best-of-N order-statistics estimators and Pareto frontier (float64 numpy).
- :mod:`~bonjax.evaluation.plots`: reward-vs-KL and training-curve PNGs (matplotlib, Agg).
- :mod:`~bonjax.evaluation.tables`: the Markdown results table.
- :mod:`~bonjax.evaluation.convergence`: whether a training curve has settled (its relative
  change over the last quarter of the steps).
- :mod:`~bonjax.evaluation.frontier`: each method family's gap to the Best-of-N curve, paired
  bootstrap intervals over test prompts and a verdict per pair of families.
- :mod:`~bonjax.evaluation.soft_bon`: soft Best-of-n's reward and KL estimated from reference
  rewards alone (its density ratio to pi_ref is a function of the reward).
- :mod:`~bonjax.evaluation.rbon`: regularised Best-of-N's reward and win rate from reference
  samples and their log-probabilities (its KL is Best-of-N's).
- :mod:`~bonjax.evaluation.off_target`: what alignment changes besides the reward (completion
  length, a held-out scorer): weighted means and quantiles, Best-of-n's selection weights.
"""

from bonjax.evaluation.convergence import curve_changes, last_quarter_change
from bonjax.evaluation.frontier import (
    BoNPerPrompt,
    Comparison,
    FamilyGap,
    FrontierStats,
    PolicyPoint,
    frontier_stats,
)
from bonjax.evaluation.metrics import (
    BoNCurve,
    Estimate,
    EvalPoint,
    KLSummary,
    bon_curve,
    bon_expected_max,
    bon_reference_points,
    bon_reward,
    bon_win_rate_empirical,
    bootstrap_ci,
    kl_summary,
    mean_and_stderr,
    pareto_frontier,
    win_rate,
)
from bonjax.evaluation.off_target import (
    QUANTILES,
    ValueSummary,
    bon_selection_weights,
    completion_lengths,
    reaches_limit,
    summarize,
)
from bonjax.evaluation.plots import plot_reward_vs_kl, plot_training_curves, read_metrics_jsonl
from bonjax.evaluation.rbon import RBON_METHOD, rbon_estimates, rbon_reference_points
from bonjax.evaluation.soft_bon import (
    SOFT_BON_METHOD,
    soft_bon_estimates,
    soft_bon_ratio,
    soft_bon_ratio_without_replacement,
    soft_bon_reference_points,
)
from bonjax.evaluation.tables import results_table, write_results_table

__all__ = [
    "curve_changes",
    "last_quarter_change",
    "BoNPerPrompt",
    "Comparison",
    "FamilyGap",
    "FrontierStats",
    "PolicyPoint",
    "frontier_stats",
    "BoNCurve",
    "Estimate",
    "EvalPoint",
    "KLSummary",
    "bon_curve",
    "bon_expected_max",
    "bon_reference_points",
    "bon_reward",
    "bon_win_rate_empirical",
    "bootstrap_ci",
    "kl_summary",
    "mean_and_stderr",
    "pareto_frontier",
    "QUANTILES",
    "ValueSummary",
    "bon_selection_weights",
    "completion_lengths",
    "reaches_limit",
    "summarize",
    "plot_reward_vs_kl",
    "plot_training_curves",
    "read_metrics_jsonl",
    "results_table",
    "RBON_METHOD",
    "rbon_estimates",
    "rbon_reference_points",
    "SOFT_BON_METHOD",
    "soft_bon_estimates",
    "soft_bon_ratio",
    "soft_bon_ratio_without_replacement",
    "soft_bon_reference_points",
    "win_rate",
    "write_results_table",
]
