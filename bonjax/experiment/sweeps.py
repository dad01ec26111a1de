"""The methods an experiment trains, each swept over its settings: one trained policy per run.

A config lists method names in ``config.methods``; each name's own section holds its sweep::

    config.methods = ("vbon", "bonbon", "ppo")
    config.vbon.ns = (4, 16)          # vBoN, beta = 1/(N-1): one policy per N
    config.bonbon.ns = (8,)           # BoNBoN on the best and worst of n reference samples
    config.ppo.betas = (0.5, 0.05)    # KL-regularised RL on the raw reward: one per beta

:func:`method_runs` turns that into typed :class:`MethodRun` values (names for the plots and the
table, a directory name, and the :class:`bonjax.training.Method` that optimises it).
``config.train.optimizer`` picks how vBoN and PPO are optimised: ``"rloo"`` (clipped policy
gradient with leave-one-out advantages, no critic) or ``"ppo"`` (a value head and GAE, the vBoN
paper's optimiser).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bonjax import objectives as obj
from bonjax.training.methods import OPTIMIZERS, Method, method_for

__all__ = ["METHODS", "MethodRun", "method_runs"]

METHODS = ("vbon", "bonbon", "bond", "jbond", "ppo")


@dataclasses.dataclass(frozen=True)
class MethodRun:
    """One trained policy of the experiment.

    Attributes:
      key: its directory under the run directory (``"vbon-n4"``, ``"ppo-beta0.05"``).
      name: the method as plots and tables show it (``"vBoN"``, ``"PPO"``).
      setting: what distinguishes it within the method (``"N=4"``, ``"beta=0.05"``).
      method: the training method (``bonjax.training.method_for`` of the objective).
      needs_reference_cdf: whether it reads the cached reference rewards of the training
        prompts (vBoN's ``F_hat``).
    """

    key: str
    name: str
    setting: str
    method: Method
    needs_reference_cdf: bool = False


def _sweep(config: Any, section: str, field: str) -> tuple:
    values = tuple(config[section][field])
    if not values:
        raise ValueError(f"config.{section}.{field} is empty but {section!r} is in "
                         "config.methods: give at least one value or drop the method")
    if len(set(values)) != len(values):
        raise ValueError(f"config.{section}.{field} = {values} repeats a value")
    return values


def _number(value: float) -> str:
    return f"{value:g}"


def method_runs(config: Any) -> list[MethodRun]:
    """The trained policies of ``config``, in the order of ``config.methods`` and each sweep.

    Raises:
      ValueError: naming an unknown or repeated method, an empty sweep, or an invalid setting.
    """
    names = tuple(config.methods)
    if not names:
        raise ValueError("config.methods is empty: name at least one of " + ", ".join(METHODS))
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r} in config.methods; known methods: "
                         f"{', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"config.methods = {names} names a method twice")
    K = int(config.train.samples_per_prompt)
    clip = float(config.train.clip_eps)
    optimizer = str(config.train.optimizer)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown config.train.optimizer {optimizer!r}; choose one of "
                         f"{', '.join(OPTIMIZERS)}")
    runs: list[MethodRun] = []
    for name in names:
        if name == "vbon":
            exact = bool(config.vbon.exact)
            for n in _sweep(config, "vbon", "ns"):
                method = method_for(obj.VBoNConfig(n=int(n), exact=exact), optimizer,
                                    samples_per_prompt=K, clip_eps=clip)
                runs.append(MethodRun(f"vbon{'-exact' if exact else ''}-n{n}",
                                      "vBoN (exact)" if exact else "vBoN", f"N={n}", method,
                                      needs_reference_cdf=True))
        elif name == "bonbon":
            for n in _sweep(config, "bonbon", "ns"):
                method = method_for(obj.BoNBoNConfig(n=int(n), alpha=float(config.bonbon.alpha)))
                runs.append(MethodRun(f"bonbon-n{n}", "BoNBoN", f"n={n}", method))
        elif name == "bond":
            for n in _sweep(config, "bond", "ns"):
                method = method_for(obj.BONDConfig(n=int(n),
                                                   jeffreys_b=float(config.bond.jeffreys_b)),
                                    samples_per_prompt=K)
                runs.append(MethodRun(f"bond-n{n}", "BOND", f"N={n}", method))
        elif name == "jbond":
            method = method_for(obj.JBONDConfig(jeffreys_b=float(config.jbond.jeffreys_b),
                                                anchor_eta=float(config.jbond.anchor_eta)))
            runs.append(MethodRun("jbond", "J-BOND", f"eta={_number(config.jbond.anchor_eta)}",
                                  method))
        else:
            for beta in _sweep(config, "ppo", "betas"):
                method = method_for(obj.KLRLConfig(beta=float(beta)), optimizer,
                                    samples_per_prompt=K, clip_eps=clip)
                runs.append(MethodRun(f"ppo-beta{_number(beta)}", "PPO",
                                      f"beta={_number(beta)}", method))
    return runs
