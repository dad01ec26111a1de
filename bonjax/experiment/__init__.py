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
- :mod:`~bonjax.experiment.bonbon_system`: the BoNBoN paper's system (SFT, the pool of reference
  samples, BoNBoN / DPO / IPO / SFT-on-best on its fixed pairs, win rate against KL),
  ``run_bonbon_system``; its config check and sweep (:mod:`~bonjax.experiment.bonbon_config`),
  data (:mod:`~bonjax.experiment.bonbon_data`) and report (:mod:`~bonjax.experiment.bonbon_report`).

Each process's share of the prompts is a :class:`bonjax.prompt_shard.PromptShard`; the reference
rewards of a shared-out table come from the one pipeline,
:func:`bonjax.training.reference.reference_rewards_of_shard`.
"""

from bonjax.experiment.bonbon_config import (
    SYSTEM_METHODS,
    SystemRun,
    check_bonbon_config,
    system_runs,
)
from bonjax.experiment.bonbon_system import (
    SystemResult,
    reference_id,
    reference_policy,
    run_bonbon_system,
)
from bonjax.experiment.components import (
    REWARDS,
    TINY_GPT2,
    CompiledReward,
    adds_bos,
    config_mesh,
    load_policy,
    load_reward,
    load_scorer,
    prompt_batch,
    stage_key,
)
from bonjax.experiment.evaluate import (
    EvalSamples,
    bon_gap,
    evaluate_samples,
    sample_policy,
    score_completions,
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
    "SYSTEM_METHODS",
    "TINY_GPT2",
    "CompiledReward",
    "ExperimentResult",
    "SystemResult",
    "SystemRun",
    "MethodRun",
    "EvalSamples",
    "PromptShard",
    "RunDirectory",
    "TrainedPolicy",
    "adds_bos",
    "bon_gap",
    "check_bonbon_config",
    "check_config",
    "chunk_indices",
    "config_mesh",
    "evaluate_samples",
    "export_policy",
    "git_commit",
    "load_policy",
    "load_reward",
    "load_scorer",
    "method_checkpointer",
    "method_runs",
    "method_trainer",
    "prompt_batch",
    "reference_id",
    "reference_policy",
    "run_bonbon_system",
    "run_experiment",
    "sample_policy",
    "score_completions",
    "stage_key",
    "step_indices",
    "system_runs",
    "table_digest",
    "trained_policy",
    "win_rate_vs_references",
    "write_samples",
]
