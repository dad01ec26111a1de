"""A seconds-long BoNBoN system for tests and CI: a random tiny GPT-2, the VADER reward (also
as the held-out scorer), HH-format fixture files that the tests write (tests/_preference_
fixtures.py) and name with --config.data.train_files / test_files.

The SFT stage (3 steps), a pool of N = 4 samples of 6 tokens per prompt, BoNBoN (n = 2, 4), DPO,
length-normalised IPO and SFT-on-best, 2 steps each. The numbers it produces test the plumbing,
not the science.
"""

from experiments.configs import bonbon_base


def get_config():
    config = bonbon_base.get_config()
    config.model = "tiny-gpt2"
    config.compute_dtype = "float32"
    config.remat = "block"  # the paper configs' backward pass, on the tiny model
    config.mesh_shape = ()
    config.reward = "vader"
    config.holdout_reward = "vader"  # the plumbing of a second scorer
    config.max_new_tokens = 6
    config.data.train_prompts = 6
    config.data.test_prompts = 4
    config.data.max_prompt_tokens = 48
    config.data.max_response_tokens = 16
    config.sft.prompts_per_step = 2
    config.sft.learning_rate = 1e-3
    config.pool.samples = 4
    config.pool.prompts_per_call = 6
    config.pool.samples_per_call = 4
    config.bonbon.ns = (2, 4)
    config.dpo.n = 4
    config.ipo.betas = (0.5,)
    config.ipo.n = 2
    config.ipo.length_normalised = (True,)
    config.sft_best.ns = (4,)
    config.train.epochs = 1
    config.train.prompts_per_step = 3
    config.train.learning_rate = 1e-3
    config.train.train_top = 1
    config.train.save_every = 1
    config.train.keep_checkpoints = 2
    config.train.log_every = 1
    config.eval.reference_samples = 4
    config.eval.samples_per_prompt = 2
    config.eval.prompts_per_call = 4
    config.eval.bon_ns = (1, 2, 3)
    return config
