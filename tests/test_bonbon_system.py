"""The BoNBoN system end to end on the tiny config (random tiny GPT-2, VADER) and HH fixture files.

One run goes in three calls: the first stops after 2 of the SFT stage's 3 steps, the second
after the last SFT step, the pools and the first of BoNBoN n = 2's two steps, the third runs to
the end. Another run goes through uninterrupted. The tests check the files of every stage, that
the two runs agree exactly, that the pools are drawn once, that the SFT stage's parameters are
the pi_ref the pools were drawn from, and that bad input is refused before any long work.
"""

import json
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _preference_fixtures import hh_variants, write_jsonl

from bonjax.experiment import (
    check_bonbon_config,
    reference_id,
    reference_policy,
    run_bonbon_system,
    system_runs,
)
from bonjax.experiment.bonbon_data import read_records, system_data
from bonjax.experiment.components import load_policy
from bonjax.sampling.scorer import completion_logprobs
from bonjax.training import read_metrics
from bonjax.training.reference_pool import ReferencePool
from experiments import configs

KEYS = ("bonbon-n2", "bonbon-n4", "dpo-beta0.1", "ipo-length-normalised-beta0.5", "sft_best-n4")


def _config(directory: pathlib.Path, **data_files):
    """The tiny config on 8 training and 5 held-out HH fixture records (6 and 4 are used)."""
    directory.mkdir(parents=True, exist_ok=True)
    train = data_files.get("train") or write_jsonl(directory / "train.jsonl", hh_variants(8))
    test = data_files.get("test") or write_jsonl(directory / "test.jsonl", hh_variants(5))
    config = configs.get("bonbon_tiny")
    config.data.train_files = (str(train),)
    config.data.test_files = (str(test),)
    return config


