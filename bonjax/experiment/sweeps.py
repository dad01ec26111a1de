"""The methods an experiment trains, each swept over its setting: one trained policy per run.

A config lists registered method names (:data:`bonjax.training.METHODS`) in ``config.methods``;
each name's own section holds its sweep and the objective's other fields::

    config.methods = ("vbon", "bonbon", "kl_rl")
    config.vbon.ns = (4, 16)          # vBoN, beta = 1/(N-1): one policy per N
    config.bonbon.ns = (8,)           # BoNBoN on the best and worst of n reference samples
    config.kl_rl.betas = (0.5, 0.05) # KL-regularised RL on the raw reward: one per beta

A section sweeps its method's setting (``MethodSpec.setting``) through the plural field (``ns``,
``betas``) or fixes it with the singular one (``jbond.anchor_eta``); every other field of the
section is a field of the method's objective config (``bonbon.alpha``, ``vbon.exact``) or one
of the method's own arguments (``dpo.n``: the samples its pairs are drawn from).
:func:`method_runs` turns that into typed :class:`MethodRun` values (the directory name, the
method and setting as tables show them, and the :class:`bonjax.training.Method`).
``config.train.optimizer`` picks how vBoN and KL-RL are optimised (``"rloo"`` or ``"ppo"``);
tables name it with the setting ("KL-RL", "beta=0.05, PPO").
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bonjax.training.protocol import Method
from bonjax.training.registry import METHODS as REGISTRY
from bonjax.training.registry import OPTIMIZERS, build_method

__all__ = ["METHODS", "MethodRun", "method_runs"]

METHODS = tuple(REGISTRY)


@dataclasses.dataclass(frozen=True)
class MethodRun:
    """One trained policy of the experiment.

    Attributes:
      key: its directory under the run directory (``"vbon-n4"``, ``"kl_rl-beta0.05"``).
      name: the method as plots and tables show it (``"vBoN"``, ``"KL-RL"``).
      setting: what distinguishes it within the method, with the optimiser where the method
        has a choice of one (``"N=4, RLOO"``, ``"beta=0.05, PPO"``, ``"n=8"``).
      method: the training method.
      needs_reference_cdf: whether it reads the cached reference rewards of the training
        prompts (vBoN's ``F_hat``).
    """

    key: str
    name: str
    setting: str
    method: Method
    needs_reference_cdf: bool = False


def _values(config: Any, name: str, setting: str) -> tuple:
    if name not in config:
        raise ValueError(f"{name!r} is in config.methods but the config has no config.{name} "
                         "section")
    section = config[name]
    if setting + "s" in section:
        values = tuple(section[setting + "s"])
        if not values:
            raise ValueError(f"config.{name}.{setting}s is empty but {name!r} is in "
                             "config.methods: give at least one value or drop the method")
        if len(set(values)) != len(values):
            raise ValueError(f"config.{name}.{setting}s = {values} repeats a value")
        return values
    if setting in section:
        return (section[setting],)
    raise ValueError(f"config.{name} sets neither {setting}s (a sweep) nor {setting}")


def method_runs(config: Any) -> list[MethodRun]:
    """The trained policies of ``config``, in the order of ``config.methods`` and each sweep.

    Raises:
      ValueError: naming an unknown or repeated method, an empty sweep, or an invalid setting.
    """
    names = tuple(config.methods)
    if not names:
        raise ValueError("config.methods is empty: name at least one of " + ", ".join(METHODS))
    if len(set(names)) != len(names):
        raise ValueError(f"config.methods = {names} names a method twice")
    optimizer = str(config.train.optimizer)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown config.train.optimizer {optimizer!r}; choose one of "
                         f"{', '.join(OPTIMIZERS)}")
    train = {"samples_per_prompt": int(config.train.samples_per_prompt),
             "clip_eps": float(config.train.clip_eps)}
    runs: list[MethodRun] = []
    for name in names:
        if name not in REGISTRY:
            build_method(name)  # raises, naming the known methods
        spec = REGISTRY[name]
        values = _values(config, name, spec.setting)
        fixed = {k: v for k, v in config[name].items() if k not in (spec.setting,
                                                                      spec.setting + "s")}
        method_kwargs = {a: fixed.pop(a) if a in fixed else train[a] for a in spec.method_args}
        for value in values:
            spec, objective, method = build_method(
                name, optimizer if optimizer in spec.optimizers else spec.optimizers[0],
                method_kwargs, **fixed, **{spec.setting: value})
            variant = spec.variant(objective)
            key = name + (f"-{variant}" if variant else "")
            if len(values) > 1 or spec.setting + "s" in config[name]:
                key += f"-{spec.symbol.lower()}{value:g}"
            runs.append(MethodRun(key, spec.title(objective),
                                  spec.describe(objective, optimizer), method,
                                  needs_reference_cdf=spec.needs_reference_cdf))
    return runs
