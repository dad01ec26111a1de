"""The IMDB sentiment experiment end to end on the tiny config: run directory, resume, errors.

The tiny config (random tiny GPT-2, VADER reward, every method for two steps) runs twice into
one directory: the first call stops after a budget of three training steps (in the middle of
the second method), the second continues. Everything else checks the files they leave, except
the last tests: a process's share of the prompts (``PromptShard``); the reference rewards drawn
from it are tested in ``tests/test_reference.py``. Two processes run the experiment in
``tests/test_distributed.py``.
"""

import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from bonjax import sharding as shd
from bonjax.evaluation import Estimate, EvalPoint, bon_curve, win_rate
from bonjax.experiment import (
    PromptShard,
    RunDirectory,
    bon_gap,
    chunk_indices,
    export_policy,
    load_reward,
    method_runs,
    run_experiment,
    step_indices,
    trained_policy,
    win_rate_vs_references,
)
from bonjax.experiment.components import load_policy
from bonjax.models.registry import load_model
from bonjax.models.weights import flat_params
from bonjax.rewards import vader_compound
from bonjax.training import config_fingerprint, read_metrics
from experiments import configs

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUDGET = 3  # training steps of the first call: vBoN's two, then one of BoNBoN's
INFERENCE = ("BoN", "Soft BoN", "RBoN")  # the points drawn from reference samples, not trained


