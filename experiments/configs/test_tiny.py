"""A seconds-long configuration for tests and CI: a random tiny GPT-2 and the VADER reward.

Every method, two training steps each, 8 prompts, 6 new tokens. The numbers it produces test
the plumbing, not the science.
"""

from experiments.configs import base


def get_config():
    config = base.get_config()
    config.model = "tiny-gpt2"
    config.reward = "vader"
    config.max_new_tokens = 6
    config.data.train_prompts = 8
    config.data.test_prompts = 8
    config.reference.samples = 8
    config.reference.prompts_per_call = 8
    config.reference.samples_per_call = 8
    config.bon.ns = (1, 2, 4)
    config.soft_bon.ns = (2, 4)
    config.soft_bon.lambdas = (0.5,)
    config.rbon.ns = (2, 4)
    config.rbon.betas = (0.1,)
    config.methods = ("vbon", "bonbon", "bond", "jbond", "kl_rl")
    config.vbon.ns = (4,)
    config.bonbon.ns = (4,)
    config.bond.ns = (2,)
    config.kl_rl.betas = (0.1,)
    config.train.steps = 2
    config.train.prompts_per_step = 4
    config.train.samples_per_prompt = 2
    config.train.learning_rate = 1e-3
    config.train.epochs = 1
    config.train.train_top = 1
    config.train.save_every = 1
    config.train.keep_checkpoints = 2  # the tests look at both
    config.eval.samples_per_prompt = 2
    config.eval.prompts_per_call = 8
    return config
