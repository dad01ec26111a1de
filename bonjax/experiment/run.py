"""``run_experiment``: the IMDB sentiment experiment of the vBoN paper, end to end, resumable.

1. Check the config (unknown method, model, reward or a bad size: a ValueError naming it) and
   open the run directory (refused if it belongs to another config).
2. Load pi_ref, the reward and the prompts (train and held-out test IMDB review openings).
3. Draw M reference samples per prompt and cache their rewards in ``run_dir/references`` (or
   ``config.reference.cache_dir``, shared by runs):
   the test prompts' give the Best-of-N points and curve and the win-rate opponents; the train
   prompts' give vBoN's empirical CDFs.
4. Best-of-N at each N of ``config.bon.ns``: reward from the order statistics of the reference
   rewards, the analytic KL ``log N - (N-1)/N``, the win rate against one pi_ref sample; soft
   Best-of-n at each (n, lambda) of ``config.soft_bon`` and regularised Best-of-N at each
   (n, beta) of ``config.rbon`` from the same samples (:mod:`~bonjax.experiment.reference_points`).
5. Train every method of the sweep (checkpoints, metrics JSONL and TensorBoard under
   ``run_dir/<method>``), evaluate it on the test prompts and save its samples as text.
6. Plot reward against KL (the methods, the BoN points and curve, Pareto frontiers) and each
   method's training curves; write the results table (Markdown) and ``results.json``.

A second call with the same config and run directory continues where the first stopped: cached
references, finished evaluations and checkpoints are reused.

Several JAX processes (``bonjax.distributed``) run the same calls on one mesh over all their
devices (``config.mesh_shape`` is then required). Each process keeps only the prompts of its
rows of the global batches (:class:`~bonjax.prompt_shard.PromptShard`) and supplies
just those rows; the batches and keys are those of one process, so the results do not depend on
the number of processes. Process 0 alone writes the run directory's files (configs, reference
cache, metrics, plots, tables, samples) and decides what a resumed run reuses; every process
writes its shards of the checkpoints, so the run directory must be one every host sees (a
shared file system). Process 0 also keeps the test prompts' texts for the samples file.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import os
import pathlib
import time
from typing import Any

import jax
import numpy as np

from bonjax import distributed
from bonjax import sharding as shd
from bonjax.checks import config_field, config_int
from bonjax.data.imdb import Source, imdb_prompts
from bonjax.evaluation import (
    BoNCurve,
    BoNPerPrompt,
    Estimate,
    EvalPoint,
    FrontierStats,
    PolicyPoint,
    bon_curve,
    bon_expected_max,
    curve_changes,
    frontier_stats,
    plot_reward_vs_kl,
    plot_training_curves,
    read_metrics_jsonl,
    results_table,
)
from bonjax.evaluation.tables import DEFAULT_NOTE
from bonjax.experiment.components import (
    REWARDS,
    CompiledReward,
    check_dtype_and_mesh,
    config_mesh,
    load_policy,
    load_reward,
    prompt_batch,
    stage_key,
)
from bonjax.experiment.evaluate import bon_gap, evaluate_samples, sample_policy, write_samples
from bonjax.experiment.reference_points import FIELDS as REFERENCE_FIELDS
from bonjax.experiment.reference_points import (
    check_reference_settings,
    reference_points,
    selection_records,
)
from bonjax.experiment.rundir import RunDirectory
from bonjax.experiment.sweeps import MethodRun, method_runs
from bonjax.models.lora import LoRAConfig
from bonjax.prompt_shard import PromptShard, chunk_indices, step_indices
from bonjax.sampling.sampler import Sampler
from bonjax.sampling.strategies import Temperature
from bonjax.training import (
    Checkpointer,
    MetricsWriter,
    OptimizerConfig,
    Trainer,
    config_fingerprint,
    reference_store,
    train_loop,
)
from bonjax.training.reference import ReferenceSamples, reference_samples_of_shard

__all__ = ["ExperimentResult", "check_config", "method_checkpointer", "method_trainer",
           "run_experiment"]

logger = logging.getLogger(__name__)

SETTLED = 0.05  # a training curve changing less than this over its last quarter has settled

_CURVE_KEYS = ("reward", "kl_k1", "log_F", "loss", "log_ratio_margin")


@dataclasses.dataclass(frozen=True)
class ExperimentResult:
    """What one call of :func:`run_experiment` left in the run directory.

    Attributes:
      run_dir: the run directory.
      run_id: the run's id (the same for every call on this directory).
      complete: False when ``step_budget`` stopped training early (call again to continue).
      points: BoN points, soft BoN and RBoN points, then one point per evaluated method (the
        table's rows).
      kl_k3: the k3 KL estimate of each evaluated method, by its key.
      bon_gaps: reward minus the BoN curve's reward at the same KL, by method key (None beyond
        the curve).
      wall_seconds: this call's wall time.
    """

    run_dir: pathlib.Path
    run_id: str
    complete: bool
    points: tuple[EvalPoint, ...]
    kl_k3: dict[str, Estimate]
    bon_gaps: dict[str, float | None]
    wall_seconds: float


def check_config(config: Any) -> list[MethodRun]:
    """Checks every field the experiment reads; returns the trained policies of the sweep.

    Raises:
      ValueError: naming the first missing or invalid field (unknown method, reward, data
        source; sizes out of range).
    """
    model = config_field(config, "model")
    if not isinstance(model, str) or not model:
        raise ValueError(f"config.model must name a model, got {model!r}")
    if config_field(config, "reward") not in REWARDS:
        raise ValueError(f"unknown reward {config.reward!r} in config.reward; choose one of "
                         f"{', '.join(REWARDS)}")
    if config_field(config, "reward_fallback") not in ("", *REWARDS):
        raise ValueError(f"unknown reward {config.reward_fallback!r} in config.reward_fallback; "
                         f"choose '' or one of {', '.join(REWARDS)}")
    sources = [s.value for s in Source]
    if config_field(config, "data.source") not in sources:
        raise ValueError(f"unknown data source {config.data.source!r} in config.data.source; "
                         f"choose one of {', '.join(sources)}")
    if not isinstance(config_field(config, "reference.cache_dir"), str):
        raise ValueError(f"config.reference.cache_dir must be a folder or '', got "
                         f"{config.reference.cache_dir!r}")
    if not isinstance(config_field(config, "background_results"), str):
        raise ValueError(f"config.background_results must be a path or '', got "
                         f"{config.background_results!r}")
    check_dtype_and_mesh(config)
    config_int(config, "seed", 0)
    config_int(config, "reward_max_length", 0)
    config_int(config, "max_new_tokens", 1)
    train_prompts = config_int(config, "data.train_prompts", 1)
    config_int(config, "data.test_prompts", 2)  # standard errors need two prompts
    min_tokens = config_int(config, "data.min_tokens", 1)
    if config_int(config, "data.max_tokens", 1) < min_tokens:
        raise ValueError(f"config.data.max_tokens {config.data.max_tokens} is below "
                         f"config.data.min_tokens {min_tokens}")
    M = config_int(config, "reference.samples", 2)
    config_int(config, "reference.prompts_per_call", 1)
    config_int(config, "reference.samples_per_call", 1)
    check_reference_settings({f: tuple(config_field(config, f)) for f in REFERENCE_FIELDS}, M)
    config_int(config, "train.steps", 1)
    config_int(config, "train.seed", -1)
    per_step = config_int(config, "train.prompts_per_step", 1)
    if per_step > train_prompts:
        raise ValueError(f"config.train.prompts_per_step {per_step} exceeds the "
                         f"{train_prompts} training prompts")
    config_int(config, "train.samples_per_prompt", 2)
    config_int(config, "train.epochs", 1)
    config_int(config, "train.score_chunks", 1)
    top = config_int(config, "train.train_top", 0)
    if config_int(config, "train.lora_rank", 0) and top:
        raise ValueError(f"config.train.lora_rank = {config.train.lora_rank} needs "
                         f"config.train.train_top = 0, got {top}: with LoRA adapters the base "
                         "model stays frozen")
    config_int(config, "train.save_every", 1)
    config_int(config, "train.keep_checkpoints", 1)
    config_int(config, "train.log_every", 1)
    config_int(config, "eval.samples_per_prompt", 1)
    config_int(config, "eval.prompts_per_call", 1)
    for name in ("learning_rate", "b1", "b2", "weight_decay", "max_grad_norm", "clip_eps",
                 "lora_alpha"):
        value = config_field(config, f"train.{name}")
        if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"config.train.{name} must be a finite number >= 0, got {value!r}")
    config_field(config, "train.cosine_decay")
    return method_runs(config)


def _optimizer(config: Any) -> OptimizerConfig:
    t = config.train
    return OptimizerConfig(
        learning_rate=float(t.learning_rate), b1=float(t.b1), b2=float(t.b2),
        weight_decay=float(t.weight_decay),
        max_grad_norm=float(t.max_grad_norm) if t.max_grad_norm > 0 else None,
        epochs=int(t.epochs), train_top=int(t.train_top) or None,
        lora=LoRAConfig(int(t.lora_rank), float(t.lora_alpha), tuple(t.lora_targets),
                        tuple(t.lora_train_in_full)) if t.lora_rank else None,
        decay_steps=int(t.steps) * int(t.epochs) if t.cosine_decay else None)


def _train_seed(config: Any) -> int:
    """The seed of the training draws: ``config.train.seed``, or ``config.seed`` when it is -1."""
    seed = int(config.train.seed)
    return int(config.seed) if seed < 0 else seed


def _mesh(config: Any):
    return config_mesh(tuple(config.mesh_shape),
                       {"config.train.prompts_per_step": int(config.train.prompts_per_step)})


@dataclasses.dataclass(frozen=True, eq=False)
class _Setup:
    """What every method's training and evaluation share (loaded once per call)."""

    config: Any
    run_dir: RunDirectory
    lm: Any
    params: Any
    tokenizer: Any
    reward: Any
    mesh: Any
    sampler: Sampler
    train_prompts: PromptShard
    train_store: Any
    test_prompts: PromptShard
    test_refs_PxM: np.ndarray
    report: tuple | None  # process 0: (Prompts, tokens_PxL, mask_PxL) of the test prompts
    progress: bool


