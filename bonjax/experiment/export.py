"""A trained policy of a run directory, restored from its latest checkpoint and exported.

    policy = trained_policy("/tmp/cpu_demo", "vbon-n4")       # lm, params, tokenizer, step
    export_policy("/tmp/cpu_demo", "vbon-n4", "/tmp/vbon-n4-hf")  # a Hugging Face directory

The run's own config (``run_dir/config.json``) rebuilds the reference policy and the method's
training state exactly as the run built them; the checkpoint restores the trained arrays into it
(the frozen parameters, never saved, are the reference's) and ``TrainState.full_params()`` gives
the policy with any LoRA adapters merged.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

import jax
import ml_collections

from bonjax.experiment.components import load_policy
from bonjax.experiment.run import check_config, method_checkpointer, method_trainer
from bonjax.experiment.rundir import CONFIG_FILE
from bonjax.models.export import EXPORT_DTYPES, check_export_directory, save_pretrained

__all__ = ["TrainedPolicy", "export_policy", "trained_policy"]


@dataclasses.dataclass(frozen=True)
class TrainedPolicy:
    """A method's policy as its latest checkpoint holds it.

    Attributes:
      lm: the architecture (the reference policy's).
      params: the policy's parameters, adapters merged.
      tokenizer: the reference policy's tokenizer.
      step: the training step of the checkpoint.
    """

    lm: Any
    params: Any
    tokenizer: Any
    step: int


def trained_policy(run_dir: str | os.PathLike, key: str) -> TrainedPolicy:
    """The policy of method ``key`` (its directory name, e.g. ``"vbon-n4"``) of ``run_dir``.

    Raises:
      FileNotFoundError: ``run_dir`` is not a run directory, or the method has no checkpoint.
      ValueError: the run trains no method ``key`` (the message lists those it trains).
    """
    path = pathlib.Path(run_dir).expanduser().absolute()
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{path} has no {CONFIG_FILE}: not a run directory")
    stored = json.loads((path / CONFIG_FILE).read_text())
    config = ml_collections.ConfigDict(stored["config"])
    runs = {run.key: run for run in check_config(config)}
    if key not in runs:
        raise ValueError(f"run directory {path} trains no method {key!r}; its methods are "
                         f"{', '.join(runs)}")
    if not (path / key / "checkpoints").is_dir():
        raise FileNotFoundError(f"{path / key} has no checkpoints: method {key!r} has not "
                                "trained yet")
    lm, params, tokenizer = load_policy(config.model, seed=int(config.seed))
    # The restore target: every array of it but the frozen parameters comes from the checkpoint.
    target = method_trainer(config, runs[key], lm, params).init_state(jax.random.key(0))
    with method_checkpointer(config, path, stored["fingerprint"], key) as checkpoints:
        step = checkpoints.latest_step
        restored = checkpoints.restore_latest(target)
    if restored is None:
        raise FileNotFoundError(f"{path / key / 'checkpoints'} holds no checkpoint")
    state = restored[0]
    return TrainedPolicy(lm, state.full_params(), tokenizer, int(step))


def export_policy(run_dir: str | os.PathLike, key: str, output: str | os.PathLike, *,
                  overwrite: bool = False, dtype: str | None = None) -> TrainedPolicy:
    """Writes the policy of method ``key`` of ``run_dir`` to ``output`` as a Hugging Face
    checkpoint directory (:func:`bonjax.save_pretrained`); returns what it wrote."""
    check_export_directory(output, overwrite)  # before the restore, not after
    if dtype is not None and dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(EXPORT_DTYPES)} (or None)")
    policy = trained_policy(run_dir, key)
    save_pretrained(policy.lm, policy.params, policy.tokenizer, output, overwrite=overwrite,
                    dtype=dtype)
    return policy
