"""The reward-KL frontier on IMDB sentiment, sized for one 2-core CPU machine (bfloat16 matmuls).

    bash experiments/frontier.sh                      # ~/.cache/bonjax/runs/frontier, resumable
    bash experiments/frontier.sh --step_budget=100    # at most 100 training steps per call

Gemma-3-270M, the trained MiniLM sentiment reward (no fallback), 16 new tokens. M = 80 reference
samples per prompt on 128 training prompts (vBoN's CDFs) and 128 held-out test prompts (Best-of-N
at N = 1..64 by order statistics). Trained, each from pi_ref for 24 steps of 16 prompts x 4
samples (PPO-clipped RLOO, 2 epochs per rollout, AdamW lr 3e-5, top 2 blocks): vBoN at N = 2, 4,
8, 16; the KL-RL baseline at beta = 1, 0.5, 0.3, 0.2, 0.1; BoNBoN at n = 2, 4, 8; BOND at
N = 2, 4. Every policy is evaluated on the same 128 test prompts x 8 samples, so the frontier
statistics (bonjax.evaluation.frontier) compare them paired over prompts.
"""

from experiments.configs import base


def get_config():
    config = base.get_config()
    config.compute_dtype = "bfloat16"  # ~1.4x the float32 step on CPUs with AMX (bench_step_stages)
    config.reward_max_length = 64  # prompt + 16 tokens fit
    config.max_new_tokens = 16
    config.data.train_prompts = 128
    config.data.test_prompts = 128
    config.reference.samples = 80  # M >= 65 for BoN at N = 64
    config.reference.prompts_per_call = 16
    config.reference.samples_per_call = 40
    config.bon.ns = (1, 2, 4, 8, 16, 32, 64)
    config.methods = ("vbon", "kl_rl", "bonbon", "bond")
    config.vbon.ns = (2, 4, 8, 16)
    config.kl_rl.betas = (1.0, 0.5, 0.3, 0.2, 0.1)
    config.bonbon.ns = (2, 4, 8)
    config.bond.ns = (2, 4)
    config.train.steps = 24
    config.train.prompts_per_step = 16
    config.train.samples_per_prompt = 4
    config.train.epochs = 2
    config.train.learning_rate = 3e-5
    config.train.save_every = 4
    config.eval.samples_per_prompt = 8
    config.eval.prompts_per_call = 16
    return config
