"""Copies a finished run's results into the repository, small and with how they were made.

    python -m experiments.publish_results ~/.cache/bonjax/runs/frontier docs/results/frontier \
        --command "bash experiments/frontier.sh"

Writes ``results.md``, ``results.json``, the run's plot (``reward_vs_kl.png`` of the alignment
experiment, ``win_rate_vs_kl.png`` of the BoNBoN system), ``curves/<method>.png`` (each trained
policy's training curves) and ``README.md`` (the command, the commits and wall time of
every call of the run, from its ``run.json``). A run that is not complete is refused; so is a
plot over 300 KB (the results folder stays small enough to commit).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys

MAX_PNG_BYTES = 300_000
PLOTS = ("reward_vs_kl.png", "win_rate_vs_kl.png")  # run_experiment's, run_bonbon_system's


def _call_line(call: dict) -> str:
    dirty = " (with uncommitted changes)" if call.get("dirty") else ""
    return (f"- {call.get('started')} to {call.get('finished', '?')}: "
            f"{call.get('wall_seconds', 0):.0f} s, commit {call.get('commit', 'unknown')}{dirty}, "
            f"{call.get('devices', '?')} device(s)")


def publish(run_dir: pathlib.Path, dest: pathlib.Path, command: str) -> list[pathlib.Path]:
    run = json.loads((run_dir / "run.json").read_text())
    calls = run["invocations"]
    if not calls or not calls[-1].get("complete"):
        raise ValueError(f"the run in {run_dir} is not complete: run its command again")
    results = json.loads((run_dir / "results.json").read_text())
    plots = [name for name in PLOTS if (run_dir / name).exists()]
    if not plots:
        raise ValueError(f"the run in {run_dir} has none of the plots {', '.join(PLOTS)}")
    files = {run_dir / "results.md": dest / "results.md",
             run_dir / "results.json": dest / "results.json",
             **{run_dir / name: dest / name for name in plots}}
    for method in results["methods"]:
        files[run_dir / method["key"] / "training_curves.png"] = dest / "curves" / (
            method["key"].replace("/", "_") + ".png")
    for src in files:
        if src.suffix == ".png" and src.stat().st_size > MAX_PNG_BYTES:
            raise ValueError(f"{src} is {src.stat().st_size} bytes, over {MAX_PNG_BYTES}")
    for src, dst in files.items():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    commits = sorted({c.get("commit") or "unknown" for c in calls})
    wall = sum(c.get("wall_seconds", 0.0) for c in calls)
    lines = [f"# {dest.name}: run `{run['run_id']}`", "",
             f"Made by `{command}` (from the repository root), in {len(calls)} call(s) of "
             f"{wall:.0f} s wall time in all ({wall / 60:.0f} min), on "
             f"{', '.join(sorted({c.get('platform', '?') for c in calls}))} with jax "
             f"{', '.join(sorted({c.get('jax', '?') for c in calls}))}, at commit(s) "
             f"{', '.join(commits)}.", "",
             "Each call (from the run's run.json):", ""]
    lines += [_call_line(c) for c in calls]
    lines += ["", "The table and its statistics: `results.md`; every figure as data: "
              "`results.json`; the plot: " + ", ".join(f"`{name}`" for name in plots) +
              "; each trained policy's "
              "training curves: `curves/`."]
    (dest / "README.md").write_text("\n".join(lines) + "\n")
    return [*files.values(), dest / "README.md"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=pathlib.Path)
    parser.add_argument("dest", type=pathlib.Path)
    parser.add_argument("--command", required=True, help="the command that made the run")
    args = parser.parse_args()
    try:
        written = publish(args.run_dir.expanduser(), args.dest, args.command)
    except (OSError, ValueError) as err:
        sys.exit(f"publish_results: {err}")
    print(f"wrote {len(written)} files to {args.dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
