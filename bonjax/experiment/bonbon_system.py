"""``run_bonbon_system``: the BoNBoN paper's system end to end, resumable (Gui, Garbacea, Veitch
2024, arXiv 2406.00832, Sec. 5).

1. Check the config (:func:`~bonjax.experiment.bonbon_config.check_bonbon_config`: an n above
   the pool's N, an SFT stage on data without responses, ... a ValueError naming the field) and
   read the text records (a missing file or field, a dialogue without an Assistant turn: an
   error naming the file and line), all before any model loads. Open the run directory.
2. Load the policy and the reward model (and the held-out scorer); tokenise the prompts. When
   ``config.pool.file`` names an existing pool drawn from another pi_ref or reward, refuse it
   now, naming both, before any training or sampling.
3. SFT (``run_dir/sft``): :class:`~bonjax.training.sft.SupervisedFineTuning` on the records'
   responses for ``ceil(sft.epochs P / sft.prompts_per_step)`` steps. Its final parameters are
   pi_ref of every later stage; off (``config.sft.enabled``), pi_ref is ``config.model``.
4. Pools (``run_dir/pool``, or ``config.pool.file``): N samples of pi_ref per training prompt
   with their rewards and pi_ref log-probabilities
   (:class:`~bonjax.training.reference_pool.ReferencePool`; the best and worst of the first n
   draws are the pairs of every n), and M per held-out prompt (the win-rate opponents and the
   Best-of-n points). Their fingerprints name pi_ref: ``config.model``, after SFT with the
   fingerprint of every config field the SFT parameters depend on (:func:`reference_id`).
5. Methods (``run_dir/<key>``): each :class:`~bonjax.experiment.bonbon_config.SystemRun` trains
   from pi_ref on its fixed data (``pool.pairs(n)`` or ``pool.best_responses(n)``) for
   ``ceil(train.epochs P / train.prompts_per_step)`` steps, the P prompts in order, wrapping
   around; then samples K completions per held-out prompt, scored by the reward, pi_ref and
   the held-out scorer (:mod:`~bonjax.experiment.bonbon_report`: win rate, KL, off-target).
6. Report: ``results.md``, ``results.json``, ``win_rate_vs_kl.png``.

Every training stage runs through :func:`bonjax.training.train_loop` with the checkpoints and
metrics of :func:`~bonjax.experiment.run.method_checkpointer`; ``step_budget`` counts the steps
of all stages, and a later call with the same config and directory continues where the last
stopped (a finished stage is restored, not retrained; the pools are read from their files).

Several JAX processes run the same calls on one mesh as :func:`~bonjax.experiment.run_experiment`
does: each keeps the prompts of its rows of every global batch (``PromptShard``), process 0
writes the run directory's files, every process its checkpoint shards.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import pathlib
import time
from typing import Any

import numpy as np
from flax import nnx

from bonjax import distributed
from bonjax.evaluation import curve_changes, plot_training_curves, read_metrics_jsonl
from bonjax.experiment.bonbon_config import SystemRun, check_bonbon_config, stage_steps
from bonjax.experiment.bonbon_data import PromptTable, SystemData, read_records, system_data
from bonjax.experiment.bonbon_report import bon_rows, policy_row, pool_rows, write_report
from bonjax.experiment.components import (
    CompiledReward,
    config_mesh,
    load_policy,
    load_scorer,
    stage_key,
)
from bonjax.experiment.evaluate import sample_policy, score_completions, write_samples
from bonjax.experiment.run import method_checkpointer
from bonjax.experiment.rundir import RunDirectory
from bonjax.fingerprint import config_fingerprint
from bonjax.models.decoder import DecoderLM
from bonjax.prompt_shard import PromptShard, chunk_indices, step_indices
from bonjax.sampling.sampler import Sampler
from bonjax.sampling.strategies import Temperature
from bonjax.training import MetricsWriter, OptimizerConfig, Trainer, train_loop
from bonjax.training.reference_pool import (
    PoolFingerprint,
    ReferencePool,
    reference_pool_of_shard,
)
from bonjax.training.sft import SupervisedFineTuning
from bonjax.training.state import TrainState

__all__ = ["SFT_KEY", "SystemResult", "reference_id", "reference_policy", "run_bonbon_system"]

logger = logging.getLogger(__name__)

SFT_KEY = "sft"  # the SFT stage's directory under the run directory
POOL_DIR = "pool"
BON_RECORD = "bon/eval.json"
_CURVE_KEYS = ("loss", "log_ratio_margin", "grad_norm")
_OPTIMIZER_FIELDS = ("b1", "b2", "weight_decay", "max_grad_norm", "train_top", "cosine_decay")


@dataclasses.dataclass(frozen=True)
class SystemResult:
    """What one call of :func:`run_bonbon_system` left in the run directory.

    Attributes:
      run_dir, run_id: the run directory and its id (the same for every call on it).
      complete: False when ``step_budget`` stopped a training stage (call again to continue).
      reference: pi_ref's name in the pools' fingerprints (:func:`reference_id`).
      bon: the Best-of-n rows (empty when the budget stopped the SFT stage).
      methods: one row per evaluated trained policy (``bonbon_report``'s columns).
      wall_seconds: this call's wall time.
    """

    run_dir: pathlib.Path
    run_id: str
    complete: bool
    reference: str
    bon: tuple[dict, ...]
    methods: tuple[dict, ...]
    wall_seconds: float


def reference_id(config: Any) -> str:
    """pi_ref's name in the pools' fingerprints: ``config.model``, or with the SFT stage
    ``"<model> after SFT <hash>"``, the hash of every config field its parameters depend on
    (model, dtype, seed, data, ``config.sft`` and the shared optimiser fields), so a pool file
    shared between runs is reused exactly when their pi_ref is the same."""
    if not config.sft.enabled:
        return str(config.model)
    determines = {"model": config.model, "compute_dtype": config.compute_dtype,
                  "seed": config.seed, "data": config.data.to_dict(),
                  "sft": config.sft.to_dict(),
                  "optimizer": {name: config.train[name] for name in _OPTIMIZER_FIELDS}}
    return f"{config.model} after SFT {config_fingerprint(determines)}"


def _optimizer(config: Any, learning_rate: float, steps: int) -> OptimizerConfig:
    t = config.train
    return OptimizerConfig(
        learning_rate=float(learning_rate), b1=float(t.b1), b2=float(t.b2),
        weight_decay=float(t.weight_decay),
        max_grad_norm=float(t.max_grad_norm) if t.max_grad_norm > 0 else None,
        epochs=1,  # the collected batch is a table lookup: one update per step
        train_top=int(t.train_top) or None, decay_steps=steps if t.cosine_decay else None)


def _trainer(config: Any, lm, ref_params: nnx.State, method, data, mesh, learning_rate: float,
             steps: int) -> Trainer:
    if mesh is not None and data is not None:
        data = data.on_mesh(mesh)
    return Trainer(lm, ref_params, method, None, max_new_tokens=int(config.max_new_tokens),
                   optimizer=_optimizer(config, learning_rate, steps), mesh=mesh, data=data,
                   jit_collect=True if mesh is not None else None,
                   score_chunks=int(config.train.score_chunks))


def _sft_steps(config: Any) -> int:
    return stage_steps(config.sft.epochs, config.data.train_prompts, config.sft.prompts_per_step)


def _train_steps(config: Any) -> int:
    return stage_steps(config.train.epochs, config.data.train_prompts,
                       config.train.prompts_per_step)


def _load_policy(config: Any, mesh):
    lm, params, tokenizer = load_policy(config.model, seed=int(config.seed), mesh=mesh)
    if config.compute_dtype != "float32":  # parameters stay float32
        lm, params = lm.with_dtypes(params, dtype=config.compute_dtype)
    if config.remat != lm.config.remat:  # the same parameters; only the backward pass changes
        lm, _ = DecoderLM.abstract(dataclasses.replace(lm.config, remat=config.remat))
    return lm, params, tokenizer


@dataclasses.dataclass(frozen=True, eq=False)
class _System:
    """What every stage reads (loaded once per call)."""

    config: Any
    run_dir: RunDirectory
    lm: Any
    tokenizer: Any
    mesh: Any
    sampler: Sampler
    reward: Any
    reward_name: str
    holdout: Any
    data: SystemData
    train: PromptShard
    test: PromptShard
    progress: bool


def _train(s: _System, key: str, trainer: Trainer, steps: int, per_step: int,
           budget: int | None) -> tuple[TrainState | None, int]:
    """Trains the stage ``key`` to ``steps`` steps, resuming its checkpoints, at most ``budget``
    steps in this call. Returns the final state (None when the budget ran out first) and the
    number of steps this call took."""
    config, run_dir = s.config, s.run_dir
    P = s.train.num_prompts

    def batches(position: int):
        return s.train.batch(step_indices(P, per_step, position))

    def step_fn(state, batch):
        return trainer.step(state, *batch)

    with method_checkpointer(config, run_dir.path, run_dir.fingerprint, key) as ckpt:
        start = ckpt.latest_step or 0
        target = steps if budget is None else min(steps, start + budget)
        if target == start < steps:
            return None, 0
        logger.info("training %s: steps %d -> %d of %d", key, start, target, steps)
        with MetricsWriter(run_dir.path / key) as metrics:
            state = train_loop(step_fn, trainer.init_state(stage_key(config.seed, f"train/{key}")),
                               batches, num_steps=target, checkpointer=ckpt, metrics=metrics,
                               log_every=int(config.train.log_every), progress=s.progress,
                               meta={"stage": key})
    return (state if target == steps else None), target - start


def _curves(s: _System, key: str, title: str) -> dict:
    """Process 0 plots a stage's training curves; its curves' last-quarter changes."""
    if not s.run_dir.is_main:
        return {}
    records = read_metrics_jsonl(s.run_dir.path / key / "metrics.jsonl")
    keys = [k for k in _CURVE_KEYS if any(k in r for r in records)]
    if keys:
        plot_training_curves(s.run_dir.path / key / "training_curves.png", records, keys=keys,
                             title=title)
    return curve_changes(records, [k for k in keys if k != "grad_norm"])


def _sft_stage(s: _System, params: nnx.State, budget: int | None):
    """pi_ref: the SFT stage's final parameters (None if the budget stopped it), its summary
    and the steps this call took."""
    config = s.config
    steps = _sft_steps(config)
    trainer = _trainer(config, s.lm, params, SupervisedFineTuning(), s.data.sft_responses,
                       s.mesh, config.sft.learning_rate, steps)
    state, taken = _train(s, SFT_KEY, trainer, steps, int(config.sft.prompts_per_step), budget)
    summary = {"steps": steps, "prompts_per_step": int(config.sft.prompts_per_step)}
    if state is None:
        return None, summary, taken
    changes = _curves(s, SFT_KEY, "SFT stage: training")
    if s.run_dir.is_main:
        losses = [r["loss"] for r in read_metrics_jsonl(s.run_dir.path / SFT_KEY /
                                                        "metrics.jsonl") if "loss" in r]
        summary.update(final_loss=losses[-1] if losses else None, last_quarter_change=changes)
    return state.full_params(), summary, taken


def _pool(s: _System, ref_params: nnx.State, prompts: PromptShard, num_samples: int,
          split: str, ns, ref_name: str, cache_file: str = "") -> ReferencePool:
    config = s.config
    cache = ({"cache_file": pathlib.Path(cache_file).expanduser()} if cache_file else
             {"cache_dir": s.run_dir.path / POOL_DIR})
    return reference_pool_of_shard(
        s.sampler, ref_params, s.reward, prompts, num_samples,
        stage_key(config.seed, f"pool/{split}"), ns=ns, model_id=ref_name,
        reward_id=s.reward_name, prompts_per_call=int(config.pool.prompts_per_call),
        samples_per_call=int(config.pool.samples_per_call),
        progress=s.progress and s.run_dir.is_main, **cache)


def _check_pool_file(s: _System, ref_name: str) -> None:
    """Refuses ``config.pool.file`` now if it holds a pool of other inputs (process 0 reads
    it; every process raises the same error)."""
    config = s.config
    if not config.pool.file:
        return
    fingerprint = PoolFingerprint.of(
        s.sampler, s.train, int(config.pool.samples), stage_key(config.seed, "pool/train"),
        model_id=ref_name, reward_id=s.reward_name,
        prompts_per_call=int(config.pool.prompts_per_call),
        samples_per_call=int(config.pool.samples_per_call))
    error = None
    if distributed.is_main_process():
        try:
            fingerprint.check_file(pathlib.Path(config.pool.file).expanduser())
        except ValueError as err:
            error = f"config.pool.file: {err}"
    error = distributed.broadcast_json(error)
    if error is not None:
        raise ValueError(error)


def _bon(s: _System, test_pool: ReferencePool) -> list[dict]:
    """The Best-of-n rows, computed once (the held-out scorer reads every reference sample)."""
    record = s.run_dir.finished_record(BON_RECORD, 0)
    if record is not None:
        return record["rows"]
    config = s.config
    holdout = None if s.holdout is None else score_completions(
        s.holdout, s.test, test_pool.tokens_PxNxT, test_pool.mask_PxNxT,
        prompts_per_call=int(config.eval.prompts_per_call))
    rows = bon_rows(test_pool, tuple(config.eval.bon_ns), s.lm.eos_id, holdout)
    s.run_dir.write_json(BON_RECORD, {"step": 0, "rows": rows})
    return rows


def _method(s: _System, run: SystemRun, ref_params: nnx.State, pool: ReferencePool,
            test_pool: ReferencePool, budget: int | None) -> tuple[dict | None, int]:
    """Trains one method on its fixed data (resuming) and evaluates it; its row (None when the
    budget ran out first) and the steps this call took."""
    config, run_dir = s.config, s.run_dir
    steps = _train_steps(config)
    record = run_dir.finished_record(f"{run.key}/eval.json", steps)
    if record is not None:
        return record, 0
    trainer = _trainer(config, s.lm, ref_params, run.method, run.data(pool), s.mesh,
                       config.train.learning_rate, steps)
    state, taken = _train(s, run.key, trainer, steps, int(config.train.prompts_per_step), budget)
    if state is None:
        return None, taken
    K = int(config.eval.samples_per_prompt)
    samples = sample_policy(s.sampler, state.full_params(), ref_params, s.reward, s.test, K,
                            stage_key(config.seed, f"eval/{run.key}"),
                            prompts_per_call=int(config.eval.prompts_per_call),
                            progress=s.progress, desc=f"evaluate {run.key}")
    holdout = None if s.holdout is None else score_completions(
        s.holdout, s.test, samples.tokens_PxKxT, samples.mask_PxKxT,
        prompts_per_call=int(config.eval.prompts_per_call))
    row = policy_row(run.key, run.name, run.setting, run.n, samples, test_pool.reward_PxN,
                     s.lm.eos_id, holdout)
    if run_dir.is_main:
        test: PromptTable = s.data.test
        write_samples(run_dir.path / run.key / "samples.jsonl", samples, test.tokens_PxL,
                      test.mask_PxL, test, s.tokenizer)
    row.update(step=steps, last_quarter_change=_curves(s, run.key,
                                                       f"{run.name} {run.setting}: training"))
    run_dir.write_json(f"{run.key}/eval.json", row)
    return row, taken


def _shards(config: Any, data: SystemData, mesh) -> tuple[PromptShard, PromptShard]:
    """This process's shares of the training and held-out prompts: its rows of every global
    batch of the stages (pool chunks, SFT and training steps, evaluation chunks)."""
    P, Q = len(data.train), len(data.test)
    per_call = int(config.pool.prompts_per_call)
    train_calls = [chunk_indices(P, per_call),
                   step_indices(P, int(config.train.prompts_per_step),
                                np.arange(_train_steps(config)))]
    if config.sft.enabled:
        train_calls.append(step_indices(P, int(config.sft.prompts_per_step),
                                        np.arange(_sft_steps(config))))
    test_calls = [chunk_indices(Q, per_call), chunk_indices(Q, int(config.eval.prompts_per_call))]
    return (PromptShard.keep(data.train.tokens_PxL, data.train.mask_PxL, train_calls, mesh),
            PromptShard.keep(data.test.tokens_PxL, data.test.mask_PxL, test_calls, mesh))


def _facts(config: Any, s: _System, ref_name: str, holdout_name: str | None) -> list[str]:
    sft = (f"SFT on the records' responses, {_sft_steps(config)} steps" if config.sft.enabled
           else "no SFT stage")
    return [f"Run `{s.run_dir.run_id}`. Data: {s.data.description}; {len(s.data.train)} "
            f"training and {len(s.data.test)} held-out prompts. pi_ref: {ref_name} ({sft}). "
            f"Reward: {s.reward_name}; held-out scorer: {holdout_name or 'none'}.",
            "",
            f"Pool: N = {int(config.pool.samples)} samples of pi_ref per training prompt, "
            f"{int(config.max_new_tokens)} new tokens; each method trains "
            f"{_train_steps(config)} steps of {int(config.train.prompts_per_step)} prompts "
            f"({int(config.train.epochs)} pass{'' if config.train.epochs == 1 else 'es'} over "
            "the pairs). Evaluation: "
            f"{int(config.eval.samples_per_prompt)} samples per held-out prompt against "
            f"M = {int(config.eval.reference_samples)} pi_ref samples."]


def run_bonbon_system(config: Any, run_dir: str | os.PathLike, *,
                      step_budget: int | None = None, progress: bool = True) -> SystemResult:
    """Runs (or continues) the BoNBoN system of ``config`` in ``run_dir`` (the module doc).

    Args:
      config: an ``ml_collections.ConfigDict`` with the fields of
        ``experiments/configs/bonbon_base.py``.
      run_dir: the run directory (created; refused if it belongs to another config).
      step_budget: train at most this many steps in this call (over all stages, the SFT stage
        included), then stop with checkpoints saved; a later call continues. None: to the end.
      progress: show progress bars (process 0).

    Raises:
      ValueError: for an invalid config (naming the field), a malformed data record (naming the
        file and line), a run directory of another config, a resumed run whose reward would
        differ, or a pool file drawn from another pi_ref or reward (naming both).
      FileNotFoundError: for a missing data file or reward artifact.
    """
    started = time.perf_counter()
    runs = check_bonbon_config(config)
    if step_budget is not None and step_budget < 0:
        raise ValueError(f"step_budget must be >= 0 or None, got {step_budget}")
    records = read_records(config)  # bad files fail here, before any model loads
    batch_sizes = {"config.train.prompts_per_step": int(config.train.prompts_per_step)}
    if config.sft.enabled:
        batch_sizes["config.sft.prompts_per_step"] = int(config.sft.prompts_per_step)
    mesh = config_mesh(tuple(config.mesh_shape), batch_sizes)
    run_dir = RunDirectory(run_dir, config)
    logger.info("run %s in %s", run_dir.run_id, run_dir.path)
    lm, params, tokenizer = _load_policy(config, mesh)
    max_length = int(config.reward_max_length)
    reward, reward_name = load_scorer(config.reward, tokenizer, max_length, mesh)
    run_dir.check_reward(reward_name)
    holdout, holdout_name = (None, None) if not config.holdout_reward else load_scorer(
        config.holdout_reward, tokenizer, max_length, mesh)
    data = system_data(config, records, tokenizer, lm)
    train, test = _shards(config, data, mesh)
    s = _System(config, run_dir, lm, tokenizer, mesh,
                Sampler(lm, Temperature(1.0), int(config.max_new_tokens), mesh),
                CompiledReward(reward), reward_name,
                None if holdout is None else CompiledReward(holdout), data, train, test,
                progress)
    ref_name = reference_id(config)
    _check_pool_file(s, ref_name)

    budget, complete = step_budget, True
    bon, rows, pool_summary, sft_summary = [], [], [], None
    ref_params = params
    if config.sft.enabled:
        ref_params, sft_summary, taken = _sft_stage(s, params, budget)
        del params
        gc.collect()  # the SFT stage's trainer and optimiser state
        budget = None if budget is None else budget - taken
        complete = ref_params is not None
    if complete:
        logger.info("pools of pi_ref samples: %d training and %d held-out prompts",
                    train.num_prompts, test.num_prompts)
        pool = _pool(s, ref_params, train, int(config.pool.samples), "train",
                     sorted({r.n for r in runs}), ref_name, str(config.pool.file))
        test_pool = _pool(s, ref_params, test, int(config.eval.reference_samples), "test",
                          tuple(config.eval.bon_ns), ref_name)
        pool_summary = pool_rows(pool)
        bon = _bon(s, test_pool)
        for run in runs:
            row, taken = _method(s, run, ref_params, pool, test_pool, budget)
            gc.collect()  # the finished method's trainer, state and compiled update
            budget = None if budget is None else budget - taken
            if row is None:
                complete = False
                break
            rows.append(row)
    wall = time.perf_counter() - started
    run_dir.finish(wall, complete)
    write_report(run_dir, title=f"BoNBoN system: {config.model}, {config.data.source}",
                 facts=_facts(config, s, ref_name, holdout_name), bon=bon, methods=rows,
                 pool=pool_summary, sft=sft_summary,
                 summary={"reward": reward_name, "holdout_reward": holdout_name,
                          "reference": ref_name}, complete=complete)
    return SystemResult(run_dir.path, run_dir.run_id, complete, ref_name, tuple(bon),
                        tuple(rows), wall)


def reference_policy(config: Any, run_dir: str | os.PathLike, *, mesh=None):
    """``(lm, params, tokenizer)`` of a run's pi_ref: ``config.model``, or, with the SFT stage,
    its parameters restored from the stage's final checkpoint in ``run_dir``.

    Raises:
      ValueError: when the SFT stage of ``run_dir`` has not finished.
    """
    check_bonbon_config(config)
    lm, params, tokenizer = _load_policy(config, mesh)
    if not config.sft.enabled:
        return lm, params, tokenizer
    steps = _sft_steps(config)
    trainer = _trainer(config, lm, params, SupervisedFineTuning(), None, mesh,
                       config.sft.learning_rate, steps)
    state = trainer.init_state(stage_key(config.seed, f"train/{SFT_KEY}"))
    with method_checkpointer(config, pathlib.Path(run_dir), config_fingerprint(config),
                             SFT_KEY) as ckpt:
        if ckpt.latest_step != steps:
            raise ValueError(f"the SFT stage of {run_dir} has not finished: its latest "
                             f"checkpoint is of step {ckpt.latest_step}, of {steps}")
        state, _, _ = ckpt.restore_latest(state)
    return lm, state.full_params(), tokenizer
