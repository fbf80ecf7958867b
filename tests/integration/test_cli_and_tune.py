"""`rllib-safe train` end to end (progress, results, checkpoint, resume, bad input) and Tune by registered name."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "rllib_safe.cli"]
SMALL = [
    "--env", "Safety2x3HalfCheetahVelocity-v0", "--batch-size", "200", "--num-env-runners", "0", "--num-cpus", "2",
    "--env-config", "max_episode_steps=50", "--config", "minibatch_size=100", "num_epochs=1",
]  # fmt: skip


def run(*args, timeout=300):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--env", "Nope-v0"], "Known tasks: "),
        (["train", "--algo", "nope"], "Known algorithms: MAPPO, HAPPO, MAPPOLagrangian, MAFOCOPS, MACPO"),
        (["train", "--cost-limit", "-1"], "`cost_limit`"),
        (["train", "--restore", "/no/such/checkpoint"], "no RLlib checkpoint"),
        (["train", "--config", "no_such_key=1"], "Unknown config key 'no_such_key'"),
        (["train", "--config", "lr=-0.1"], "`lr` must be a positive number"),
    ],
)
def test_bad_input_gives_one_clear_error(args, message):
    proc = run(*args, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_writes_progress_results_checkpoint_and_resumes(tmp_path):
    out = tmp_path / "run"
    proc = run("train", "--algo", "mappo_lagrangian", "--stop-iters", "2", "--output", str(out), *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "iter    2 | steps      400 | return" in proc.stdout
    assert "/ limit 25" in proc.stdout and "λ" in proc.stdout
    rows = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert rows[-1]["env_steps"] == 400 and "agent_0/lagrange_multiplier" in rows[-1]
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())
    final = out / "checkpoints" / "final"
    assert (final / "class_and_ctor_args.pkl").exists()

    out2 = tmp_path / "resumed"
    proc = run("train", "--restore", str(final), "--stop-iters", "1", "--output", str(out2), "--num-cpus", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = json.loads((out2 / "progress.jsonl").read_text().splitlines()[0])
    assert resumed["iteration"] == 3 and resumed["env_steps"] == 600


@pytest.mark.usefixtures("ray_local")
def test_tune_runs_algorithms_by_registered_name(tmp_path):
    from ray import tune

    from tests.conftest import small_config

    tuner = tune.Tuner(
        "MAPPOLagrangian",
        param_space=small_config("MAPPOLagrangian", batch=100, steps=25),
        run_config=tune.RunConfig(stop={"training_iteration": 1}, storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    assert not results.errors
    metrics = results[0].metrics
    assert "episode_cost_mean" in metrics["env_runners"]
    assert Path(results[0].path).exists()
