"""An exactly solvable Best-of-N problem: a tiny language model over an enumerable space.

A tiny GPT-2 generates ``T`` tokens from a vocabulary of ``V`` after a one-token prompt, so the
``V ** T`` completions can be enumerated: ``pi(y)`` is exact (teacher-forced over all of them),
the reward is a fixed table over whole sequences, and ``pi_BoN`` follows exactly from
``bonjax.bon`` (ties broken by draw index, as the library's selection does). Training any method
on it can then be judged by the exact ``KL(pi_theta || pi_BoN)`` instead of a noisy estimate.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bonjax import bon
from bonjax.models.decoder import DecoderLM
from bonjax.models.gpt2 import GPT2Config
from bonjax.objectives.infalign import Exponential
from bonjax.sampling.scorer import completion_logprobs

__all__ = ["TOY_METHODS", "TOY_SETTINGS", "ToyProblem", "ToySetting", "compare_with_vbon",
           "toy_target", "train_on_toy", "train_to_own_target", "train_toward_target"]


@dataclasses.dataclass(frozen=True, eq=False)
class ToyProblem:
    """``V ** T`` completions of one prompt token, a random reward table, a random ``pi_ref``.

    Attributes:
      vocab_size: V (the prompt token is one of them; every token is a valid output).
      length: T, tokens per completion (no EOS: every completion has exactly T tokens).
      seed: draws the reference model's weights and the reward table.
      logit_scale: multiplies the random token embedding, making ``pi_ref`` far from uniform.
    """

    vocab_size: int = 5
    length: int = 3
    seed: int = 0
    logit_scale: float = 2.0

    def __post_init__(self):
        if self.vocab_size < 2 or self.length < 1:
            raise ValueError(f"need vocab_size >= 2 and length >= 1, got {self.vocab_size}, "
                             f"{self.length}")
        config = GPT2Config.tiny(vocab_size=self.vocab_size, max_positions=self.length + 1,
                                 eos_id=-1, pad_id=0, bos_id=0)
        lm, params = DecoderLM.init(config, jax.random.key(self.seed))
        params = jax.tree.map(lambda x: x, params)
        params["wte"].value = params["wte"].value * self.logit_scale
        rng = np.random.default_rng(self.seed)
        sequences = np.array(list(itertools.product(range(self.vocab_size), repeat=self.length)),
                             np.int32)
        object.__setattr__(self, "lm", lm)
        object.__setattr__(self, "ref_params", params)
        object.__setattr__(self, "sequences_SxT", sequences)
        object.__setattr__(self, "reward_S", rng.normal(size=len(sequences)).astype(np.float32))

    # ------------------------------------------------------------------------- prompts

    def prompts(self, batch_size: int) -> tuple[jax.Array, jax.Array]:
        """``batch_size`` copies of the one-token prompt (token 0)."""
        return (jnp.zeros((batch_size, 1), jnp.int32), jnp.ones((batch_size, 1), jnp.bool_))

    # ------------------------------------------------------------------------- reward

    def index_of(self, tokens_xT: jax.Array) -> jax.Array:
        """The enumeration index of each completion (base V, first token most significant)."""
        weights_T = self.vocab_size ** jnp.arange(self.length - 1, -1, -1)
        return jnp.sum(tokens_xT.astype(jnp.int32) * weights_T, axis=-1)

    def reward(self, prompt_tokens_BxP, prompt_mask_BxP, tokens_BxSxT, mask_BxSxT) -> jax.Array:
        """The reward table looked up for every completion, ``[B, S]`` (jit-compatible)."""
        return jnp.asarray(self.reward_S)[self.index_of(tokens_BxSxT)]

    # ------------------------------------------------------------------------- exact laws

    def log_probs(self, params: nnx.State) -> np.ndarray:
        """Exact ``log pi(y)`` of all ``V ** T`` completions under ``params``, float64."""
        S = len(self.sequences_SxT)
        prompt_tokens, prompt_mask = self.prompts(1)
        tokens_1xSxT = jnp.asarray(self.sequences_SxT)[None]
        logp_1xSxT = completion_logprobs(self.lm, params, prompt_tokens, prompt_mask, tokens_1xSxT,
                                         jnp.ones((1, S, self.length), jnp.bool_)).logp_BxNxT
        return np.asarray(logp_1xSxT[0], np.float64).sum(-1)

    def probs(self, params: nnx.State) -> np.ndarray:
        logp_S = self.log_probs(params)
        p_S = np.exp(logp_S - logp_S.max())
        return p_S / p_S.sum()

    def bon_probs(self, n: int) -> np.ndarray:
        """Exact ``pi_BoN`` of the reference for ``n`` draws (ties by draw index)."""
        return bon.bon_distribution_draw_index(self.probs(self.ref_params), self.reward_S, n)

    @staticmethod
    def kl(p_S: np.ndarray, q_S: np.ndarray) -> float:
        """``KL(p || q)`` in nats (``0 log 0 = 0``)."""
        support = p_S > 0
        return float(np.sum(p_S[support] * (np.log(p_S[support]) - np.log(q_S[support]))))

    def expected_reward(self, p_S: np.ndarray) -> float:
        return float(np.dot(p_S, self.reward_S))


TOY_METHODS = ("vbon", "bonbon", "bond", "jbond", "kl_rl")

# The toy's settings where an objective's default is not the toy's: BoNBoN's SFT weight.
_TOY_FIELDS = {"bonbon": {"alpha": 0.005}}


def _toy_method(name: str, n: int, samples_per_prompt: int, kl_beta: float, optimizer: str):
    """``(objective, method)`` of a registered method at the toy's settings: ``n`` for the
    methods set by N or n, ``kl_beta`` for the ones set by a KL weight beta."""
    from bonjax.training.registry import METHODS, build_method

    if name not in TOY_METHODS:
        raise ValueError(f"unknown toy method {name!r}; choose one of {TOY_METHODS}")
    spec = METHODS[name]
    fields = dict(_TOY_FIELDS.get(name, {}))
    if spec.setting == "n":
        fields["n"] = n
    elif spec.setting == "beta":
        fields["beta"] = kl_beta
    args = {"samples_per_prompt": samples_per_prompt, "n": n}
    _, objective, method = build_method(
        name, optimizer if optimizer in spec.optimizers else spec.optimizers[0],
        {a: args[a] for a in spec.method_args if a != "clip_eps"}, **fields)
    return objective, method


def _reference_rewards(toy: ToyProblem, num_refs: int, seed: int) -> np.ndarray:
    """``num_refs`` pi_ref rewards of the toy's prompt, ``[M]`` (key ``seed + 1``)."""
    from bonjax.sampling.sampler import Sampler
    from bonjax.sampling.strategies import Temperature
    from bonjax.training.reference import reference_rewards

    sampler = Sampler(toy.lm, Temperature(1.0), toy.length)
    prompt_tokens, prompt_mask = toy.prompts(1)
    return reference_rewards(sampler, toy.ref_params, toy.reward, np.asarray(prompt_tokens),
                             np.asarray(prompt_mask), num_refs, jax.random.key(seed + 1),
                             progress=False)[0]