def method_trainer(config: Any, run: MethodRun, lm, params, reward=None, train_store=None,
                   mesh=None) -> Trainer:
    """The trainer of one method of the experiment (``reward`` None: only to build the state
    its checkpoints restore into)."""
    # With a mesh the rollout is one compiled program whatever the process count: its batch
    # comes out laid out as the update takes it.
    return Trainer(lm, params, run.method, reward, max_new_tokens=int(config.max_new_tokens),
                   optimizer=_optimizer(config),
                   ref_rewards=train_store if run.needs_reference_cdf else None, mesh=mesh,
                   jit_collect=True if mesh is not None else None,
                   score_chunks=int(config.train.score_chunks))


def method_checkpointer(config: Any, run_dir: pathlib.Path, run_fingerprint: str,
                        key: str) -> Checkpointer:
    """The checkpoints of the method ``key`` in ``run_dir/key/checkpoints``."""
    return Checkpointer(run_dir / key / "checkpoints", save_every=int(config.train.save_every),
                        max_to_keep=int(config.train.keep_checkpoints),
                        fingerprint=config_fingerprint({"run": run_fingerprint, "method": key}))


def _train_and_evaluate(run: MethodRun, s: _Setup,
                        budget: int | None) -> tuple[dict | None, int]:
    """Trains one method (resuming its checkpoints) and evaluates it.

    Returns its evaluation record (None when ``budget`` steps ran out first) and the number of
    training steps this call took.
    """
    config, run_dir = s.config, s.run_dir
    method_dir = run_dir.path / run.key
    steps = int(config.train.steps)
    record = run_dir.finished_record(f"{run.key}/eval.json", steps)
    if record is not None:
        return record, 0
    if budget == 0:
        return None, 0
    trainer = method_trainer(config, run, s.lm, s.params, s.reward, s.train_store, s.mesh)
    state = trainer.init_state(stage_key(_train_seed(config), f"train/{run.key}"))
    B, P = int(config.train.prompts_per_step), s.train_prompts.num_prompts

    def batches(position: int):
        return s.train_prompts.batch(step_indices(P, B, position))

    def step_fn(state, batch):
        return trainer.step(state, *batch)

    with method_checkpointer(config, run_dir.path, run_dir.fingerprint, run.key) as ckpt, \
            MetricsWriter(method_dir) as metrics:
        start = ckpt.latest_step or 0
        target = steps if budget is None else min(steps, start + budget)
        logger.info("training %s %s: steps %d -> %d of %d", run.name, run.setting, start,
                    target, steps)
        state = train_loop(step_fn, state, batches, num_steps=target, checkpointer=ckpt,
                           metrics=metrics, log_every=int(config.train.log_every),
                           progress=s.progress, meta={"method": run.key})
    if target < steps:
        return None, target - start
    samples = sample_policy(s.sampler, state.full_params(), s.params, s.reward, s.test_prompts,
                            int(config.eval.samples_per_prompt),
                            stage_key(config.seed, f"eval/{run.key}"),
                            prompts_per_call=int(config.eval.prompts_per_call),
                            progress=s.progress, desc=f"evaluate {run.key}")
    point, kl_k3 = evaluate_samples(samples, s.test_refs_PxM, run.name, run.setting)
    if run_dir.is_main:
        test_prompts, test_tokens_PxL, test_mask_PxL = s.report
        write_samples(method_dir / "samples.jsonl", samples, test_tokens_PxL, test_mask_PxL,
                      test_prompts, s.tokenizer)
        records = read_metrics_jsonl(method_dir / "metrics.jsonl")
        keys = [k for k in _CURVE_KEYS if any(k in r for r in records)]
        plot_training_curves(method_dir / "training_curves.png", records, keys=keys,
                             title=f"{run.name} {run.setting}: training")
        changes = curve_changes(records, ("reward", "kl_k1"))
    else:
        changes = {}
    kl_PxK = np.where(samples.mask_PxKxT, samples.logp_PxKxT - samples.logp_ref_PxKxT,
                      0.0).sum(-1)
    record = {"method": run.name, "setting": run.setting, "key": run.key, "step": steps,
              "reward": list(point.reward), "kl_k1": list(point.kl), "kl_k3": list(kl_k3),
              "win_rate": list(point.win_rate),
              "eval_samples_per_prompt": int(config.eval.samples_per_prompt),
              # per test prompt, for the paired intervals of the frontier statistics
              "reward_per_prompt": samples.reward_PxK.mean(1).astype(float).tolist(),
              "kl_per_prompt": kl_PxK.mean(1).astype(float).tolist(),
              # relative change of the training curves over the last quarter of the steps
              "last_quarter_change": changes}
    run_dir.write_json(f"{run.key}/eval.json", record)
    return record, target - start


