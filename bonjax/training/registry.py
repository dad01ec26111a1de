"""The one registry of alignment methods: name, objective config, how it is optimised.

The experiment's sweeps, the enumerable toy and :func:`method_for` read this table, so adding a
method means adding its objective config, its :class:`~bonjax.training.protocol.Method` and one
:class:`MethodSpec` row here.

``kl_rl`` is the KL-regularised RL baseline (raw reward, KL weight ``beta``). How vBoN and KL-RL
are optimised is a separate choice, the optimiser: ``"rloo"`` (clipped policy gradient with
leave-one-out advantages, no critic) or ``"ppo"`` (a value head and GAE, the vBoN paper's
optimiser). The other methods have one optimiser each.

The fixed-data methods are not rows: :class:`~bonjax.training.fixed_pairs.FixedPairs` (BoNBoN,
DPO, IPO on best-and-worst pairs drawn once) and
:class:`~bonjax.training.sft.SupervisedFineTuning` train on a data set built beforehand and given
to the trainer, which a row's method does not need and the experiment does not build; and an
objective config names one row (``spec_of``), which for BoNBoN, DPO and IPO is the online method.
They are built by their constructors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from bonjax import objectives as obj
from bonjax.training.algorithms import BOND, JBOND, PolicyGradient, PreferencePairs
from bonjax.training.ctrl import InfAlignCTRL
from bonjax.training.max_at_k import MaxAtK
from bonjax.training.ppo import PPO
from bonjax.training.protocol import Method
from bonjax.training.qrpo import QRPO

__all__ = ["METHODS", "OPTIMIZERS", "MethodSpec", "build_method", "method_for", "spec_of"]

OPTIMIZERS = ("rloo", "ppo")


def _policy_gradient(objective, optimizer: str, **kwargs) -> Method:
    return PPO(objective, **kwargs) if optimizer == "ppo" else PolicyGradient(objective, **kwargs)


def _pairs(objective, optimizer: str, **kwargs) -> Method:
    n = kwargs.pop("n", getattr(objective, "n", 8))
    return PreferencePairs(objective, n=n, **kwargs)


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One alignment method.

    Attributes:
      name: what configs, the toy and run directories call it (``"kl_rl"``).
      label: what plots and tables call it (``"KL-RL"``).
      objective: its objective config class (``KLRLConfig``).
      setting: the objective field that tells two runs of the method apart (``"beta"``); an
        experiment sweeps it.
      symbol: how tables write that field (``"beta"``, ``"N"``).
      make: ``(objective, optimizer, **method_kwargs) -> Method``.
      optimizers: the optimisers it can be trained with (the first is the default).
      needs_reference_cdf: whether it reads the cached reference rewards of its prompts.
      method_args: the training settings its method takes (``samples_per_prompt``,
        ``clip_eps``); the experiment and the toy pass these and no others.
      variant: a short tag for a variant of the objective (``"exact"`` vBoN), or None.
    """

    name: str
    label: str
    objective: type
    setting: str
    symbol: str
    make: Callable[..., Method]
    optimizers: tuple[str, ...] = ("rloo",)
    needs_reference_cdf: bool = False
    method_args: tuple[str, ...] = ()
    variant: Callable[[Any], str | None] = lambda objective: None

    def title(self, objective: Any) -> str:
        """The method as tables show it: ``"vBoN"``, ``"vBoN (exact)"``."""
        variant = self.variant(objective)
        return f"{self.label} ({variant})" if variant else self.label

    def check_optimizer(self, optimizer: str) -> None:
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
        if optimizer not in self.optimizers:
            raise ValueError(f"optimizer {optimizer!r} does not apply to {self.label} "
                             f"({self.objective.__name__}); it trains with "
                             f"{', '.join(self.optimizers)}")

    def describe(self, objective: Any, optimizer: str) -> str:
        """The setting as tables show it: ``"beta=0.05, PPO"``, ``"n=8"``."""
        text = f"{self.symbol}={getattr(objective, self.setting):g}"
        return f"{text}, {optimizer.upper()}" if len(self.optimizers) > 1 else text


_POLICY_GRADIENT_ARGS = ("samples_per_prompt", "clip_eps")


def _length_normalised(objective) -> str | None:
    return "length-normalised" if objective.length_normalised else None


METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("vbon", "vBoN", obj.VBoNConfig, "n", "N", _policy_gradient, OPTIMIZERS,
               needs_reference_cdf=True, method_args=_POLICY_GRADIENT_ARGS,
               variant=lambda o: "exact" if o.exact else None),
    MethodSpec("kl_rl", "KL-RL", obj.KLRLConfig, "beta", "beta", _policy_gradient, OPTIMIZERS,
               method_args=_POLICY_GRADIENT_ARGS),
    MethodSpec("bonbon", "BoNBoN", obj.BoNBoNConfig, "n", "n", _pairs),
    MethodSpec("dpo", "DPO", obj.DPOConfig, "beta", "beta", _pairs, method_args=("n",),
               variant=_length_normalised),
    MethodSpec("ipo", "IPO", obj.IPOConfig, "beta", "beta", _pairs, method_args=("n",),
               variant=_length_normalised),
    MethodSpec("bond", "BOND", obj.BONDConfig, "n", "N", lambda o, _, **kw: BOND(o, **kw),
               method_args=("samples_per_prompt",)),
    MethodSpec("jbond", "J-BOND", obj.JBONDConfig, "anchor_eta", "eta",
               lambda o, _, **kw: JBOND(o, **kw)),
    # The Best-of-N-aware methods (docs/architecture.md): KL-regularised RL on InfAlign's
    # calibrated and transformed reward, QRPO's regression on reference samples, max@k.
    MethodSpec("ctrl", "InfAlign-CTRL", obj.CTRLConfig, "beta", "beta",
               lambda o, _, **kw: InfAlignCTRL(o, **kw), needs_reference_cdf=True,
               method_args=_POLICY_GRADIENT_ARGS),
    MethodSpec("qrpo", "QRPO", obj.QRPOConfig, "beta", "beta", lambda o, _, **kw: QRPO(o, **kw),
               needs_reference_cdf=True, method_args=("samples_per_prompt",)),
    MethodSpec("max_at_k", "max@k", obj.MaxAtKConfig, "k", "k",
               lambda o, _, **kw: MaxAtK(o, **kw), method_args=_POLICY_GRADIENT_ARGS),
)}


def spec_of(objective: Any) -> MethodSpec:
    """The registry row whose objective config ``objective`` is."""
    for spec in METHODS.values():
        if type(objective) is spec.objective:
            return spec
    raise ValueError(f"no method optimises objective {objective!r}; known objectives: "
                     + ", ".join(s.objective.__name__ for s in METHODS.values()))


def method_for(objective: Any, optimizer: str = "rloo", **kwargs) -> Method:
    """The method that optimises an objective config (``VBoNConfig``, ``BoNBoNConfig``, ...).

    ``optimizer`` picks how vBoN and the KL-RL baseline are optimised: ``"rloo"`` (critic-free
    :class:`~bonjax.training.algorithms.PolicyGradient`, RLOO baseline) or ``"ppo"``
    (:class:`~bonjax.training.ppo.PPO`, a value head and GAE). ``kwargs`` go to the method
    (``samples_per_prompt``, ``clip_eps``, ...).
    """
    spec = spec_of(objective)
    spec.check_optimizer(optimizer)
    return spec.make(objective, optimizer, **kwargs)


def build_method(name: str, optimizer: str = "rloo", method_kwargs: dict | None = None,
                 **objective_fields) -> tuple[MethodSpec, Any, Method]:
    """``(spec, objective, method)`` for a registered name and its objective's fields.

    Fields the objective does not have are an error naming them, so a setting cannot be dropped
    silently.
    """
    if name not in METHODS:
        hint = " (the KL-RL baseline is 'kl_rl'; its optimiser is chosen separately)" \
            if name == "ppo" else ""
        raise ValueError(f"unknown method {name!r}{hint}; known methods: {', '.join(METHODS)}")
    spec = METHODS[name]
    known = {f.name for f in dataclasses.fields(spec.objective)}
    unknown = sorted(set(objective_fields) - known)
    if unknown:
        raise ValueError(f"{spec.objective.__name__} has no field {unknown[0]!r}; its fields: "
                         f"{', '.join(sorted(known))}")
    objective = spec.objective(**objective_fields)
    return spec, objective, method_for(objective, optimizer, **(method_kwargs or {}))
