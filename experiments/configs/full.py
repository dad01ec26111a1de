"""The IMDB sentiment experiment at the vBoN paper's scale, for accelerators (TPU / GPU).

    python experiments/train.py --config=experiments/configs/full.py --run_dir=gs://.../full

5,000 training prompts of 2-8 tokens, 512 test prompts, 40 new tokens, M = 300 reference samples
per prompt, N swept over 2..64 (vBoN: beta = 1/(N-1)), a beta sweep for the PPO baseline, AdamW
(lr 3e-5, betas 0.9 / 0.95), PPO with a value head and GAE (4 epochs per rollout) for vBoN and
the baseline as in the paper, the top 2 blocks trained. Data parallel over every device of every
host.
"""

from experiments.configs import base


def get_config():
    config = base.get_config()
    config.mesh_shape = (-1, 1, 1)  # data parallel over all devices
    config.data.train_prompts = 5000
    config.data.test_prompts = 512
    config.reference.samples = 300
    config.reference.prompts_per_call = 64
    config.reference.samples_per_call = 60  # 300 = 5 chunks of 60
    config.bon.ns = (1, 2, 4, 8, 16, 32, 64)
    config.methods = ("vbon", "bonbon", "bond", "kl_rl")
    config.vbon.ns = (2, 4, 8, 16, 32, 64)
    config.bonbon.ns = (2, 4, 8, 16, 32, 64)
    config.bond.ns = (2, 4, 8, 16, 32, 64)
    config.kl_rl.betas = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
    config.train.optimizer = "ppo"
    config.train.steps = 312  # 4 passes over the 5,000 prompts at 64 per step
    config.train.prompts_per_step = 64
    config.train.save_every = 50
    config.train.log_every = 10
    config.eval.samples_per_prompt = 8
    config.eval.prompts_per_call = 64
    return config