def _files(run_dir: pathlib.Path) -> dict:
    """The run's files: JSON and Markdown contents, checkpoint steps and pools by name."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if path.is_file() and path.suffix in (".json", ".jsonl", ".md"):
            out[rel] = path.read_text()
        elif path.is_file() and path.suffix == ".npz":
            out[rel] = os.stat(path).st_mtime_ns
        elif path.is_dir() and path.parent.name == "checkpoints":
            out[rel] = "checkpoint"
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bonbon")
    config = _config(root / "data")
    resumed = root / "resumed"
    first = run_bonbon_system(config, resumed, step_budget=2, progress=False)
    after_first = _files(resumed)
    second = run_bonbon_system(config, resumed, step_budget=2, progress=False)
    after_second = _files(resumed)
    third = run_bonbon_system(config, resumed, progress=False)
    whole = run_bonbon_system(config, root / "whole", progress=False)
    return {"root": root, "config": config, "dir": resumed, "first": first,
            "after_first": after_first, "second": second, "after_second": after_second,
            "third": third, "after_third": _files(resumed), "whole": whole}


def test_calls_stop_at_the_step_budget_and_continue(runs):
    first, second, third = runs["first"], runs["second"], runs["third"]
    files = runs["after_first"]
    assert not first.complete and not first.methods and not first.bon
    assert "sft/checkpoints/2" in files and not any(k.startswith("pool/") for k in files)
    assert "INCOMPLETE" in files["results.md"]
    files = runs["after_second"]
    assert not second.complete and "sft/checkpoints/3" in files
    assert len([k for k in files if k.startswith("pool/")]) == 2  # training and held-out pools
    assert "bonbon-n2/checkpoints/1" in files and "bonbon-n2/eval.json" not in files
    assert third.complete and [r["key"] for r in third.methods] == list(KEYS)
    run = json.loads(runs["after_third"]["run.json"])
    assert [i["complete"] for i in run["invocations"]] == [False, False, True]
    assert len({first.run_id, second.run_id, third.run_id}) == 1


def test_a_resumed_run_equals_an_uninterrupted_one(runs):
    """SFT interrupted twice, a method interrupted once: the same pools, training curves and
    evaluation rows as the run that went through in one call."""
    resumed, whole = runs["dir"], runs["whole"].run_dir
    a = json.loads((resumed / "results.json").read_text())
    b = json.loads((whole / "results.json").read_text())
    for field in ("bon", "methods", "pool", "sft", "reference", "reward", "holdout_reward"):
        assert a[field] == b[field], field
    for name in sorted(p.name for p in (whole / "pool").iterdir()):
        with np.load(resumed / "pool" / name) as x, np.load(whole / "pool" / name) as y:
            for array in x.files:
                np.testing.assert_array_equal(x[array], y[array], err_msg=array)
    for key in ("sft", *KEYS):
        curves = [[{k: v for k, v in r.items() if k != "time"} for r in read_metrics(d / key)]
                  for d in (resumed, whole)]
        assert curves[0] == curves[1], key


def test_the_pools_are_drawn_once(runs):
    """The second call drew the pools; the third read them (same files, untouched)."""
    before, after = runs["after_second"], runs["after_third"]
    pools = {k: v for k, v in before.items() if k.startswith("pool/")}
    assert pools and all(after[k] == v for k, v in pools.items())
    assert not [k for k in after if k.startswith("pool/") and k not in pools]


def test_every_stage_leaves_its_outputs(runs):
    run_dir, config = runs["dir"], runs["config"]
    for rel in ("config.json", "run.json", "sft/metrics.jsonl", "bon/eval.json",
                "results.md", "results.json"):
        assert (run_dir / rel).is_file(), rel
    pngs = ["win_rate_vs_kl.png", "sft/training_curves.png"]
    for key in KEYS:
        for rel in ("eval.json", "metrics.jsonl", "samples.jsonl"):
            assert (run_dir / key / rel).is_file(), f"{key}/{rel}"
        assert (run_dir / key / "checkpoints" / "2").is_dir(), key
        pngs.append(f"{key}/training_curves.png")
    for png in pngs:
        data = (run_dir / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
    results = json.loads((run_dir / "results.json").read_text())
    assert results["complete"] and results["reward"] == "VADER compound"
    assert results["reference"] == reference_id(config) and "after SFT" in results["reference"]
    assert [r["n"] for r in results["bon"]] == [1, 2, 3]
    assert [p["n"] for p in results["pool"]] == [2, 4]
    P, K, T = 4, int(config.eval.samples_per_prompt), int(config.max_new_tokens)
    for row in results["bon"] + results["methods"]:
        assert 0.0 <= row["win_rate"][0] <= 1.0 and row["holdout_reward"] is not None
        assert [q for q, _ in row["length"]["quantiles"]] == [0.1, 0.25, 0.5, 0.75, 0.9]
        assert 1 <= row["length"]["mean"][0] <= T and 0 <= row["at_length_limit"][0] <= 1
    bon1 = results["bon"][0]
    assert bon1["win_rate"] == pytest.approx([0.5, 0.0]) and bon1["kl_k1"] == [0.0, 0.0]
    assert results["bon"][1]["win_rate_analytic"] == pytest.approx(2 / 3)
    for row in results["methods"]:
        assert row["step"] == 2 and len(row["reward_per_prompt"]) == P
        assert row["eval_samples_per_prompt"] == K and row["kl_k3"][0] >= 0
        assert row["reward"] == pytest.approx(row["holdout_reward"]["mean"])  # VADER twice
    samples = (run_dir / "bonbon-n2" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == P * K and "Assistant:" in json.loads(samples[0])["prompt"]
    table = (run_dir / "results.md").read_text()
    for cell in ("| BoN | n=1 (pi_ref) |", "| BoNBoN | n=4 |", "| DPO | beta=0.1, n=4 |",
                 "| IPO (length-normalised) | beta=0.5, n=2 |", "| SFT-on-best | n=4 |",
                 "## Training pairs", "SFT stage: 3 steps of 2 records", "Status: complete"):
        assert cell in table, cell


def test_publish_copies_the_systems_plot_and_curves(runs, tmp_path):
    from experiments.publish_results import publish

    dest = tmp_path / "published"
    publish(runs["dir"], dest, "python experiments/bonbon.py --config=bonbon_tiny")
    assert (dest / "win_rate_vs_kl.png").read_bytes()[:4] == b"\x89PNG"
    assert not (dest / "reward_vs_kl.png").exists()
    assert {p.stem for p in (dest / "curves").iterdir()} == set(KEYS)
    assert "`win_rate_vs_kl.png`" in (dest / "README.md").read_text()


def test_the_sft_parameters_are_pi_ref_of_the_later_stages(runs):
    """The training pool's pi_ref log-probabilities are those of the SFT stage's final
    parameters (restored from its checkpoint), not the initial model's."""
    config, run_dir = runs["config"], runs["whole"].run_dir
    lm, sft_params, tokenizer = reference_policy(config, run_dir)
    _, base_params, _ = load_policy(config.model, seed=int(config.seed))
    data = system_data(config, read_records(config), tokenizer, lm)
    (train_pool,) = [p for p in (run_dir / "pool").iterdir()
                     if ReferencePool.load(p).num_prompts == config.data.train_prompts]
    pool = ReferencePool.load(train_pool)
    assert pool.fingerprint.model == reference_id(config)
    prompts = jnp.asarray(data.train.tokens_PxL), jnp.asarray(data.train.mask_PxL)
    completions = jnp.asarray(pool.tokens_PxNxT), jnp.asarray(pool.mask_PxNxT)
    score = jax.jit(completion_logprobs, static_argnums=0)
    sft_logp = score(lm, sft_params, *prompts, *completions).logp_BxNxT
    base_logp = score(lm, base_params, *prompts, *completions).logp_BxNxT
    np.testing.assert_allclose(np.asarray(sft_logp), pool.logp_PxNxT, atol=2e-4)
    assert np.abs(np.asarray(base_logp) - pool.logp_PxNxT).max() > 0.1


