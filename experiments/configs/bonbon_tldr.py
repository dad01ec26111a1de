"""The BoNBoN system on Reddit TL;DR summarisation at the paper's scale, for accelerators.

    python experiments/bonbon.py --config=experiments/configs/bonbon_tldr.py --run_dir=DIR

As ``bonbon_hh`` (Pythia-2.8B with an SFT stage, the DeBERTa-v3-large reward, n in
{2, 4, 8, 16, 32}, alpha = 0.005, FSDP) on TL;DR posts: the SFT targets are the reference
summaries. The records are OpenAI's ``tldr_3_filtered/{train,test}.jsonl``
(summarize-from-feedback), downloaded beforehand to ``~/.cache/bonjax/data/tldr_3_filtered``
(override the paths with --config.data.train_files / test_files). Posts are longer than
dialogues and summaries shorter than replies: prompts keep their last 512 tokens, summaries and
samples have at most 64.
"""

from experiments.configs import bonbon_base

TLDR_DIR = "~/.cache/bonjax/data/tldr_3_filtered"


def get_config():
    config = bonbon_base.get_config()
    config.remat = "block"  # a step's activations do not fit 80 GB per device otherwise
    config.max_new_tokens = 64
    config.data.source = "tldr"
    config.data.train_files = (f"{TLDR_DIR}/train.jsonl",)
    config.data.test_files = (f"{TLDR_DIR}/test.jsonl",)
    config.data.train_prompts = 16384
    config.data.test_prompts = 512
    config.data.max_prompt_tokens = 512
    config.data.max_response_tokens = 64
    config.pool.prompts_per_call = 64
    config.dpo.betas = (0.05, 0.1, 0.5)
    config.dpo.length_normalised = (False, True)
    config.ipo.betas = (0.05, 0.1, 0.5)
    config.ipo.length_normalised = (False, True)
    config.sft_best.ns = (8, 32)
    config.eval.reference_samples = 64
    config.eval.prompts_per_call = 64
    config.eval.bon_ns = (1, 2, 4, 8, 16, 32)
    return config
