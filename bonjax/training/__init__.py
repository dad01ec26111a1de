"""Training: the state, the alignment methods, the trainer, checkpoints, metrics, the loop."""

from bonjax.training.algorithms import (
    BOND,
    JBOND,
    BONDBatch,
    JBONDBatch,
    PolicyGradient,
    PolicyGradientBatch,
    PreferencePairs,
    preference_pair_loss,
)
from bonjax.training.checkpoint import Checkpointer, config_fingerprint
from bonjax.training.fixed_pairs import FixedPairs, PairTable
from bonjax.training.loop import train_loop
from bonjax.training.metrics import MetricsWriter, read_metrics
from bonjax.training.ppo import PPO, PPOBatch, ValueHead, init_value_head, value_head_apply
from bonjax.training.protocol import Batch, Context, Method
from bonjax.training.reference import reference_rewards, reference_store
from bonjax.training.reference_pool import (
    PoolFingerprint,
    ReferencePool,
    reference_pool,
    reference_pool_of_shard,
)
from bonjax.training.registry import (
    METHODS,
    OPTIMIZERS,
    MethodSpec,
    build_method,
    method_for,
    spec_of,
)
from bonjax.training.sft import ResponseTable, SupervisedFineTuning
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
    "FixedPairs",
    "METHODS",
    "Method",
    "MethodSpec",
    "MetricsWriter",
    "OPTIMIZERS",
    "OptimizerConfig",
    "PPO",
    "PPOBatch",
    "PairTable",
    "PoolFingerprint",
    "PolicyGradient",
    "PolicyGradientBatch",
    "PreferencePairs",
    "ReferencePool",
    "ResponseTable",
    "SupervisedFineTuning",
    "TrainState",
    "ValueHead",
    "Trainer",
    "apply_updates",
    "build_method",
    "config_fingerprint",
    "init_value_head",
    "method_for",
    "preference_pair_loss",
    "read_metrics",
    "reference_pool",
    "reference_pool_of_shard",
    "reference_rewards",
    "reference_store",
    "spec_of",
    "split_trainable",
    "train_loop",
    "value_head_apply",
]