def _train(toy: ToyProblem, method, *, steps: int, learning_rate: float, prompts: int,
           ref_rewards_M: np.ndarray | None, epochs: int, seed: int, lora=None,
           train_top: int | None = None,
           record_at: tuple[int, ...] = ()) -> tuple[dict[int, np.ndarray], np.ndarray | None]:
    """Trains ``method`` on the toy's prompts for ``steps`` steps (every prompt with the
    reference store ``ref_rewards_M`` when given).

    Returns:
      the exact law of the policy after step 0 (the start), each step of ``record_at`` and the
      last step, by step; and the exact law of the anchor at the end (None without an anchor).
    """
    from bonjax.training.reference import reference_store
    from bonjax.training.trainer import OptimizerConfig, Trainer

    prompt_tokens, prompt_mask = toy.prompts(prompts)
    ref_rewards = None
    if ref_rewards_M is not None:
        ref_rewards = reference_store(np.repeat(np.asarray(ref_rewards_M)[None], prompts, 0))
    trainer = Trainer(toy.lm, toy.ref_params, method, toy.reward, max_new_tokens=toy.length,
                      optimizer=OptimizerConfig(learning_rate=learning_rate, epochs=epochs,
                                                decay_steps=steps * epochs, lora=lora,
                                                train_top=train_top),
                      ref_rewards=ref_rewards)
    state = trainer.init_state(jax.random.key(seed + 2))
    laws = {0: toy.probs(toy.ref_params)}
    for step in range(1, steps + 1):
        state, _ = trainer.step(state, prompt_tokens, prompt_mask)
        if step in record_at or step == steps:
            laws[step] = toy.probs(state.full_params())
    anchor = trainer.anchor_params(state)
    return laws, None if anchor is None else toy.probs(anchor)


