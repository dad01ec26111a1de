"""The IMDB sentiment experiment at a size that runs in about 15 minutes on 2 CPU cores.

    python experiments/train.py --config=experiments/configs/cpu_demo.py --run_dir=/tmp/cpu_demo

Gemma-3-270M, the MiniLM sentiment reward (VADER with a warning if its artifact is missing), 16
new tokens, BoN up to N = 16 and soft BoN (n = 4, 16; lambda = 0.1, 0.3, 1) from 32 reference
samples per prompt; vBoN (N = 4, 16), BoNBoN
(n = 8) and the KL-RL baseline (beta = 0.5, 0.05), each 8 steps of 8 prompts x 4 samples with 2
epochs per rollout. At this budget a step's gradient is noisy: the step size is below the paper's
3e-5 so that noise does not buy KL without reward.
"""

from experiments.configs import base


def get_config():
    config = base.get_config()
    config.background_results = "docs/results/frontier/results.json"  # the committed frontier
    config.reward_fallback = "vader"  # a demo should run even before the reward is trained
    config.compute_dtype = "bfloat16"  # as the frontier study; ~1.4x the float32 step on AMX CPUs
    config.reward_max_length = 64  # prompt + 16 tokens fit: no scoring of 128-token padding
    config.max_new_tokens = 16  # shorter completions: sampling dominates the time on CPU
    config.data.train_prompts = 32  # 4 steps of 8 prompts per pass
    config.data.test_prompts = 32
    config.reference.samples = 32  # M
    config.reference.prompts_per_call = 8
    config.reference.samples_per_call = 32
    config.bon.ns = (1, 2, 4, 8, 16)
    config.methods = ("vbon", "bonbon", "kl_rl")
    config.vbon.ns = (4, 16)
    config.bonbon.ns = (8,)
    config.kl_rl.betas = (0.5, 0.05)
    config.train.steps = 8
    config.train.prompts_per_step = 8
    config.train.samples_per_prompt = 4
    config.train.epochs = 2
    config.train.learning_rate = 2e-5
    config.train.save_every = 4
    config.eval.samples_per_prompt = 4
    config.eval.prompts_per_call = 8
    return config
