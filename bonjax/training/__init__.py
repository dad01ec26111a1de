"""Training: the state, the alignment methods, the trainer, checkpoints, metrics, the loop."""

from bonjax.training.checkpoint import Checkpointer, config_fingerprint
from bonjax.training.loop import train_loop
from bonjax.training.methods import (
    BOND,
    JBOND,
    OPTIMIZERS,
    BONDBatch,
    JBONDBatch,
    PolicyGradient,
    PolicyGradientBatch,
    PreferencePairs,
    method_for,
)
from bonjax.training.metrics import MetricsWriter, read_metrics
from bonjax.training.ppo import PPO, PPOBatch, ValueHead, init_value_head, value_head_apply
from bonjax.training.protocol import Batch, Context, Method
from bonjax.training.reference import reference_rewards, reference_store
from bonjax.training.state import TrainState, split_trainable
from bonjax.training.trainer import OptimizerConfig, Trainer
from bonjax.training.update import apply_updates

__all__ = [
    "BOND",
    "BONDBatch",
    "JBOND",
    "JBONDBatch",
    "Batch",
    "Checkpointer",
    "Context",
    "Method",
    "MetricsWriter",
    "OPTIMIZERS",
    "OptimizerConfig",
    "PPO",
    "PPOBatch",
    "PolicyGradient",
    "PolicyGradientBatch",
    "PreferencePairs",
    "TrainState",
    "ValueHead",
    "Trainer",
    "apply_updates",
    "config_fingerprint",
    "init_value_head",
    "method_for",
    "read_metrics",
    "reference_rewards",
    "reference_store",
    "split_trainable",
    "train_loop",
    "value_head_apply",
]