def _point(record: dict) -> EvalPoint:
    return EvalPoint(record["method"], record["setting"], Estimate(*record["reward"]),
                     Estimate(*record["kl_k1"]), Estimate(*record["win_rate"]))


def _frontier(records: list[dict], curve: BoNCurve, test_refs_PxM: np.ndarray,
              seed: int) -> tuple[FrontierStats | None, str | None]:
    """The frontier statistics of the evaluated methods, or None and why not."""
    usable = [r for r in records if "reward_per_prompt" in r]
    if not usable:
        return None, "no evaluated method has per-prompt results"
    ns_Q = curve.n.astype(np.int64)
    bon = BoNPerPrompt(curve.kl, bon_expected_max(test_refs_PxM, ns_Q))
    points = [PolicyPoint(r["method"], r["setting"], np.asarray(r["reward_per_prompt"]),
                          np.asarray(r["kl_per_prompt"])) for r in usable]
    try:
        return frontier_stats(points, bon, seed=seed), None
    except ValueError as e:
        return None, str(e)


def _frontier_lines(stats: FrontierStats | None, why: str | None) -> list[str]:
    if stats is None:
        return ["", f"Distance to the Best-of-N curve: not computed ({why})."]
    lo, hi = stats.kl_range
    pct = int(round(100 * stats.level))
    lines = ["", "## Distance to the Best-of-N curve", "",
             f"Mean of (method curve - BoN curve) over KL in [{lo:.3f}, {hi:.3f}] nats (one-point "
             f"methods: the gap at their KL); {pct} % intervals from {stats.num_resamples} paired "
             "bootstrap resamples of the test prompts.", "",
             f"| Method | Gap to BoN | {pct} % CI |", "| --- | --- | --- |"]
    lines += [f"| {g.family} | {g.gap:+.3f} | [{g.low:+.3f}, {g.high:+.3f}] |"
              for g in stats.families]
    if stats.comparisons:
        lines += [""] + [f"- {c.line()}" for c in stats.comparisons]
    if stats.beyond:
        lines += ["", f"Not compared: {', '.join(stats.beyond)} (every point's KL lies beyond the "
                  "Best-of-N curve's largest N, where the curve is not measured)."]
    return lines


