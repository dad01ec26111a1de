"""Low-rank adapters (LoRA, Hu et al. 2021, arXiv 2106.09685) on a decoder's weight matrices.

A weight ``W`` is read as a matrix ``[in, out]``: its axes up to and including the ``embed``
axis when ``embed`` comes first (``q: [D, N, H]`` is ``[D, N*H]``), its axes before the last
when ``embed`` comes last (``o: [N, H, D]`` is ``[N*H, D]``). Its adapter holds ``a: [in, r]``
and ``b: [r, out]`` and the adapted weight is

    W' = W + (alpha / r) * reshape(a @ b, W.shape)

``a`` starts from ``N(0, 1/in)`` and ``b`` from zeros, so an adapted model starts exactly at the
base model. Adapters are plain pytrees keyed by the parameter's dotted path
(``"blocks.3.q"``); :func:`apply_lora` returns the base parameters with every adapted weight
replaced by ``W'`` (the merge: the sampler then runs at the base model's speed). The base
arrays themselves are never copied or changed, so one set of base weights serves the policy
and the frozen reference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from bonjax.checks import check_int

__all__ = ["LoRAAdapter", "LoRAConfig", "apply_lora", "init_lora", "lora_targets",
           "trained_in_full"]


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """Which weights get adapters and their size.

    Attributes:
      rank: r, the adapters' inner dimension (>= 1).
      alpha: the scale numerator; the update is multiplied by ``alpha / rank``.
      targets: names of the block weights to adapt (the last part of the parameter path:
        ``("q", "k", "v", "o")`` for Gemma's attention, ``("qkv", "out")`` for GPT-2's); empty
        adapts every weight matrix of every block that has an ``embed`` axis (attention and
        MLP projections; no norms, biases or embeddings).
      train_in_full: parameters that train in full next to the adapters (as PEFT's
        ``modules_to_save``): every parameter with one of these names as a part of its dotted
        path (``"ln_f"`` or ``"final_norm"``: the final norm; ``"wte"`` or ``"embed"``: the
        embedding, which tied models also unembed with; ``"scale"``: every norm scale). They
        are the policy's own copies; the rest of the base stays frozen and shared with pi_ref.
    """

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ()
    train_in_full: tuple[str, ...] = ()

    def __post_init__(self):
        check_int("LoRAConfig.rank", self.rank, minimum=1)
        if not self.alpha > 0:
            raise ValueError(f"LoRAConfig.alpha must be > 0, got {self.alpha}")
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "train_in_full", tuple(self.train_in_full))

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank


@struct.dataclass
class LoRAAdapter:
    """``a: [in, r]``, ``b: [r, out]`` of one weight; ``scale`` (alpha / r) is static."""

    a: jax.Array
    b: jax.Array
    scale: float = struct.field(pytree_node=False)


def _path_name(path) -> str:
    return ".".join(str(getattr(k, "key", k)) for k in path)


def _split(axes: tuple, shape: tuple[int, ...], name: str) -> int | None:
    """The number of leading axes that form the matrix's input, or None (not a matrix)."""
    if len(shape) < 2 or "embed" not in axes:
        return None
    if axes[0] == "embed":
        return 1
    if axes[-1] == "embed":
        return len(shape) - 1
    raise ValueError(f"parameter {name} has its embed axis in the middle of {axes}")


def lora_targets(params: nnx.State, config: LoRAConfig) -> dict[str, tuple[int, int]]:
    """``{path: (in, out)}`` of the weights ``config`` adapts, in parameter order.

    Raises:
      ValueError: naming a target that matches no block weight, and the block weights there are.
    """
    found: dict[str, tuple[int, int]] = {}
    names: set[str] = set()
    for path, variable in nnx.to_flat_state(params):
        keys = [getattr(k, "key", k) for k in path]
        if not keys or keys[0] != "blocks":
            continue
        name = _path_name(path)
        axes = variable.get_metadata().get("axes")
        shape = tuple(variable.value.shape)
        split = _split(tuple(axes or ()), shape, name)
        if split is None:
            continue
        names.add(str(keys[-1]))
        if config.targets and str(keys[-1]) not in config.targets:
            continue
        found[name] = (int(np.prod(shape[:split])), int(np.prod(shape[split:])))
    missing = sorted(set(config.targets) - names)
    if missing:
        raise ValueError(f"LoRA target {missing[0]!r} names no block weight matrix; this model's "
                         f"are {', '.join(sorted(names))}")
    return found


def trained_in_full(params: nnx.State, config: LoRAConfig) -> Callable[[tuple], bool]:
    """The parameter-path predicate of ``config.train_in_full``: True for the parameters that
    train in full next to the adapters.

    Raises:
      ValueError: naming a name that is part of no parameter's path, or a parameter that would
        both carry an adapter and train in full.
    """
    names = set(config.train_in_full)

    def selected(path) -> bool:
        return not names.isdisjoint(str(getattr(k, "key", k)) for k in path)

    paths = [path for path, _ in nnx.to_flat_state(params)]
    parts = {str(getattr(k, "key", k)) for path in paths for k in path}
    missing = sorted(names - parts)
    if missing:
        raise ValueError(f"LoRAConfig.train_in_full name {missing[0]!r} is part of no parameter's "
                         f"path; this model's top-level names are "
                         f"{', '.join(sorted({str(getattr(p[0], 'key', p[0])) for p in paths}))}")
    adapted = lora_targets(params, config)
    both = sorted(_path_name(p) for p in paths if selected(p) and _path_name(p) in adapted)
    if both:
        raise ValueError(f"parameter {both[0]} would both carry a LoRA adapter and train in full; "
                         "leave it out of LoRAConfig.targets or of train_in_full")
    return selected


def init_lora(params: nnx.State, config: LoRAConfig, key: jax.Array,
              dtype=jnp.float32) -> dict[str, LoRAAdapter]:
    """Adapters for every target of ``config`` in ``params``: ``a ~ N(0, 1/in)``, ``b = 0``."""
    adapters = {}
    for i, (name, (d_in, d_out)) in enumerate(lora_targets(params, config).items()):
        a = jax.random.normal(jax.random.fold_in(key, i), (d_in, config.rank), dtype)
        adapters[name] = LoRAAdapter(a / np.sqrt(d_in).astype(np.float32),
                                     jnp.zeros((config.rank, d_out), dtype), config.scale)
    return adapters


def apply_lora(params: nnx.State, adapters: dict[str, LoRAAdapter] | None) -> nnx.State:
    """``params`` with every adapted weight replaced by ``W + scale * a @ b`` (in W's dtype);
    the other parameters are the same arrays. No adapters: ``params`` itself."""
    if not adapters:
        return params
    flat = []
    for path, variable in nnx.to_flat_state(params):
        adapter = adapters.get(_path_name(path))
        if adapter is not None:
            w = variable.value
            delta = (adapter.a @ adapter.b).reshape(w.shape) * adapter.scale
            variable = variable.replace((w.astype(jnp.float32) + delta).astype(w.dtype))
        flat.append((path, variable))
    unknown = set(adapters) - {_path_name(p) for p, _ in flat}
    if unknown:
        raise ValueError(f"adapter {sorted(unknown)[0]!r} matches no parameter")
    return nnx.from_flat_state(flat)