def test_a_pool_file_of_another_pi_ref_is_refused_before_the_sft_stage(runs, tmp_path):
    """A named pool file drawn from another SFT model is refused naming both, before the SFT
    stage trains; drawn from this run's pi_ref it is read, not drawn again."""
    config, whole = runs["config"], runs["whole"].run_dir
    (train_pool,) = [p for p in (whole / "pool").iterdir()
                     if ReferencePool.load(p).num_prompts == config.data.train_prompts]
    shared = tmp_path / "shared.npz"
    shutil.copy(train_pool, shared)
    other = _config(tmp_path / "data", train=config.data.train_files[0],
                    test=config.data.test_files[0])
    other.sft.learning_rate = 3e-3
    other.pool.file = str(shared)
    with pytest.raises(ValueError, match=rf"config.pool.file: {shared} holds a reference pool "
                                         r"drawn from other inputs than expected: model: saved "
                                         rf"'{reference_id(config)}', expected "
                                         rf"'{reference_id(other)}'"):
        run_bonbon_system(other, tmp_path / "other", progress=False)
    assert not (tmp_path / "other" / "sft").exists()
    same = _config(tmp_path / "data", train=config.data.train_files[0],
                   test=config.data.test_files[0])
    same.pool.file = str(shared)
    mtime = os.stat(shared).st_mtime_ns
    result = run_bonbon_system(same, tmp_path / "same", step_budget=3, progress=False)
    assert not result.complete and result.bon  # SFT done, pools ready, no method trained
    assert os.stat(shared).st_mtime_ns == mtime
    assert len(list((tmp_path / "same" / "pool").iterdir())) == 1  # only the held-out pool