def _background(path: str, reward_name: str) -> dict | None:
    """The results.json of ``config.background_results``, or None (with a warning when it is
    missing or was made with another reward)."""
    if not path:
        return None
    file = pathlib.Path(path).expanduser()
    if not file.is_file():
        logger.warning("config.background_results %s does not exist: the plot has no "
                       "background", path)
        return None
    results = json.loads(file.read_text())
    if results.get("reward") != reward_name:
        logger.warning("config.background_results %s was made with the reward %r, this run uses "
                       "%r: the plot has no background", path, results.get("reward"), reward_name)
        return None
    return results


def _method_row(record: dict, kl_k3: Estimate, gap: float | None, ci) -> str:
    """A trained method's row of results.md's second table (``ci``: its reward and KL
    intervals, or None; ``gap`` None: beyond the BoN curve)."""
    cis = "|" if ci is None else (f"[{ci[0][0]:.3f}, {ci[0][1]:.3f}] | "
                                  f"[{ci[1][0]:.3f}, {ci[1][1]:.3f}]")
    return (f"| {record['method']} | {record['setting']} | {kl_k3.mean:.3f} ± {kl_k3.stderr:.3f} "
            f"| {'beyond the curve' if gap is None else f'{gap:+.3f}'} | {cis} | "
            f"{_changes_cell(record.get('last_quarter_change') or {})} |")