def train_on_toy(method: str, *, n: int = 4, steps: int = 300, learning_rate: float = 1e-2,
                 prompts: int = 64, samples_per_prompt: int = 4, num_refs: int = 512,
                 epochs: int = 2, kl_beta: float = 0.1, seed: int = 0,
                 optimizer: str = "rloo", problem: ToyProblem | None = None,
                 lora=None, train_top: int | None = None) -> dict:
    """Trains ``method`` on the toy and reports exact KL to ``pi_BoN`` and rewards, start and end.

    J-BOND distils BoN with n = 2 by construction; its ``n`` in the report is 2. ``optimizer``
    (``"rloo"`` or ``"ppo"``, value head and GAE) applies to ``vbon`` and ``kl_rl`` only.
    ``lora`` (a ``bonjax.models.lora.LoRAConfig``) trains adapters instead of every parameter;
    ``train_top`` trains the top blocks and the final norm only (no embeddings).
    """
    toy = problem or ToyProblem(seed=seed)
    n = 2 if method == "jbond" else n
    _, chosen = _toy_method(method, n, samples_per_prompt, kl_beta, optimizer)
    p_bon = toy.bon_probs(n)
    refs_M = _reference_rewards(toy, num_refs, seed) if method == "vbon" else None
    laws, _ = _train(toy, chosen, steps=steps, learning_rate=learning_rate, prompts=prompts,
                     ref_rewards_M=refs_M, epochs=epochs, seed=seed, lora=lora,
                     train_top=train_top)
    p_start, p_end = laws[0], laws[steps]
    return {"method": method, "optimizer": optimizer if method in ("vbon", "kl_rl") else None,
            "n": n, "steps": steps,
            "kl_to_bon_start": toy.kl(p_start, p_bon), "kl_to_bon_end": toy.kl(p_end, p_bon),
            "reward_start": toy.expected_reward(p_start),
            "reward_end": toy.expected_reward(p_end), "bon_reward": toy.expected_reward(p_bon),
            "kl_to_ref_end": toy.kl(p_end, p_start)}


def train_toward_target(method, target_S: np.ndarray, *, steps: int = 60,
                        learning_rate: float = 1e-2, prompts: int = 16, num_refs: int = 0,
                        epochs: int = 2, seed: int = 0, problem: ToyProblem | None = None,
                        ref_rewards_M: np.ndarray | None = None) -> dict:
    """Trains any :class:`~bonjax.training.protocol.Method` on the toy and reports the exact
    ``KL(pi_theta || target)`` and expected rewards at the start and the end.

    ``target_S`` is the method's own closed-form optimum over the ``V ** T`` completions (e.g.
    :func:`bonjax.objectives.ctrl_optimal_policy`, :func:`toy_target`). With ``num_refs > 0``
    the prompts get a cached reference store of that many pi_ref rewards
    (``Context.ref_rewards``); ``ref_rewards_M`` gives the store's rewards instead.
    """
    toy = problem or ToyProblem(seed=seed)
    if ref_rewards_M is None and num_refs:
        ref_rewards_M = _reference_rewards(toy, num_refs, seed)
    laws, _ = _train(toy, method, steps=steps, learning_rate=learning_rate, prompts=prompts,
                     ref_rewards_M=ref_rewards_M, epochs=epochs, seed=seed)
    p_start, p_end = laws[0], laws[steps]
    return {"method": type(method).__name__, "steps": steps,
            "kl_to_target_start": toy.kl(p_start, target_S),
            "kl_to_target_end": toy.kl(p_end, target_S),
            "reward_start": toy.expected_reward(p_start), "reward_end": toy.expected_reward(p_end),
            "target_reward": toy.expected_reward(target_S), "kl_to_ref_end": toy.kl(p_end, p_start)}


# ---------------------------------------------------------------------------------------------
# Every registered method towards its own closed-form target