def _snapshot(run_dir: pathlib.Path) -> dict:
    """The files a call left, with their contents (checkpoint step directories by name)."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if path.is_file() and path.suffix in (".json", ".jsonl", ".md"):
            out[rel] = path.read_text()
        elif path.is_dir() and path.parent.name == "checkpoints":
            out[rel] = "checkpoint"
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    config = configs.get("test_tiny")
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    first = run_experiment(config, run_dir, step_budget=BUDGET, progress=False)
    after_first = _snapshot(run_dir)
    second = run_experiment(config, run_dir, progress=False)
    return {"config": config, "dir": run_dir, "first": first, "after_first": after_first,
            "second": second, "after_second": _snapshot(run_dir)}


def test_first_call_stops_at_the_step_budget(tiny_run):
    first, files = tiny_run["first"], tiny_run["after_first"]
    assert not first.complete
    assert "vbon-n4/eval.json" in files and "vbon-n4/checkpoints/2" in files
    assert "bonbon-n4/checkpoints/1" in files and "bonbon-n4/eval.json" not in files
    assert not any(k.startswith(("bond-", "jbond", "kl_rl-")) for k in files)
    assert [p.method for p in first.points if p.method not in INFERENCE] == ["vBoN"]
    assert "INCOMPLETE" in files["results.md"]


def test_second_call_continues_instead_of_restarting(tiny_run):
    before, after = tiny_run["after_first"], tiny_run["after_second"]
    assert tiny_run["second"].complete
    # Finished work is kept as it was: vBoN's evaluation, BoNBoN's first logged step.
    assert after["vbon-n4/eval.json"] == before["vbon-n4/eval.json"]
    assert after["vbon-n4/metrics.jsonl"] == before["vbon-n4/metrics.jsonl"]
    bonbon_lines = after["bonbon-n4/metrics.jsonl"].splitlines()
    assert bonbon_lines[0] == before["bonbon-n4/metrics.jsonl"].splitlines()[0]
    assert [json.loads(line)["step"] for line in bonbon_lines] == [1, 2]
    run = json.loads(after["run.json"])
    assert len(run["invocations"]) == 2 and run["run_id"] == tiny_run["first"].run_id
    assert [i["complete"] for i in run["invocations"]] == [False, True]


def test_a_resumed_method_equals_an_uninterrupted_one(tiny_run, tmp_path):
    """BoNBoN, interrupted after its first step and resumed, ends exactly where a run without
    interruption ends (its key depends on the method, not on the other methods)."""
    config = configs.get("test_tiny")
    config.methods = ("bonbon",)
    run_experiment(config, tmp_path / "alone", progress=False)
    alone = json.loads((tmp_path / "alone" / "bonbon-n4" / "eval.json").read_text())
    resumed = json.loads(tiny_run["after_second"]["bonbon-n4/eval.json"])
    assert alone == resumed
    loss = [r["loss"] for r in read_metrics(tmp_path / "alone" / "bonbon-n4")]
    assert loss == [r["loss"] for r in read_metrics(tiny_run["dir"] / "bonbon-n4")]


def test_the_run_directory_holds_every_output(tiny_run):
    run_dir, config = tiny_run["dir"], tiny_run["config"]
    stored = json.loads((run_dir / "config.json").read_text())
    assert stored["fingerprint"] == config_fingerprint(config)
    assert stored["config"]["methods"] == list(config.methods)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["invocations"][-1]["commit"] == head and len(head) == 40
    assert run["reward"] == "VADER compound"
    for png in ["reward_vs_kl.png"] + [f"{r.key}/training_curves.png"
                                       for r in method_runs(config)]:
        data = (run_dir / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
    table = (run_dir / "results.md").read_text()
    for row in ("| BoN | N=4 |", "| Soft BoN | n=4, lambda=0.5 |", "| RBoN | n=4, beta=0.1 |",
                "| vBoN | N=4, RLOO |", "| BoNBoN | n=4 |", "| BOND | N=2 |", "| J-BOND |",
                "| KL-RL | beta=0.1, RLOO |"):
        assert row in table
    # The frontier statistics: per-prompt results, a gap per family, a verdict per pair.
    results = json.loads((run_dir / "results.json").read_text())
    assert [r["setting"] for r in results["selection"]] == [
        "n=2, lambda=0.5", "n=4, lambda=0.5", "n=2, beta=0.1", "n=4, beta=0.1"]
    P = int(config.data.test_prompts)
    for m in results["methods"]:
        assert len(m["reward_per_prompt"]) == len(m["kl_per_prompt"]) == P
        assert np.mean(m["reward_per_prompt"]) == pytest.approx(m["reward"][0], abs=1e-6)
        assert np.mean(m["kl_per_prompt"]) == pytest.approx(m["kl_k1"][0], abs=1e-5)
    frontier = results["frontier"]
    families = {g["family"] for g in frontier["families"]}
    assert families == {"vBoN", "BoNBoN", "BOND", "J-BOND", "KL-RL"}
    assert len(frontier["comparisons"]) == 10
    assert "## Distance to the Best-of-N curve" in table
    for c in frontier["comparisons"]:
        assert c["verdict"] in ("yes", "no", "undecided") and f"- {c['line']}" in table
    for run_ in method_runs(config):
        method_dir = run_dir / run_.key
        steps = [r["step"] for r in read_metrics(method_dir)]
        assert steps == [1, 2], run_.key
        assert sorted(p.name for p in (method_dir / "checkpoints").iterdir()) == ["1", "2"]
        assert any((method_dir / "tensorboard").iterdir())
        samples = [json.loads(x) for x in (method_dir / "samples.jsonl").read_text().splitlines()]
        assert len(samples) == config.data.test_prompts * config.eval.samples_per_prompt


def test_samples_evaluations_and_table_agree(tiny_run):
    """The samples' texts score to their rewards; eval.json summarises the samples."""
    run_dir, config = tiny_run["dir"], tiny_run["config"]
    K = config.eval.samples_per_prompt
    for run_ in method_runs(config):
        samples = [json.loads(x)
                   for x in (run_dir / run_.key / "samples.jsonl").read_text().splitlines()]
        for s in samples:
            assert vader_compound(s["text"]) == pytest.approx(s["reward"], abs=1e-6)
        record = json.loads((run_dir / run_.key / "eval.json").read_text())
        reward_PxK = np.array([s["reward"] for s in samples]).reshape(-1, K)
        kl_PxK = np.array([s["kl_k1"] for s in samples]).reshape(-1, K)
        assert record["reward"][0] == pytest.approx(reward_PxK.mean(), abs=1e-5)
        assert record["kl_k1"][0] == pytest.approx(kl_PxK.mean(), abs=1e-5)
        assert record["kl_k3"][0] >= 0 and 0 <= record["win_rate"][0] <= 1
    bon = {p.setting: p for p in tiny_run["second"].points if p.method == "BoN"}
    refs = np.load(next((run_dir / "references").glob("*.npz")))["rewards_PxM"]
    assert bon["N=1"].reward.mean == pytest.approx(refs.mean(), abs=1e-6)
    assert bon["N=1"].win_rate.mean == pytest.approx(0.5)
    assert bon["N=2"].kl.mean == pytest.approx(np.log(2) - 0.5)


def test_another_config_is_refused(tiny_run):
    config = configs.get("test_tiny")
    config.seed = 1
    with pytest.raises(ValueError, match="belongs to another config.*seed: 0 there, 1 here"):
        run_experiment(config, tiny_run["dir"], progress=False)


