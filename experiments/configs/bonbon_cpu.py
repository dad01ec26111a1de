"""The whole BoNBoN system on one 2-core CPU machine (bfloat16 matmuls), sized to finish in
under 20 minutes there (349 s on a quiet 2-core machine at commit 3746f9a).

    python experiments/bonbon.py --config=experiments/configs/bonbon_cpu.py \\
        --run_dir=~/.cache/bonjax/runs/bonbon_cpu

Gemma-3-270M as pi_ref (no SFT stage: IMDB review openings have no responses to fine-tune on),
the trained MiniLM IMDB sentiment reward (``python experiments/train_reward.py``), VADER as the
held-out scorer; 32 training prompts with a pool of N = 16 samples of 16 tokens each; BoNBoN at
n = 2, 4, 8, 16, DPO and IPO (sequence-sum and length-normalised) at n = 8, SFT-on-best at
n = 8, each 8 steps of 8 pairs (2 passes, top 2 blocks, AdamW lr 2e-5, the step size of
cpu_demo); 32 held-out prompts x 4 samples against M = 16 pi_ref samples.
"""

from experiments.configs import bonbon_base


def get_config():
    config = bonbon_base.get_config()
    config.model = "gemma3-270m"
    config.mesh_shape = ()
    config.reward = "sentiment"
    config.reward_max_length = 64  # prompt + 16 tokens fit
    config.holdout_reward = "vader"  # another sentiment scorer, which no method trains on
    config.max_new_tokens = 16
    config.data.source = "imdb"
    config.data.train_prompts = 32
    config.data.test_prompts = 32
    config.sft.enabled = False
    config.pool.samples = 16
    config.pool.prompts_per_call = 8
    config.pool.samples_per_call = 16
    config.bonbon.ns = (2, 4, 8, 16)
    config.dpo.length_normalised = (False, True)
    config.ipo.length_normalised = (False, True)
    config.train.prompts_per_step = 8
    config.train.learning_rate = 2e-5
    config.train.train_top = 2
    config.train.save_every = 4
    config.train.log_every = 1
    config.eval.reference_samples = 16
    config.eval.prompts_per_call = 8
    config.eval.bon_ns = (1, 2, 4, 8)
    return config