@dataclasses.dataclass(frozen=True)
class ToySetting:
    """One registered method's settings on the toy.

    Attributes:
      fields: its objective config's fields (``{"n": 4}``, ``{"beta": 0.5}``).
      method_kwargs: its method's training settings (``samples_per_prompt``, ``n``).
      steps, learning_rate: the training run (AdamW, cosine decay to 0 over the run).
      optimizer: ``"rloo"`` or ``"ppo"`` for the methods that take either.
    """

    fields: dict
    method_kwargs: dict = dataclasses.field(default_factory=lambda: {"samples_per_prompt": 4})
    steps: int = 300
    learning_rate: float = 1e-2
    optimizer: str = "rloo"


# The settings of experiments/results/toy_targets.jsonl (measured there): each method at a
# setting whose target is neither pi_ref nor a point mass.
TOY_SETTINGS: dict[str, ToySetting] = {
    "vbon": ToySetting({"n": 4}),
    "kl_rl": ToySetting({"beta": 0.5}),
    "bonbon": ToySetting({"n": 4, "alpha": 0.005}, {"n": 4}),
    "dpo": ToySetting({"beta": 0.1}, {"n": 4}),
    "ipo": ToySetting({"beta": 0.1}, {"n": 4}),
    "bond": ToySetting({"n": 4}),
    "jbond": ToySetting({}, {}),
    "ctrl": ToySetting({"transform": Exponential(2.0), "beta": 2.0}),
    "qrpo": ToySetting({"beta": 1.0 / 3.0}),
    "max_at_k": ToySetting({"k": 2, "beta": 1.0}, {"samples_per_prompt": 8}),
}


def _tilt(pi_ref_S: np.ndarray, logits_S: np.ndarray) -> np.ndarray:
    weight_S = pi_ref_S * np.exp(logits_S - logits_S.max())
    return weight_S / weight_S.sum()


def _best_worst_pairs(pi_ref_S: np.ndarray, reward_S: np.ndarray, n: int) -> np.ndarray:
    """``P[w, l]``: the chance that the best of n pi_ref samples is outcome w and the worst is
    outcome l (distinct rewards; ``w = l`` when all n draws coincide)."""
    order = np.argsort(reward_S)
    if np.any(np.diff(reward_S[order]) == 0):
        raise ValueError("the best-worst pair law here needs distinct rewards")
    cdf = np.concatenate([[0.0], np.cumsum(pi_ref_S[order])])  # cdf[i]: mass of ranks < i
    hi, lo = np.arange(len(order))[:, None], np.arange(len(order))[None, :]

    def mass(a, b):  # of the ranks a..b-1 (0 where b <= a)
        return np.maximum(cdf[np.maximum(b, a)] - cdf[a], 0.0)

    # hi > lo: all n draws in ranks [lo, hi], both ends hit (inclusion-exclusion).
    pair_HxL = (mass(lo, hi + 1) ** n - mass(lo + 1, hi + 1) ** n - mass(lo, hi) ** n
                + mass(lo + 1, hi) ** n) * (hi > lo)
    pair_HxL += np.diag(pi_ref_S[order] ** n)
    pair_SxS = np.empty_like(pair_HxL)
    pair_SxS[np.ix_(order, order)] = pair_HxL
    return pair_SxS


def _ipo_optimum(pi_ref_S: np.ndarray, reward_S: np.ndarray, n: int, beta: float) -> np.ndarray:
    """The minimiser of IPO's ``E[(h(y_w) - h(y_l) - 1/(2 beta))^2]``, ``h = log pi/pi_ref``,
    over the (best, worst) pairs of n pi_ref samples (distinct rewards): the normal equations
    ``L h = d / (2 beta)`` of the pair graph's Laplacian L, then normalised. (Pairs of one
    outcome twice add a constant to the loss and nothing to L or d.)"""
    pair_WxL = _best_worst_pairs(pi_ref_S, reward_S, n)
    np.fill_diagonal(pair_WxL, 0.0)
    laplacian = -(pair_WxL + pair_WxL.T)
    np.fill_diagonal(laplacian, pair_WxL.sum(0) + pair_WxL.sum(1))
    drive = (pair_WxL.sum(1) - pair_WxL.sum(0)) / (2.0 * beta)
    h_S = np.linalg.lstsq(laplacian, drive, rcond=None)[0]
    return _tilt(pi_ref_S, h_S)


