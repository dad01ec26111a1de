"""Regularised Best-of-N (bonjax.rbon): beta = 0 is Best-of-N, a large beta picks the most
likely sample (KL) or the medoid (MBR), with MiniLM sentence embeddings of decoded text."""

import jax
import numpy as np
import pytest

from bonjax import bon, rbon

REWARDS = np.array([[0.1, 2.0, 2.0, -1.0, 0.5],
                    [np.nan, 1.0, 3.0, 0.0, 3.0]], np.float32)
LOG_REF = np.array([[-3.0, -9.0, -2.0, -1.0, -np.inf],
                    [-1.0, -0.5, -7.0, -4.0, -2.0]], np.float32)


def test_kl_rule_beta_zero_is_best_of_n_and_large_beta_the_most_likely_sample():
    best_B, _ = bon.select_best_and_worst(REWARDS)
    np.testing.assert_array_equal(rbon.select_regularised(REWARDS, LOG_REF, 0.0), best_B)
    np.testing.assert_array_equal(rbon.select_regularised(REWARDS, LOG_REF, 1e4), [3, 1])
    # In between: r + beta log pi_ref trades the two (row 0: 2 - 2 beta vs -1 - beta).
    np.testing.assert_array_equal(rbon.select_regularised(REWARDS, LOG_REF, 0.5), [2, 4])


def test_mbr_rule_beta_zero_is_best_of_n_and_large_beta_the_medoid():
    rng = np.random.default_rng(0)
    centre = rng.normal(size=8)
    emb_BxNxD = np.stack([centre + 0.1 * rng.normal(size=(5, 8)) for _ in range(2)])
    emb_BxNxD[0, 4] = -centre  # an outlier
    emb_BxNxD[1, 2] = centre  # the exact centre: the medoid of row 1
    sim_BxN = np.asarray(rbon.mean_cosine_similarity(emb_BxNxD))
    unit = emb_BxNxD / np.linalg.norm(emb_BxNxD, axis=-1, keepdims=True)
    np.testing.assert_allclose(sim_BxN, np.einsum("bnd,bmd->bnm", unit, unit).mean(-1),
                               rtol=1e-5)
    best_B, _ = bon.select_best_and_worst(REWARDS)
    np.testing.assert_array_equal(rbon.select_mbr(REWARDS, emb_BxNxD, 0.0), best_B)
    chosen = np.asarray(rbon.select_mbr(REWARDS, emb_BxNxD, 1e4))
    np.testing.assert_array_equal(chosen, sim_BxN.argmax(1))
    assert chosen[0] != 4 and chosen[1] == 2


def test_bad_beta_raises_value_error_naming_the_value():
    for bad in [-0.1, float("nan")]:
        with pytest.raises(ValueError, match=f"beta must be finite and >= 0, got {bad}"):
            rbon.select_regularised(REWARDS, LOG_REF, bad)
        with pytest.raises(ValueError, match=f"got {bad}"):
            rbon.select_mbr(REWARDS, np.ones((2, 5, 3)), bad)


def test_kl_rule_on_the_toy_reads_the_reference_log_probabilities():
    from bonjax.sampling import Sampler, Temperature
    from bonjax.toy import ToyProblem

    toy = ToyProblem(seed=1)
    sampler = Sampler(toy.lm, Temperature(1.0), toy.length)
    tokens, mask = toy.prompts(4)
    out = rbon.regularised_best_of_n(sampler, toy.ref_params, tokens, mask, jax.random.key(0),
                                     6, toy.reward, beta=1e3)
    log_pi_S = toy.log_probs(toy.ref_params)
    drawn_BxN = np.asarray(toy.index_of(out.samples.tokens_BxNxT))
    np.testing.assert_allclose(out.regulariser_BxN, log_pi_S[drawn_BxN], atol=1e-4)
    chosen = np.asarray(toy.index_of(out.tokens_BxT))
    np.testing.assert_array_equal(log_pi_S[chosen], log_pi_S[drawn_BxN].max(1))
    with pytest.raises(ValueError, match="Temperature"):
        rbon.regularised_best_of_n(Sampler(toy.lm, Temperature(0.7), toy.length),
                                   toy.ref_params, tokens, mask, jax.random.key(0), 6,
                                   toy.reward, beta=1.0)


class _WordTokenizer:
    """A policy tokenizer over a fixed word list (token id = word index)."""

    words = ["the", "film", "movie", "was", "great", "good", "quantum", "chromodynamics",
             "lattice", "gauge"]

    def decode(self, ids):
        return " ".join(self.words[i] for i in ids)


def test_mbr_with_minilm_embeddings_picks_a_paraphrase_not_the_outlier():
    from bonjax.rewards.similarity import load_minilm_embedder

    embed = load_minilm_embedder(_WordTokenizer(), max_length=16)
    sentences = [[0, 1, 3, 4], [0, 2, 3, 4], [0, 1, 3, 5], [6, 7, 8, 9]]
    tokens_1xNxT = np.array([sentences], np.int32)
    mask_1xNxT = np.ones_like(tokens_1xNxT, bool)
    prompt, prompt_mask = np.zeros((1, 1), np.int32), np.ones((1, 1), bool)
    emb_1xNxD = np.asarray(embed(prompt, prompt_mask, tokens_1xNxT, mask_1xNxT))
    assert emb_1xNxD.shape == (1, 4, 384)
    sim_N = np.asarray(rbon.mean_cosine_similarity(emb_1xNxD))[0]
    assert sim_N[:3].min() > sim_N[3] + 0.1, sim_N  # the physics sentence is the outlier
    rewards = np.array([[0.0, 0.0, 0.0, 1.0]], np.float32)  # BoN would pick the outlier
    assert int(rbon.select_mbr(rewards, emb_1xNxD, 0.0)[0]) == 3
    assert int(rbon.select_mbr(rewards, emb_1xNxD, 100.0)[0]) == int(sim_N.argmax()) != 3
