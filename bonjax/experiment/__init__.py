"""The IMDB sentiment experiment (vBoN paper, Sec. 5) end to end: ``run_experiment``.

    from experiments.configs import cpu_demo
    from bonjax.experiment import run_experiment
    result = run_experiment(cpu_demo.get_config(), "/tmp/cpu_demo")

- :mod:`~bonjax.experiment.run`: the pipeline, the config check.
- :mod:`~bonjax.experiment.sweeps`: the trained methods and their sweeps.
- :mod:`~bonjax.experiment.components`: policy, reward and prompts by name.
- :mod:`~bonjax.experiment.evaluate`: reward, KL, win rate and samples of a policy.
- :mod:`~bonjax.experiment.rundir`: the run directory's config, run id and git commit.
- :mod:`~bonjax.experiment.export`: a trained policy from its checkpoint, exported to Hugging Face.

Each process's share of the prompts is a :class:`bonjax.prompt_shard.PromptShard`; the reference
rewards of a shared-out table come from the one pipeline,
:func:`bonjax.training.reference.reference_rewards_of_shard`.
"""

from bonjax.experiment.components import (
    REWARDS,
    TINY_GPT2,
    CompiledReward,
    adds_bos,
    load_policy,
    load_reward,
    prompt_batch,
)
from bonjax.experiment.evaluate import (
    EvalSamples,
    bon_gap,
    evaluate_samples,
    sample_policy,
    win_rate_vs_references,
    write_samples,
)
from bonjax.experiment.export import TrainedPolicy, export_policy, trained_policy
from bonjax.experiment.run import (
    ExperimentResult,
    check_config,
    method_checkpointer,
    method_trainer,
    run_experiment,
)
from bonjax.experiment.rundir import RunDirectory, git_commit
from bonjax.experiment.sweeps import METHODS, MethodRun, method_runs
from bonjax.fingerprint import table_digest
from bonjax.prompt_shard import PromptShard, chunk_indices, step_indices

__all__ = [
    "METHODS",
    "REWARDS",
    "TINY_GPT2",
    "CompiledReward",
    "ExperimentResult",
    "MethodRun",
    "EvalSamples",
    "PromptShard",
    "RunDirectory",
    "TrainedPolicy",
    "adds_bos",
    "bon_gap",
    "check_config",
    "chunk_indices",
    "evaluate_samples",
    "export_policy",
    "git_commit",
    "load_policy",
    "load_reward",
    "method_checkpointer",
    "method_runs",
    "method_trainer",
    "prompt_batch",
    "run_experiment",
    "sample_policy",
    "step_indices",
    "table_digest",
    "trained_policy",
    "win_rate_vs_references",
    "write_samples",
]