def toy_target(name: str, method, toy: ToyProblem,
               ref_rewards_M: np.ndarray | None = None) -> np.ndarray | None:
    """The closed-form law the registered method ``name`` (``method``, built by
    :func:`~bonjax.training.build_method`) trains towards on the toy, float64 ``[S]``.

    - vbon: ``pi_ref F_hat^(N-1) / Z``, ``F_hat = (1 + #{r_m < r}) / (M + 1)`` of the
      reference store (the optimum of ``E log F_hat - KL / (N-1)``);
    - kl_rl: ``pi_ref e^{r / beta} / Z``;
    - bonbon, bond: Best-of-N of pi_ref (ties by draw index); jbond: Best-of-2 of pi_ref, the
      target of its first step (the EMA anchor then moves it: :func:`train_to_own_target`
      measures the end against Best-of-2 of the final anchor);
    - ipo: the minimiser of its loss on best-worst pairs of n pi_ref samples (``_ipo_optimum``);
    - dpo: None: on best-worst pairs its loss has no minimiser (its infimum 0 is approached
      only as the policy puts all its mass on the top-reward outcome; training from samples
      need not head there);
    - ctrl: ``pi_ref exp(Phi(C_hat) / beta) / Z``, ``C_hat`` from the reference store as the
      method computes it; qrpo: ``pi_ref exp(f(q_hat) / beta) / Z`` likewise
      (:func:`~bonjax.objectives.qrpo_optimal_policy` with the store's quantiles);
    - max_at_k: the stationary point :func:`~bonjax.objectives.max_at_k_optimal_policy`.

    Raises:
      ValueError: for an unknown name, vBoN's exact variant, or a store-reading method
        without ``ref_rewards_M``.
    """
    from bonjax import objectives as obj

    objective = method.objective
    pi_S, r_S = toy.probs(toy.ref_params), np.asarray(toy.reward_S, np.float64)
    if name in ("vbon", "ctrl", "qrpo"):
        if ref_rewards_M is None:
            raise ValueError(f"the {name} target needs the reference store's rewards")
        refs_M = np.asarray(ref_rewards_M, np.float64)
        below_S = (refs_M[None, :] < r_S[:, None]).sum(1)
        at_or_below_S = (refs_M[None, :] <= r_S[:, None]).sum(1)
        M = refs_M.size
    if name == "vbon":
        if objective.exact:
            raise ValueError("the toy has no target for vBoN's exact variant")
        return _tilt(pi_S, (objective.n - 1) * np.log((1 + below_S) / (M + 1)))
    if name == "kl_rl":
        return bon.tilted_distribution(pi_S, r_S, objective.beta)
    if name in ("bonbon", "bond", "jbond"):
        return bon.bon_distribution_draw_index(pi_S, r_S, getattr(objective, "n", 2))
    if name == "ipo":
        return _ipo_optimum(pi_S, r_S, method.n, objective.beta)
    if name == "dpo":
        return None
    if name == "ctrl":
        c_S = np.maximum((below_S + at_or_below_S) / (2 * M), 0.5 / M)
        return _tilt(pi_S, objective.transform(c_S) / objective.beta)
    if name == "qrpo":
        q_S = np.asarray(obj.reference_quantiles(at_or_below_S, M, objective), np.float64)
        return _tilt(pi_S, objective.f(q_S) / objective.beta)
    if name == "max_at_k":
        return obj.max_at_k_optimal_policy(pi_S, r_S, objective.k, objective.beta)
    raise ValueError(f"unknown method {name!r}; the toy knows {', '.join(TOY_SETTINGS)}")