def _changes_cell(changes: dict) -> str:
    """``+3 %, -12 % (not settled)``: the curves' last-quarter changes against 5 %."""
    if not changes:
        return ""
    cells = ", ".join(f"{100 * changes[k]:+.0f} %" for k in ("reward", "kl_k1") if k in changes)
    settled = all(abs(v) < SETTLED for v in changes.values())
    return cells + ("" if settled else " (not settled)")


def _write_report(run_dir: RunDirectory, config: Any,
                  inference: tuple[list[EvalPoint], list[EvalPoint]], curve: BoNCurve,
                  test_refs_PxM: np.ndarray, records: list[dict], reward_name: str,
                  complete: bool) -> tuple[tuple[EvalPoint, ...], dict, dict]:
    bon_points, selection_points = inference
    trained = [_point(r) for r in records]
    points = tuple(bon_points) + tuple(selection_points) + tuple(trained)
    gaps = {r["key"]: bon_gap(p, curve) for r, p in zip(records, trained, strict=True)}
    kl_k3 = {r["key"]: Estimate(*r["kl_k3"]) for r in records}
    if not run_dir.is_main:
        return points, kl_k3, gaps
    plot_reward_vs_kl(run_dir.path / "reward_vs_kl.png", points, bon_curve=curve,
                      reward_label=f"reward ({reward_name})",
                      title=f"IMDB sentiment, {config.model}: reward vs KL to pi_ref",
                      background=_background(str(config.background_results), reward_name))
    M, K = int(config.reference.samples), int(config.eval.samples_per_prompt)
    note = (f"{DEFAULT_NOTE} BoN rows: order statistics of M = {M} reference samples per test "
            f"prompt; Soft BoN rows: their unbiased reward and plug-in KL from the same rewards; "
            f"RBoN rows: reward and win rate with the samples ranked by r + beta log pi_ref. "
            f"Trained rows: {K} samples per test prompt; KL is the Monte-Carlo k1 estimate; the "
            f"win rate averages over all M reference samples as opponents.")
    lines = [f"# Results: {config.model}, reward {reward_name}", "",
             f"Run `{run_dir.run_id}`, {int(config.data.test_prompts)} test prompts, "
             f"{int(config.max_new_tokens)} new tokens, {int(config.train.steps)} training steps "
             f"of {int(config.train.prompts_per_step)} prompts per method.", "",
             results_table(points, note=note)]
    stats, why = _frontier(records, curve, test_refs_PxM, int(config.seed))
    if records:
        lines += ["", "| Method | Setting | KL k3 (nats) | Reward - BoN curve at same KL | "
                  "Reward 95 % CI | KL 95 % CI | Change over last quarter: reward, KL |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in records:
            ci = None if stats is None else stats.point_ci.get((r["method"], r["setting"]))
            lines.append(_method_row(r, kl_k3[r["key"]], gaps[r["key"]], ci))
        lines += _frontier_lines(stats, why)
    status = "complete" if complete else "INCOMPLETE (training budget reached; call again)"
    lines += ["", f"Status: {status}. Wall time: {run_dir.wall_seconds:.0f} s over "
              f"{len(run_dir.record['invocations'])} call(s) (see run.json)."]
    (run_dir.path / "results.md").write_text("\n".join(lines) + "\n")
    run_dir.write_json("results.json", {
        "run_id": run_dir.run_id, "complete": complete, "reward": reward_name,
        "bon": [{"setting": p.setting, "reward": list(p.reward), "kl": list(p.kl),
                 "win_rate": None if p.win_rate is None else list(p.win_rate)}
                for p in bon_points],
        "bon_curve": {"n": curve.n.tolist(), "kl": curve.kl.tolist(),
                      "reward": curve.reward.tolist()},
        "selection": selection_records(selection_points, curve),
        "methods": [{**r, "bon_gap": gaps[r["key"]]} for r in records],
        "frontier": None if stats is None else {
            "kl_range": list(stats.kl_range), "level": stats.level,
            "num_resamples": stats.num_resamples,
            "families": [dataclasses.asdict(g) for g in stats.families],
            "comparisons": [{**dataclasses.asdict(c), "line": c.line()}
                            for c in stats.comparisons],
            "beyond": list(stats.beyond)}})
    return points, kl_k3, gaps


def _prompts(config: Any, runs: list[MethodRun], tokenizer, pad_id: int, mesh,
             is_main: bool) -> tuple[PromptShard, PromptShard, tuple | None]:
    """This process's shares of the training and test prompts: the prompts of its rows of every
    global batch it takes part in (reference chunks, training steps, evaluation chunks). Process
    0 also gets the test prompts' ``(Prompts, tokens_PxL, mask_PxL)`` for the samples file."""
    data = {"source": Source(config.data.source), "min_tokens": int(config.data.min_tokens),
            "max_tokens": int(config.data.max_tokens), "seed": int(config.seed)}
    train = imdb_prompts(tokenizer, "train", int(config.data.train_prompts), **data)
    test = imdb_prompts(tokenizer, "test", int(config.data.test_prompts), **data)
    refs_per_call = int(config.reference.prompts_per_call)
    train_calls = [step_indices(len(train), int(config.train.prompts_per_step),
                                np.arange(int(config.train.steps)))]
    if any(r.needs_reference_cdf for r in runs):
        train_calls.append(chunk_indices(len(train), refs_per_call))
    test_calls = [chunk_indices(len(test), refs_per_call),
                  chunk_indices(len(test), int(config.eval.prompts_per_call))]
    train_shard = PromptShard.keep(*prompt_batch(train, tokenizer, pad_id), train_calls, mesh)
    test_tokens, test_mask = prompt_batch(test, tokenizer, pad_id)
    test_shard = PromptShard.keep(test_tokens, test_mask, test_calls, mesh)
    logger.info("process %d keeps %d of %d training prompts and %d of %d test prompts",
                jax.process_index(), len(train_shard.index_R), train_shard.num_prompts,
                len(test_shard.index_R), test_shard.num_prompts)
    return train_shard, test_shard, (test, test_tokens, test_mask) if is_main else None


def run_experiment(config: Any, run_dir: str | os.PathLike, *, step_budget: int | None = None,
                   progress: bool = True) -> ExperimentResult:
    """Runs (or continues) the experiment of ``config`` in ``run_dir`` (see the module doc).

    Args:
      config: an ``ml_collections.ConfigDict`` with the fields of
        ``experiments/configs/base.py``.
      run_dir: the run directory (created; refused if it belongs to another config).
      step_budget: train at most this many steps in this call (over all methods), then stop
        with checkpoints saved; a later call continues. None: run to the end.
      progress: show progress bars (process 0).

    Raises:
      ValueError: for an invalid config (naming the field), a run directory of another config,
        or a resumed run whose reward would differ.
      FileNotFoundError: when the sentiment reward artifact is missing (and no fallback is
        configured), naming the command that creates it.
    """
    started = time.perf_counter()
    runs = check_config(config)
    if step_budget is not None and step_budget < 0:
        raise ValueError(f"step_budget must be >= 0 or None, got {step_budget}")
    mesh = _mesh(config)
    run_dir = RunDirectory(run_dir, config)
    logger.info("run %s in %s", run_dir.run_id, run_dir.path)
    lm, params, tokenizer = load_policy(config.model, seed=int(config.seed), mesh=mesh)
    if config.compute_dtype != "float32":  # parameters stay float32
        lm, params = lm.with_dtypes(params, dtype=config.compute_dtype)
    reward, reward_name = load_reward(config.reward, tokenizer, config.reward_fallback,
                                      int(config.reward_max_length))
    reward = CompiledReward(reward)
    run_dir.check_reward(reward_name)

    train_shard, test_shard, report = _prompts(config, runs, tokenizer, lm.pad_id, mesh,
                                               run_dir.is_main)
    sampler = Sampler(lm, Temperature(1.0), int(config.max_new_tokens), mesh)

    cache_dir = (pathlib.Path(config.reference.cache_dir).expanduser()
                 if config.reference.cache_dir else run_dir.path / "references")

    def references(split: str, prompts: PromptShard) -> ReferenceSamples:
        return reference_samples_of_shard(
            sampler, params, reward, prompts, int(config.reference.samples),
            stage_key(config.seed, f"references/{split}"),
            prompts_per_call=int(config.reference.prompts_per_call),
            samples_per_call=int(config.reference.samples_per_call),
            cache_dir=cache_dir, progress=progress and run_dir.is_main,
            fingerprint={"model": config.model, "reward": reward_name, "split": split})

    logger.info("reference samples of the %d test prompts", test_shard.num_prompts)
    test_samples = references("test", test_shard)
    inference = reference_points(config, test_samples)
    test_refs = test_samples.rewards_PxM
    curve = bon_curve(test_refs)
    train_store = None
    if any(r.needs_reference_cdf for r in runs):
        logger.info("reference samples of the %d training prompts", train_shard.num_prompts)
        train_refs = references("train", train_shard).rewards_PxM
        if mesh is not None:  # a global array: an argument of the multi-process rollout
            train_refs = distributed.global_array(train_refs, mesh, shd.replicated(mesh))
        train_store = reference_store(train_refs)

    setup = _Setup(config, run_dir, lm, params, tokenizer, reward, mesh, sampler, train_shard,
                   train_store, test_shard, test_refs, report, progress)
    budget = step_budget
    records, complete = [], True
    for run in runs:
        record, taken = _train_and_evaluate(run, setup, budget)
        gc.collect()  # the finished method's trainer, state and compiled update
        if budget is not None:
            budget -= taken
        if record is None:
            complete = False
            break
        records.append(record)
    wall = time.perf_counter() - started
    run_dir.finish(wall, complete)
    points, kl_k3, gaps = _write_report(run_dir, config, inference, curve, test_refs, records,
                                        reward_name, complete)
    return ExperimentResult(run_dir.path, run_dir.run_id, complete, points, kl_k3, gaps, wall)
