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
from bonjax.sampling.scorer import completion_logprobs

__all__ = ["TOY_METHODS", "ToyProblem", "train_on_toy", "train_toward_target"]


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


def _train(toy: ToyProblem, method, *, steps: int, learning_rate: float, prompts: int,
           num_refs: int, epochs: int, seed: int, lora=None,
           train_top: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Trains ``method`` on the toy's prompts for ``steps`` steps (with a reference store of
    ``num_refs`` pi_ref rewards per prompt when ``num_refs > 0``); returns the exact laws of the
    policy at the start and the end, ``(p_start_S, p_end_S)``."""
    from bonjax.sampling.sampler import Sampler
    from bonjax.sampling.strategies import Temperature
    from bonjax.training.reference import reference_rewards, reference_store
    from bonjax.training.trainer import OptimizerConfig, Trainer

    prompt_tokens, prompt_mask = toy.prompts(prompts)
    ref_rewards = None
    if num_refs:
        sampler = Sampler(toy.lm, Temperature(1.0), toy.length)
        rewards_1xM = reference_rewards(sampler, toy.ref_params, toy.reward,
                                        np.asarray(prompt_tokens[:1]),
                                        np.asarray(prompt_mask[:1]), num_refs,
                                        jax.random.key(seed + 1), progress=False)
        ref_rewards = reference_store(np.repeat(rewards_1xM, prompts, axis=0))
    trainer = Trainer(toy.lm, toy.ref_params, method, toy.reward, max_new_tokens=toy.length,
                      optimizer=OptimizerConfig(learning_rate=learning_rate, epochs=epochs,
                                                decay_steps=steps * epochs, lora=lora,
                                                train_top=train_top),
                      ref_rewards=ref_rewards)
    state = trainer.init_state(jax.random.key(seed + 2))
    for _ in range(steps):
        state, _ = trainer.step(state, prompt_tokens, prompt_mask)
    return toy.probs(toy.ref_params), toy.probs(state.full_params())


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
    p_start, p_end = _train(toy, chosen, steps=steps, learning_rate=learning_rate,
                            prompts=prompts, num_refs=num_refs if method == "vbon" else 0,
                            epochs=epochs, seed=seed, lora=lora, train_top=train_top)
    return {"method": method, "optimizer": optimizer if method in ("vbon", "kl_rl") else None,
            "n": n, "steps": steps,
            "kl_to_bon_start": toy.kl(p_start, p_bon), "kl_to_bon_end": toy.kl(p_end, p_bon),
            "reward_start": toy.expected_reward(p_start),
            "reward_end": toy.expected_reward(p_end), "bon_reward": toy.expected_reward(p_bon),
            "kl_to_ref_end": toy.kl(p_end, p_start)}


def train_toward_target(method, target_S: np.ndarray, *, steps: int = 60,
                        learning_rate: float = 1e-2, prompts: int = 16, num_refs: int = 0,
                        epochs: int = 2, seed: int = 0,
                        problem: ToyProblem | None = None) -> dict:
    """Trains any :class:`~bonjax.training.protocol.Method` on the toy and reports the exact
    ``KL(pi_theta || target)`` and expected rewards at the start and the end.

    ``target_S`` is the method's own closed-form optimum over the ``V ** T`` completions (e.g.
    :func:`bonjax.objectives.ctrl_optimal_policy`). With ``num_refs > 0`` the prompts get a
    cached reference store of that many pi_ref rewards (``Context.ref_rewards``).
    """
    toy = problem or ToyProblem(seed=seed)
    p_start, p_end = _train(toy, method, steps=steps, learning_rate=learning_rate,
                            prompts=prompts, num_refs=num_refs, epochs=epochs, seed=seed)
    return {"method": type(method).__name__, "steps": steps,
            "kl_to_target_start": toy.kl(p_start, target_S),
            "kl_to_target_end": toy.kl(p_end, target_S),
            "reward_start": toy.expected_reward(p_start), "reward_end": toy.expected_reward(p_end),
            "target_reward": toy.expected_reward(target_S), "kl_to_ref_end": toy.kl(p_end, p_start)}
