"""The BoNBoN system's configuration: its check, and the sweep of methods trained on fixed pairs.

``config.methods`` names methods of :data:`SYSTEM_METHODS`, each swept through its section
(``experiments/configs/bonbon_base.py``)::

    config.bonbon.ns = (2, 8)            # BoNBoN on the best and worst of n: one policy per n
    config.dpo.betas = (0.1,)            # DPO on the pairs of config.dpo.n: one per beta and
    config.dpo.length_normalised = (False, True)   # per log-ratio form (sum or length-mean)
    config.ipo.betas = (0.1,)            # IPO, the same
    config.sft_best.ns = (8,)            # SFT on the best of n: one per n

:func:`system_runs` turns that into :class:`SystemRun` values: the run directory name, the
method and setting as tables show them (the registry's titles: "DPO (length-normalised)"), the
n whose pool data it trains on, and the :class:`~bonjax.training.Method`
(:class:`~bonjax.training.fixed_pairs.FixedPairs` with the objective, or
:class:`~bonjax.training.sft.SupervisedFineTuning` on the best responses).
:func:`check_bonbon_config` checks every field the pipeline reads, so a bad value (an n larger
than the pool's N, an SFT stage on data without responses) fails before anything loads.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from bonjax import objectives as obj
from bonjax.checks import config_field, config_int, is_int
from bonjax.data.hh import HH_SUBSETS
from bonjax.data.imdb import Source
from bonjax.experiment.bonbon_data import SOURCES
from bonjax.experiment.components import check_dtype_and_mesh
from bonjax.models.remat import REMAT_POLICIES
from bonjax.training.fixed_pairs import FixedPairs, PairTable
from bonjax.training.reference_pool import ReferencePool
from bonjax.training.registry import METHODS
from bonjax.training.sft import ResponseTable, SupervisedFineTuning

__all__ = ["SYSTEM_METHODS", "SystemRun", "check_bonbon_config", "stage_steps",
           "system_runs"]

SYSTEM_METHODS = ("bonbon", "dpo", "ipo", "sft_best")


@dataclasses.dataclass(frozen=True)
class SystemRun:
    """One trained policy of the system.

    Attributes:
      key: its directory under the run directory (``"bonbon-n8"``,
        ``"dpo-length-normalised-beta0.1"``, ``"sft_best-n8"``).
      name: the method as plots and tables show it (``"BoNBoN"``, ``"DPO (length-normalised)"``).
      setting: what distinguishes it within the method (``"n=8"``, ``"beta=0.1, n=8"``).
      n: the pool's pairs (or best responses) it trains on are those of the first n draws.
      method: ``FixedPairs(objective)`` or ``SupervisedFineTuning()``.
    """

    key: str
    name: str
    setting: str
    n: int
    method: FixedPairs | SupervisedFineTuning

    def data(self, pool: ReferencePool) -> PairTable | ResponseTable:
        """Its fixed data set: the best-and-worst pairs of n, or the best responses of n."""
        if isinstance(self.method, SupervisedFineTuning):
            return pool.best_responses(self.n)
        return pool.pairs(self.n)


def stage_steps(epochs: int, num_prompts: int, per_step: int) -> int:
    """Steps of ``epochs`` passes over ``num_prompts`` prompts, ``per_step`` per step:
    ``ceil(epochs * num_prompts / per_step)``."""
    return -(-int(epochs) * int(num_prompts) // int(per_step))


def _sweep(config: Any, dotted: str) -> tuple:
    values = tuple(config_field(config, dotted))
    if not values:
        raise ValueError(f"config.{dotted} is empty but {dotted.split('.')[0]!r} is in "
                         "config.methods: give at least one value or drop the method")
    if len(set(values)) != len(values):
        raise ValueError(f"config.{dotted} = {values} repeats a value")
    return values


def _objective(section: str, make, **fields):
    try:
        return make(**fields)
    except ValueError as err:
        raise ValueError(f"config.{section}: {err}") from None


def system_runs(config: Any) -> list[SystemRun]:
    """The trained policies of ``config``, in the order of ``config.methods`` and each sweep.

    Raises:
      ValueError: naming an unknown or repeated method, an empty sweep or an invalid setting.
    """
    names = tuple(config_field(config, "methods"))
    if not names:
        raise ValueError("config.methods is empty: name at least one of "
                         + ", ".join(SYSTEM_METHODS))
    if len(set(names)) != len(names):
        raise ValueError(f"config.methods = {names} names a method twice")
    runs: list[SystemRun] = []
    for name in names:
        if name not in SYSTEM_METHODS:
            raise ValueError(f"unknown method {name!r} in config.methods; the BoNBoN system "
                             f"trains {', '.join(SYSTEM_METHODS)}")
        if name == "bonbon":
            alpha = config_field(config, "bonbon.alpha")
            for n in _sweep(config, "bonbon.ns"):
                objective = _objective("bonbon", obj.BoNBoNConfig, n=n, alpha=alpha)
                runs.append(SystemRun(f"bonbon-n{n}", METHODS["bonbon"].title(objective),
                                      f"n={n}", n, FixedPairs(objective)))
        elif name == "sft_best":
            for n in _sweep(config, "sft_best.ns"):
                if not is_int(n) or n < 1:
                    raise ValueError(f"config.sft_best.ns holds {n!r}: each n must be an "
                                     "integer >= 1")
                runs.append(SystemRun(f"sft_best-n{n}", "SFT-on-best", f"n={n}", n,
                                      SupervisedFineTuning()))
        else:
            spec = METHODS[name]
            n = config_int(config, f"{name}.n", 2)
            for normalised in _sweep(config, f"{name}.length_normalised"):
                if not isinstance(normalised, bool):
                    raise ValueError(f"config.{name}.length_normalised holds {normalised!r}: "
                                     "each entry must be True or False")
                for beta in _sweep(config, f"{name}.betas"):
                    objective = _objective(name, spec.objective, beta=beta,
                                           length_normalised=normalised)
                    variant = spec.variant(objective)
                    key = name + (f"-{variant}" if variant else "") + f"-beta{beta:g}"
                    runs.append(SystemRun(key, spec.title(objective), f"beta={beta:g}, n={n}",
                                          n, FixedPairs(objective)))
    return runs


def _check_number(config: Any, dotted: str, *, positive: bool = False,
                  below_one: bool = False) -> float:
    value = config_field(config, dotted)
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not math.isfinite(value) or value < 0 or (positive and value == 0) or \
            (below_one and value >= 1):
        bound = "> 0" if positive else ">= 0"
        bound += " and < 1" if below_one else ""
        raise ValueError(f"config.{dotted} must be a finite number {bound}, got {value!r}")
    return float(value)


def _check_strings(config: Any, dotted: str) -> tuple[str, ...]:
    values = config_field(config, dotted)
    if isinstance(values, str) or any(not isinstance(v, str) or not v for v in values):
        raise ValueError(f"config.{dotted} must be a tuple of non-empty strings, got {values!r}")
    return tuple(values)


def _check_bool(config: Any, dotted: str) -> bool:
    value = config_field(config, dotted)
    if not isinstance(value, bool):
        raise ValueError(f"config.{dotted} must be True or False, got {value!r}")
    return value


def _check_data(config: Any) -> int:
    """Checks config.data; returns P, the number of training prompts."""
    source = config_field(config, "data.source")
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r} in config.data.source; choose one of "
                         f"{', '.join(SOURCES)}")
    for split in ("train", "test"):
        files = _check_strings(config, f"data.{split}_files")
        if source == "tldr" and not files:
            raise ValueError(f"config.data.{split}_files is empty: TL;DR records are read from "
                             "local JSONL files (OpenAI's tldr_3_filtered/*.jsonl format)")
    subsets = _check_strings(config, "data.hh_subsets")
    if source == "hh" and (not subsets or set(subsets) - set(HH_SUBSETS)):
        raise ValueError(f"config.data.hh_subsets = {subsets} must name subsets among "
                         f"{', '.join(HH_SUBSETS)}")
    imdb_sources = [s.value for s in Source]
    if config_field(config, "data.imdb_source") not in imdb_sources:
        raise ValueError(f"unknown IMDB source {config.data.imdb_source!r} in "
                         f"config.data.imdb_source; choose one of {', '.join(imdb_sources)}")
    train_prompts = config_int(config, "data.train_prompts", 1)
    config_int(config, "data.test_prompts", 2)  # standard errors need two prompts
    config_int(config, "data.max_prompt_tokens", 2)  # BOS and one token
    config_int(config, "data.max_response_tokens", 1)
    min_tokens = config_int(config, "data.min_tokens", 1)
    if config_int(config, "data.max_tokens", 1) < min_tokens:
        raise ValueError(f"config.data.max_tokens {config.data.max_tokens} is below "
                         f"config.data.min_tokens {min_tokens}")
    return train_prompts


def _check_per_step(config: Any, dotted: str, train_prompts: int) -> None:
    per_step = config_int(config, dotted, 1)
    if per_step > train_prompts:
        raise ValueError(f"config.{dotted} {per_step} exceeds the {train_prompts} training "
                         "prompts (config.data.train_prompts)")


def check_bonbon_config(config: Any) -> list[SystemRun]:
    """Checks every field the BoNBoN system reads; returns its trained policies.

    Raises:
      ValueError: naming the first missing or invalid field: an unknown data source, method or
        dtype, an n larger than the pool's N, Best-of-n points beyond the held-out reference
        samples, an SFT stage on data without responses, sizes out of range.
    """
    model = config_field(config, "model")
    if not isinstance(model, str) or not model:
        raise ValueError(f"config.model must name a model, got {model!r}")
    reward = config_field(config, "reward")
    if not isinstance(reward, str) or not reward:
        raise ValueError(f"config.reward must name a reward, got {reward!r}")
    if not isinstance(config_field(config, "holdout_reward"), str):
        raise ValueError(f"config.holdout_reward must name a reward or be '', got "
                         f"{config.holdout_reward!r}")
    if config_field(config, "remat") not in REMAT_POLICIES:
        raise ValueError(f"config.remat must be one of {', '.join(REMAT_POLICIES)}, got "
                         f"{config.remat!r}")
    check_dtype_and_mesh(config)
    config_int(config, "seed", 0)
    config_int(config, "reward_max_length", 0)
    config_int(config, "max_new_tokens", 1)
    train_prompts = _check_data(config)

    sft = _check_bool(config, "sft.enabled")
    if sft and config.data.source == "imdb":
        raise ValueError("config.sft.enabled is True but config.data.source 'imdb' has no "
                         "responses to fine-tune on: set config.sft.enabled=False (pi_ref is "
                         "then config.model)")
    config_int(config, "sft.epochs", 1)
    if sft:
        _check_per_step(config, "sft.prompts_per_step", train_prompts)
    config_int(config, "sft.prompts_per_step", 1)
    _check_number(config, "sft.learning_rate", positive=True)

    N = config_int(config, "pool.samples", 2)
    config_int(config, "pool.prompts_per_call", 1)
    config_int(config, "pool.samples_per_call", 1)
    if not isinstance(config_field(config, "pool.file"), str):
        raise ValueError(f"config.pool.file must be a path or '', got {config.pool.file!r}")

    runs = system_runs(config)
    for run in runs:
        if run.n > N:
            section = run.key.split("-")[0]
            field = f"{section}.n" if section in ("dpo", "ipo") else f"{section}.ns"
            raise ValueError(f"config.{field} asks for n = {run.n}, more than the pool's N = "
                             f"{N} samples per prompt (config.pool.samples): the best and worst "
                             "of n need n <= N draws")

    config_int(config, "train.epochs", 1)
    _check_per_step(config, "train.prompts_per_step", train_prompts)
    _check_number(config, "train.learning_rate", positive=True)
    _check_number(config, "train.b1", below_one=True)
    _check_number(config, "train.b2", below_one=True)
    _check_number(config, "train.weight_decay")
    _check_number(config, "train.max_grad_norm")
    config_int(config, "train.train_top", 0)
    config_int(config, "train.score_chunks", 1)
    _check_bool(config, "train.cosine_decay")
    config_int(config, "train.save_every", 1)
    config_int(config, "train.keep_checkpoints", 1)
    config_int(config, "train.log_every", 1)

    M = config_int(config, "eval.reference_samples", 2)
    config_int(config, "eval.samples_per_prompt", 1)
    config_int(config, "eval.prompts_per_call", 1)
    ns = tuple(config_field(config, "eval.bon_ns"))
    if not ns or any(not is_int(n) or not 1 <= n <= M - 1 for n in ns):
        raise ValueError(f"config.eval.bon_ns = {ns} must be integers in [1, M - 1 = {M - 1}] "
                         "(M = config.eval.reference_samples; one sample plays the opponent)")
    return runs
