"""The BoNBoN system on Anthropic HH-RLHF at the paper's scale, for accelerators.

    python experiments/bonbon.py --config=experiments/configs/bonbon_hh.py --run_dir=DIR

Pythia-2.8B fine-tuned on the chosen replies (the SFT stage) as pi_ref, the
OpenAssistant/reward-model-deberta-v3-large-v2 reward, n in {2, 4, 8, 16, 32} from one pool of
N = 32 samples per prompt, BoNBoN with alpha = 0.005 (Gui, Garbacea, Veitch 2024), DPO and IPO
(sequence-sum and length-normalised) over a beta sweep on the best and worst of 8, SFT-on-best;
parameters and optimiser state sharded over every device (FSDP, mesh (1, -1, 1)), bfloat16
matmuls. The prompt counts, lengths and optimiser settings are this config's choices, not
values taken from the paper. Per-device memory of one training step and one sampling call on
8 devices: ``python -m experiments.bench_mesh_memory --system=bonbon_hh``.
"""

from experiments.configs import bonbon_base


def get_config():
    config = bonbon_base.get_config()
    config.remat = "block"  # a step's activations do not fit 80 GB per device otherwise
    config.data.train_prompts = 16384
    config.data.test_prompts = 512
    config.sft.epochs = 1
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