@pytest.mark.slow
def test_the_export_command_writes_a_trained_policy(tiny_run, tmp_path):
    """experiments/export.py restores a method's latest checkpoint and writes its policy as a
    Hugging Face directory: bonjax re-imports it bitwise, transformers gives its logits."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    run_dir, out = tiny_run["dir"], tmp_path / "vbon-hf"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "export.py"), f"--run_dir={run_dir}",
         "--method=vbon-n4", f"--output={out}"], capture_output=True, text=True, timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert "exported vbon-n4 (step 2, gpt2)" in done.stdout, done.stdout
    print(f"export command: {time.perf_counter() - started:.1f} s; {done.stdout.strip()}")

    policy = trained_policy(run_dir, "vbon-n4")
    lm, params, tokenizer = load_model(out)
    assert policy.step == 2 and lm.config == policy.lm.config
    exported, trained = flat_params(params), flat_params(policy.params)
    reference = flat_params(load_policy(tiny_run["config"].model)[1])
    assert exported.keys() == trained.keys()
    assert all(np.array_equal(exported[k], trained[k]) for k in trained)
    assert any(not np.array_equal(trained[k], reference[k]) for k in trained)  # it trained
    text = "A fine film, twice"
    assert tokenizer(text)["input_ids"] == policy.tokenizer(text)["input_ids"]

    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    enc = tokenizer(["A fine film", "Awful"], return_tensors="np", padding=True)
    tokens, mask = enc["input_ids"], enc["attention_mask"].astype(bool)
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        expected = hf(input_ids=torch.tensor(tokens, dtype=torch.long),
                      attention_mask=torch.tensor(mask, dtype=torch.long),
                      position_ids=torch.tensor(positions)).logits.numpy()
    logits = lm.forward(params, tokens, positions, mask).logits_BxTxV
    assert np.abs(np.asarray(logits) - expected)[mask].max() <= 1e-4

    with pytest.raises(FileExistsError, match=f"{out} is not empty"):
        export_policy(run_dir, "vbon-n4", out)
    with pytest.raises(ValueError, match="trains no method 'vbon-n99'; its methods are "
                                         "vbon-n4, bonbon-n4"):
        trained_policy(run_dir, "vbon-n99")


def test_a_directory_no_run_created_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and has no config.json"):
        RunDirectory(tmp_path, configs.get("test_tiny"))


@pytest.mark.parametrize("field, value, message", [
    ("methods", ("vbon", "sft"), "unknown method 'sft'"),
    ("methods", ("ppo",), "the KL-RL baseline is 'kl_rl'"),
    ("methods", ("kl_rl", "kl_rl"), "names a method twice"),
    ("reward", "toxicity", "unknown reward 'toxicity'"),
    ("data.source", "sst2", "unknown data source 'sst2'"),
    ("bon.ns", (1, 8), r"config.bon.ns = \(1, 8\) must be integers in \[1, M - 1 = 7\]"),
    ("vbon.ns", (), "config.vbon.ns is empty"),
    ("train.samples_per_prompt", 1, "config.train.samples_per_prompt must be an integer >= 2"),
    ("mesh_shape", (2, 2), "config.mesh_shape must be"),
    ("train.optimizer", "sgd", "unknown config.train.optimizer 'sgd'"),
    ("train.lora_rank", 4, r"lora_rank = 4 needs config.train.train_top = 0, got 1"),
    ("train.seed", -2, "config.train.seed must be an integer >= -1"),
    ("reference.cache_dir", None, "config.reference.cache_dir must be a folder or ''"),
])
def test_bad_config_raises_before_anything_is_written(tmp_path, field, value, message):
    config = configs.get("test_tiny")
    *parents, leaf = field.split(".")
    node = config
    for name in parents:
        node = node[name]
    node[leaf] = value
    with pytest.raises(ValueError, match=message):
        run_experiment(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(jax.device_count() < 2, reason="needs several (fake) devices")
def test_a_batch_the_mesh_cannot_split_raises(tmp_path):
    config = configs.get("test_tiny")
    config.mesh_shape = (-1, 1, 1)
    config.train.prompts_per_step = 1
    with pytest.raises(ValueError, match="multiple of the mesh's batch devices"):
        run_experiment(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_missing_sentiment_reward_names_the_command_or_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("BONJAX_SENTIMENT_REWARD", str(tmp_path / "absent"))
    _, _, tokenizer = load_policy("tiny-gpt2")
    with pytest.raises(FileNotFoundError, match="python experiments/train_reward.py"):
        load_reward("sentiment", tokenizer)
    with pytest.warns(UserWarning, match="SENTIMENT REWARD IS MISSING"):
        _, name = load_reward("sentiment", tokenizer, fallback="vader")
    assert name == "VADER compound"


def test_a_resumed_run_may_not_change_its_reward(tmp_path):
    config = configs.get("test_tiny")
    RunDirectory(tmp_path / "run", config).check_reward("VADER compound")
    with pytest.raises(ValueError, match="started with the reward 'VADER compound'"):
        RunDirectory(tmp_path / "run", config).check_reward("minilm-imdb sentiment logit")


def test_win_rate_against_all_references_is_the_mean_over_single_opponents():
    rng = np.random.default_rng(0)
    reward_PxK = rng.integers(0, 4, size=(6, 3)).astype(np.float32)  # ties on purpose
    refs_PxM = rng.integers(0, 4, size=(6, 5)).astype(np.float32)
    single = [float(win_rate(reward_PxK, refs_PxM[:, m]).mean) for m in range(5)]
    assert win_rate_vs_references(reward_PxK, refs_PxM).mean == pytest.approx(np.mean(single))


def test_bon_gap_reads_the_curve_at_the_points_kl():
    refs = np.random.default_rng(1).normal(size=(4, 16))
    curve = bon_curve(refs)
    n = 4
    kl = float(np.log(n) - (n - 1) / n)
    at_bon = float(np.interp(kl, curve.kl, curve.reward))
    point = EvalPoint("vBoN", "N=4", Estimate(at_bon + 0.25, 0.0), Estimate(kl, 0.0))
    assert bon_gap(point, curve) == pytest.approx(0.25)
    far = EvalPoint("PPO", "beta=0", Estimate(0.0, 0.0), Estimate(curve.kl[-1] + 1, 0.0))
    assert bon_gap(far, curve) is None


def test_quickstart_notebook_runs_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("BONJAX_QUICKSTART", "tiny")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's run directory
    notebook = nbformat.read(ROOT / "experiments" / "quickstart.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells
                      for o in cell.get("outputs", []))
    assert "best of 4" in outputs
    assert (tmp_path / "bonjax-quickstart-test_tiny" / "results.md").exists()


# ----------------------------------------------------------------------------- prompt shards


def _table(P: int = 10, L: int = 3) -> tuple[np.ndarray, np.ndarray]:
    tokens_PxL = np.arange(P * L, dtype=np.int32).reshape(P, L)
    return tokens_PxL, tokens_PxL % 3 != 0


def test_global_batches_take_the_table_in_order():
    np.testing.assert_array_equal(chunk_indices(10, 4), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 9, 9]])
    np.testing.assert_array_equal(step_indices(10, 4, np.arange(3)),
                                  [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]])
    np.testing.assert_array_equal(step_indices(10, 4, 2), [8, 9, 0, 1])
    with pytest.raises(ValueError, match="data positions must be >= 0, got -1"):
        step_indices(10, 4, [-1])


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_prompt_shard_batches_are_rows_of_the_table_on_the_mesh():
    tokens_PxL, mask_PxL = _table()
    mesh = shd.make_mesh((1, 4, 2))
    shard = PromptShard.keep(tokens_PxL, mask_PxL, [step_indices(10, 4, np.arange(3))], mesh)
    assert shard.index_R.tolist() == list(range(10))  # one process supplies every row
    for index_B, split in (([8, 9, 0, 1], True), ([3, 5], False)):  # 2 rows: not split over 4
        tokens_BxL, mask_BxL, got_B = shard.batch(index_B)
        np.testing.assert_array_equal(tokens_BxL, tokens_PxL[index_B])
        np.testing.assert_array_equal(mask_BxL, mask_PxL[index_B])
        np.testing.assert_array_equal(got_B, index_B)
        assert tokens_BxL.sharding.is_equivalent_to(
            shd.batch_sharding(mesh, 2, batch_size=len(index_B)), 2)
        assert tokens_BxL.sharding.is_fully_replicated != split
    plain = PromptShard.keep(tokens_PxL, mask_PxL, None, None)
    np.testing.assert_array_equal(plain.batch([8, 9, 0, 1])[0], tokens_PxL[[8, 9, 0, 1]])
    assert plain.digest == shard.digest


def test_prompt_shard_refuses_prompts_it_was_not_given():
    tokens_PxL, mask_PxL = _table()
    shard = PromptShard.keep(tokens_PxL, mask_PxL, [chunk_indices(4, 2)], None)
    assert shard.index_R.tolist() == [0, 1, 2, 3] and shard.num_prompts == 10
    with pytest.raises(ValueError, match="process 0 does not hold prompt 4"):
        shard.batch([0, 4])
    with pytest.raises(ValueError, match=r"prompt indices \[0, 10\] lie outside the table of 10"):
        shard.batch([0, 10])
    with pytest.raises(ValueError, match=r"prompt indices \[11, 11\] lie outside the table"):
        PromptShard.keep(tokens_PxL, mask_PxL, [np.array([[11]])], None)
    with pytest.raises(ValueError, match=r"calls must be \[C, B\] index arrays"):
        PromptShard.keep(tokens_PxL, mask_PxL, [np.arange(3)], None)
    with pytest.raises(ValueError, match="a mask of the same shape"):
        PromptShard.keep(tokens_PxL, mask_PxL[:5], None, None)


def test_the_training_seed_changes_the_training_draws_only(tiny_run, tmp_path):
    """config.train.seed = config.seed trains exactly as the default (-1); another training seed
    trains another policy on the same prompts and the same reference samples, which it finds
    in the shared config.reference.cache_dir instead of drawing them again."""
    config = configs.get("test_tiny")
    config.methods = ("vbon",)
    config.reference.cache_dir = str(tmp_path / "references")
    runs, cached = {}, {}
    for seed in (0, 1):
        config.train.seed = seed
        run_experiment(config, tmp_path / f"seed{seed}", progress=False)
        runs[seed] = tmp_path / f"seed{seed}"
        cached[seed] = {p.name: p.stat().st_mtime_ns
                        for p in (tmp_path / "references").iterdir()}
        assert not (runs[seed] / "references").exists()
    assert len(cached[0]) == 2 and cached[1] == cached[0]  # train and test, written once

    def metrics(run_dir):
        return [{k: v for k, v in r.items() if k != "time"}
                for r in read_metrics(run_dir / "vbon-n4")]

    default = metrics(tiny_run["dir"])
    assert metrics(runs[0]) == default
    assert [r["loss"] for r in metrics(runs[1])] != [r["loss"] for r in default]
    for name in cached[0]:  # the default run drew the same reference samples into its own dir
        with np.load(tiny_run["dir"] / "references" / name) as a, np.load(
                tmp_path / "references" / name) as b:
            assert a.files == b.files
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])


def test_the_best_of_n_aware_methods_train_and_evaluate_in_the_experiment(tmp_path):
    """InfAlign-CTRL, QRPO and max@k from their config sections: each a point of the
    reward-KL plane and a family of the frontier statistics."""
    config = configs.get("test_tiny")
    config.methods = ("ctrl", "qrpo", "max_at_k")
    result = run_experiment(config, tmp_path / "run", progress=False)
    assert result.complete
    trained = {p.method: p for p in result.points if p.method not in INFERENCE}
    assert set(trained) == {"InfAlign-CTRL", "QRPO", "max@k"}
    for key in ("ctrl-beta0.1", "qrpo-beta0.333333", "max_at_k-k2"):
        losses = [r["loss"] for r in read_metrics(tmp_path / "run" / key)]
        assert len(losses) == config.train.steps and all(np.isfinite(losses)), key
    frontier = json.loads((tmp_path / "run" / "results.json").read_text())["frontier"]
    assert {g["family"] for g in frontier["families"]} == set(trained)


def test_a_lora_run_trains_adapters_and_evaluates(tmp_path):
    """config.train.lora_rank > 0: the method trains adapters on a frozen base (but for the
    final norm, trained in full) and is evaluated like any other policy."""
    config = configs.get("test_tiny")
    config.methods = ("bonbon",)
    config.train.train_top, config.train.lora_rank, config.train.lora_alpha = 0, 2, 4.0
    config.train.lora_train_in_full = ("ln_f",)
    result = run_experiment(config, tmp_path / "run", progress=False)
    assert result.complete
    (point,) = [p for p in result.points if p.method == "BoNBoN"]
    assert point.kl.mean > 0  # the adapters moved the policy away from pi_ref


def test_the_optimizer_option_picks_ppo_with_a_value_head_for_vbon_and_the_baseline():
    config = configs.get("test_tiny")
    config.train.optimizer = "ppo"
    kinds = {r.key: type(r.method).__name__ for r in method_runs(config)}
    assert {k: v for k, v in kinds.items() if k.startswith(("vbon", "kl_rl"))} and all(
        v == "PPO" for k, v in kinds.items() if k.startswith(("vbon", "kl_rl")))
    assert kinds["bonbon-n4"] == "PreferencePairs"
    assert configs.get("full").train.optimizer == "ppo"


def test_publish_copies_a_complete_run_with_its_provenance(tiny_run, tmp_path):
    from experiments.publish_results import publish

    dest = tmp_path / "published"
    written = publish(tiny_run["dir"], dest, "python experiments/train.py --config=test_tiny")
    results = json.loads((dest / "results.json").read_text())
    assert results == json.loads((tiny_run["dir"] / "results.json").read_text())
    assert {p.name for p in (dest / "curves").iterdir()} == {
        m["key"] + ".png" for m in results["methods"]}
    readme = (dest / "README.md").read_text()
    run = json.loads((tiny_run["dir"] / "run.json").read_text())
    assert "--config=test_tiny" in readme and run["invocations"][-1]["commit"] in readme
    assert "2 call(s)" in readme and all(p.exists() for p in written)
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "run.json").write_text(json.dumps({**run, "invocations": [
        {**run["invocations"][0], "complete": False}]}))
    with pytest.raises(ValueError, match="not complete"):
        publish(incomplete, tmp_path / "nothing", "cmd")


def test_another_runs_results_are_drawn_behind_the_plot(tiny_run, tmp_path, caplog):
    from bonjax.evaluation import plot_reward_vs_kl
    from bonjax.experiment.run import _background

    results_path = tiny_run["dir"] / "results.json"
    background = _background(str(results_path), "VADER compound")
    assert background == json.loads(results_path.read_text())
    points = tiny_run["second"].points
    plain = plot_reward_vs_kl(tmp_path / "plain.png", points)
    behind = plot_reward_vs_kl(tmp_path / "behind.png", points, background=background)
    assert pathlib.Path(plain).read_bytes() != pathlib.Path(behind).read_bytes()
    with caplog.at_level("WARNING"):
        assert _background(str(results_path), "minilm-imdb sentiment logit") is None
        assert _background(str(tmp_path / "missing.json"), "VADER compound") is None
    assert "another reward" not in caplog.text and "made with the reward" in caplog.text
    assert "does not exist" in caplog.text


@pytest.mark.parametrize("ci", [None, ((0.1, 0.2), (0.3, 0.4))])
@pytest.mark.parametrize("gap", [None, -0.25])
def test_a_method_row_has_a_cell_under_every_column(ci, gap):
    """With or without intervals (no frontier statistics) and gap (beyond the BoN curve)."""
    from bonjax.experiment.run import _method_row
    record = {"method": "vBoN", "setting": "N=4", "last_quarter_change": {"reward": 0.5}}
    row = _method_row(record, Estimate(1.0, 0.1), gap, ci)
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert len(cells) == 7, row
    assert cells[3] == ("beyond the curve" if gap is None else "-0.250")
    assert cells[4:6] == (["", ""] if ci is None else ["[0.100, 0.200]", "[0.300, 0.400]"])
    assert cells[6] == "+50 % (not settled)"


def test_a_run_resumes_under_code_with_new_config_fields_only(tmp_path, caplog):
    """Fields the stored config lacks (added to the code since) are accepted with a warning and
    the run keeps its fingerprint; a changed or a removed field is still refused."""
    config = configs.get("test_tiny")
    first = RunDirectory(tmp_path / "run", config)
    newer = configs.get("test_tiny")
    newer.unlock()
    newer.added_section = {"field": 3}
    newer.train.added_field = "x"
    with caplog.at_level("WARNING"):
        resumed = RunDirectory(tmp_path / "run", newer)
    assert resumed.fingerprint == first.fingerprint
    assert "added_section.field, train.added_field" in caplog.text
    changed = configs.get("test_tiny")
    changed.train.steps += 1
    with pytest.raises(ValueError, match="belongs to another config"):
        RunDirectory(tmp_path / "run", changed)
    removed = configs.get("test_tiny").to_dict()
    del removed["train"]["steps"]
    with pytest.raises(ValueError, match="belongs to another config"):
        RunDirectory(tmp_path / "run", removed)