def train_to_own_target(name: str, *, setting: ToySetting | None = None, prompts: int = 64,
                        num_refs: int = 512, epochs: int = 2, seed: int = 0,
                        problem: ToyProblem | None = None) -> dict:
    """Trains the registered method ``name`` (:data:`bonjax.training.METHODS`) at ``setting``
    (default :data:`TOY_SETTINGS`) and reports the exact KL to its own target
    (:func:`toy_target`) and the expected rewards, start and end. DPO, which has no target,
    reports where its policy went instead: the mass of its mode, the mode's reward rank (1: the
    highest reward of the toy) and the mass left on the top-reward outcome."""
    from bonjax.training.registry import METHODS, build_method

    setting = setting or TOY_SETTINGS[name]
    toy = problem or ToyProblem(seed=seed)
    spec = METHODS[name]
    optimizer = setting.optimizer if setting.optimizer in spec.optimizers else spec.optimizers[0]
    _, objective, method = build_method(name, optimizer, setting.method_kwargs, **setting.fields)
    refs_M = _reference_rewards(toy, num_refs, seed) if spec.needs_reference_cdf else None
    target_S = toy_target(name, method, toy, refs_M)
    laws, anchor_S = _train(toy, method, steps=setting.steps,
                            learning_rate=setting.learning_rate, prompts=prompts,
                            ref_rewards_M=refs_M, epochs=epochs, seed=seed)
    p_start, p_end = laws[0], laws[setting.steps]
    target_end_S = target_S
    if name == "jbond":  # its target moves with the EMA anchor: Best-of-2 of the final anchor
        target_end_S = bon.bon_distribution_draw_index(anchor_S, toy.reward_S, 2)
    result = {"method": name, "setting": spec.describe(objective, optimizer),
              "steps": setting.steps, "learning_rate": setting.learning_rate,
              "reward_start": toy.expected_reward(p_start),
              "reward_end": toy.expected_reward(p_end), "kl_to_ref_end": toy.kl(p_end, p_start)}
    if target_S is None:  # where the policy went instead: its mode and that outcome's reward
        mode = int(np.argmax(p_end))
        rank = int(np.sum(toy.reward_S > toy.reward_S[mode])) + 1
        top = int(np.argmax(toy.reward_S))
        return {**result, "target": None, "mode_mass_end": float(p_end[mode]),
                "mode_reward_rank": rank, "top_outcome_mass_end": float(p_end[top])}
    return {**result, "kl_to_target_start": toy.kl(p_start, target_S),
            "kl_to_target_end": toy.kl(p_end, target_end_S),
            "target_reward": toy.expected_reward(target_end_S),
            "target_kl_to_ref": toy.kl(target_end_S, p_start)}


def compare_with_vbon(*, n: int = 4, steps: int = 300, record_every: int = 50,
                      learning_rate: float = 1e-2, prompts: int = 64, samples_per_prompt: int = 4,
                      num_refs: int = 512, epochs: int = 2, seed: int = 0,
                      problem: ToyProblem | None = None) -> list[dict]:
    """QRPO (``f = log``, ``beta = 1/(N-1)``: the Best-of-N target without RL) against vBoN
    optimised by RLOO and by PPO, at the same N, reference store, prompts, samples per prompt,
    steps and step size: the exact ``KL(pi || pi_BoN)`` and expected reward every
    ``record_every`` steps, with the number of completions sampled so far (QRPO's from pi_ref,
    vBoN's from the policy; the M reference rewards are shared and not counted).

    Returns:
      one dict per (method, recorded step).
    """
    from bonjax import objectives as obj
    from bonjax.training.registry import method_for

    toy = problem or ToyProblem(seed=seed)
    refs_M = _reference_rewards(toy, num_refs, seed)
    p_bon = toy.bon_probs(n)
    runs = {"qrpo": method_for(obj.QRPOConfig(beta=1.0 / (n - 1)),
                               samples_per_prompt=samples_per_prompt),
            "vbon_rloo": method_for(obj.VBoNConfig(n=n), "rloo",
                                    samples_per_prompt=samples_per_prompt),
            "vbon_ppo": method_for(obj.VBoNConfig(n=n), "ppo",
                                   samples_per_prompt=samples_per_prompt)}
    rows = []
    for label, method in runs.items():
        laws, _ = _train(toy, method, steps=steps, learning_rate=learning_rate,
                         prompts=prompts, ref_rewards_M=refs_M, epochs=epochs, seed=seed,
                         record_at=tuple(range(record_every, steps + 1, record_every)))
        rows += [{"method": label, "n": n, "step": step,
                  "samples": step * prompts * samples_per_prompt,
                  "kl_to_bon": toy.kl(p_S, p_bon), "reward": toy.expected_reward(p_S),
                  "bon_reward": toy.expected_reward(p_bon), "kl_to_ref": toy.kl(p_S, laws[0])}
                 for step, p_S in sorted(laws.items())]
    return rows
