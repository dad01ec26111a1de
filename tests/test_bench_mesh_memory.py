"""experiments/bench_mesh_memory.py's BoNBoN-system case on a small config: the FixedPairs
training step and the pool's sampling call compile for a mesh of 8 fake CPU devices (FSDP over
all of them), as the paper-scale configs' do, and report each program's per-device bytes."""

from bonjax import sharding as shd
from experiments import configs
from experiments.bench_mesh_memory import system_memory


def test_the_system_programs_compile_for_an_fsdp_mesh_and_report_memory():
    config = configs.get("bonbon_tiny")
    config.data.train_prompts = 8
    config.train.prompts_per_step = 8  # a multiple of the 8 batch devices
    config.pool.prompts_per_call = 8
    rows = system_memory(config, shd.make_mesh((1, 8, 1)))
    assert [r["program"] for r in rows] == ["fixed_pairs_update", "pool_sample"]
    for row in rows:
        assert row["devices"] == 8 and row["mesh"] == "1,8,1" and row["model"] == "tiny-gpt2"
        assert row["peak_gib"] > 0 and row["argument_gib"] > 0
    update, sample = rows
    assert (update["prompts"], update["samples"], update["new_tokens"]) == (8, 2, 6)
    assert (sample["prompts"], sample["samples"]) == (8, 4)