def test_bad_data_is_refused_before_the_run_directory_exists(tmp_path):
    good = hh_variants(8)
    missing = write_jsonl(tmp_path / "missing.jsonl",
                          good[:3] + [{"chosen": good[3]["chosen"]}] + good[4:])
    config = _config(tmp_path / "d1", train=missing)
    with pytest.raises(ValueError, match=r"missing.jsonl line 4.*rejected"):
        run_bonbon_system(config, tmp_path / "run", progress=False)
    no_turn = write_jsonl(tmp_path / "no_turn.jsonl", good[:2] + [
        {"chosen": "\n\nHuman: hello there", "rejected": "\n\nHuman: hello there"}] + good[3:])
    config = _config(tmp_path / "d2", test=no_turn)
    with pytest.raises(ValueError, match=r"no_turn.jsonl line 3.*Assistant"):
        run_bonbon_system(config, tmp_path / "run", progress=False)
    config = _config(tmp_path / "d3")
    config.data.train_prompts = 9
    with pytest.raises(ValueError, match=r"config.data.train_prompts = 9 but .*train.jsonl "
                                         r"holds 8 records"):
        run_bonbon_system(config, tmp_path / "run", progress=False)
    config = _config(tmp_path / "d4")
    config.data.train_files = (str(tmp_path / "absent.jsonl"),)
    with pytest.raises(FileNotFoundError, match="absent.jsonl does not exist"):
        run_bonbon_system(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_bad_configs_are_named():
    config = configs.get("bonbon_tiny")
    config.bonbon.ns = (2, 8)
    with pytest.raises(ValueError, match=r"config.bonbon.ns asks for n = 8, more than the "
                                         r"pool's N = 4 samples"):
        check_bonbon_config(config)
    config = configs.get("bonbon_tiny")
    config.dpo.n = 5
    with pytest.raises(ValueError, match=r"config.dpo.n asks for n = 5"):
        check_bonbon_config(config)
    config = configs.get("bonbon_tiny")
    config.data.source = "imdb"
    with pytest.raises(ValueError, match="config.sft.enabled is True but config.data.source "
                                         "'imdb' has no responses"):
        check_bonbon_config(config)
    config = configs.get("bonbon_tiny")
    config.methods = ("bonbon", "vbon")
    with pytest.raises(ValueError, match="unknown method 'vbon' in config.methods"):
        check_bonbon_config(config)
    config = configs.get("bonbon_tiny")
    config.ipo.length_normalised = ("yes",)
    with pytest.raises(ValueError, match=r"config.ipo.length_normalised holds 'yes'"):
        check_bonbon_config(config)
    config = configs.get("bonbon_tiny")
    config.bonbon.alpha = 1.5
    with pytest.raises(ValueError, match=r"config.bonbon: BoNBoNConfig.alpha"):
        check_bonbon_config(config)
    config = configs.get("bonbon_tiny")
    config.remat = "all"
    with pytest.raises(ValueError, match="config.remat must be one of none, block, dots, got "
                                         "'all'"):
        check_bonbon_config(config)
    config = configs.get("bonbon_tldr")
    config.data.test_files = ()
    with pytest.raises(ValueError, match="config.data.test_files is empty: TL;DR records"):
        check_bonbon_config(config)
    config = configs.get("bonbon_tiny")
    config.eval.bon_ns = (1, 4)
    with pytest.raises(ValueError, match=r"config.eval.bon_ns = \(1, 4\) must be integers in "
                                         r"\[1, M - 1 = 3\]"):
        check_bonbon_config(config)


def test_the_sweep_names_each_trained_policy():
    config = configs.get("bonbon_cpu")
    runs = system_runs(config)
    assert [(r.key, r.name, r.setting, r.n) for r in runs[4:8]] == [
        ("dpo-beta0.1", "DPO", "beta=0.1, n=8", 8),
        ("dpo-length-normalised-beta0.1", "DPO (length-normalised)", "beta=0.1, n=8", 8),
        ("ipo-beta0.1", "IPO", "beta=0.1, n=8", 8),
        ("ipo-length-normalised-beta0.1", "IPO (length-normalised)", "beta=0.1, n=8", 8)]
    assert runs[0].method.objective.ipo_beta == 0.5 and runs[0].method.objective.alpha == 0.005
    assert runs[-1].key == "sft_best-n8" and runs[-1].name == "SFT-on-best"
