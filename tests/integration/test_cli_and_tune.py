"""`rllib-safe train` as a one-trial Tune experiment end to end: progress lines, results, TensorBoard, W&B offline,
checkpoint, restore, evaluate against a hand rollout, a video; bad input; Tune by registered name."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import render_headless

CLI = [sys.executable, "-m", "rllib_safe.cli"]
TOY = [
    "--env", "SafeMAToy-v0", "--batch-size", "100", "--num-env-runners", "0", "--num-envs-per-env-runner", "4",
    "--num-cpus", "2",
    "--config", "minibatch_size=50", "num_epochs=1", "actor_hiddens=[16]", "critic_hiddens=[16]",
]  # fmt: skip
REPO = Path(__file__).resolve().parents[2]


def run(*args, timeout=300, **env):
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env={**os.environ, **env}
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--env", "Nope-v0"], "Known tasks: "),
        (["train", "--algo", "nope"], "Known algorithms: MAPPO, HAPPO, MAPPOLagrangian, MAFOCOPS, MACPO"),
        (["train", "--cost-limit", "-1"], "`cost_limit`"),
        (["train", "--restore", "/no/such/checkpoint"], "no RLlib checkpoint"),
        (["train", "--config", "no_such_key=1"], "Unknown config key 'no_such_key'"),
        (["train", "--config", "lr=-0.1"], "`lr` must be a positive number"),
        (["sweep", "tests/data/malformed.yaml"], "is not valid YAML at line 4 (key `config`)"),
        (["sweep", "tests/data/bad_key.yaml"], "unknown config key 'learning_rate' for MAFOCOPSConfig"),
        (["evaluate", "/no/such/checkpoint"], "no RLlib checkpoint"),
        (["table", "/no/such/dir"], "no such directory"),
    ],
)
def test_bad_input_gives_one_clear_error(args, message, capsys, monkeypatch):
    """Checked before Ray starts, so in this process; the console script itself is checked below."""
    from rllib_safe.cli import main

    monkeypatch.chdir(REPO)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("rllib-safe: error: ") and message in err and len(err.strip().splitlines()) == 1, err


def test_console_script_error_is_one_line_without_traceback(tmp_path):
    sweep = tmp_path / "bad.yaml"
    sweep.write_text("name: bad\ncommon:\n  tasks: [SafeMAToy-v0]\nexperiments:\n  - algorithm: NoSuchAlgo\n")
    proc = run("sweep", str(sweep), timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"rllib-safe: error: {sweep}")
    assert "Unknown algorithm 'NoSuchAlgo'. Known algorithms: " in proc.stderr and "Traceback" not in proc.stderr
    assert "WCMASAC" in proc.stderr  # the known names include the off-policy family


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two iterations of MAPPO-Lagrangian on the toy task through the CLI, logged to W&B offline."""
    out = tmp_path_factory.mktemp("train") / "run"
    proc = run(
        "train", "--algo", "mappo_lagrangian", "--stop-iters", "2", "--output", str(out), *TOY,
        "--wandb-project", "rllib-safe-tests", WANDB_MODE="offline", WANDB_SILENT="true",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def test_train_prints_progress_lines_only(trained):
    out, proc = trained
    lines = proc.stdout.splitlines()
    iters = [line for line in lines if line.startswith("iter ")]
    assert len(iters) == 2 and iters[1].startswith("iter    2 | steps      200 | return ")
    assert all("/ limit 5" in line and "| λ " in line and " p90 " in line and " cvar " in line for line in iters)
    assert lines[0].startswith("rllib-safe: MAPPOLagrangian on SafeMAToy-v0 | agents ['agent_0', 'agent_1']")
    assert any(line.startswith("checkpoint: ") for line in lines)
    for noise in ("new API stack", "RLModuleConfig", "gputil", "max_restarts", "Token authentication", "Adroit"):
        assert noise not in proc.stdout + proc.stderr, noise
    assert "nan" not in " ".join(iters) and "n/a" not in " ".join(iters)
    rows = [json.loads(line) for line in (out / "run" / "progress.jsonl").read_text().splitlines()]
    for line, row in zip(iters, rows, strict=True):  # the line's return is the team return, not RLlib's sum
        assert f"| return {row['team_return_mean']:.2f} |" in line


def test_train_results_are_tunes_with_our_progress_file(trained):
    out, _ = trained
    trial = out / "run"
    rows = [json.loads(line) for line in (trial / "progress.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2] and rows[-1]["env_steps"] == 200
    assert rows[-1]["env_steps_this_iter"] == 100 and "agent_0/lagrange_multiplier" in rows[-1]
    for key in ("episode_cost_p90", "episode_cost_cvar10", "episode_cost_over_limit_frac", "cost_rate", "safe_score"):
        assert key in rows[-1], key
    # The team return (the team reward once) beside RLlib's sum over the 2 agents, which every agent shares.
    assert rows[-1]["team_return_mean"] == pytest.approx(rows[-1]["episode_return_mean"] / 2, rel=1e-9)
    assert rows[-1]["cost_rate"] == pytest.approx(rows[-1]["cumulative_cost"] / 200)
    tune_rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
    assert tune_rows[-1]["env_runners"]["episode_cost_p90"] == rows[-1]["episode_cost_p90"]
    assert any(p.name.startswith("events.out.tfevents") for p in trial.iterdir())  # Tune's TensorBoard logger
    assert json.loads((trial / "run.json").read_text())["cost_limit"] == 5.0
    assert (trial / "checkpoint_000000" / "class_and_ctor_args.pkl").exists()


def test_wandb_offline_run_writes_its_files(trained):
    out, _ = trained
    runs = list((out / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((out / "run").iterdir())
    assert list(runs[0].glob("run-*.wandb")) and (runs[0] / "files").is_dir()


def test_restore_continues_from_the_checkpoint(trained, tmp_path):
    out, _ = trained
    ckpt = out / "run" / "checkpoint_000000"
    more = tmp_path / "more"
    proc = run("train", "--restore", str(ckpt), "--stop-iters", "1", "--output", str(more), "--num-cpus", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (more / "run" / "progress.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["env_steps"]) for r in rows] == [(3, 300)]
    before = json.loads((out / "run" / "progress.jsonl").read_text().splitlines()[-1])
    assert rows[0]["cumulative_cost"] > before["cumulative_cost"] > 0  # the lifetime total came back with the rest


def hand_rollout(checkpoint: Path, episodes: int, seed: int):
    """The checkpoint's actors on SafeMAToy-v0 by hand: mean actions, env seeded once, then reset without a seed."""
    import torch
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModule

    from rllib_safe.envs import make

    modules = {
        aid: RLModule.from_checkpoint(checkpoint / "learner_group" / "learner" / "rl_module" / aid)
        for aid in ("agent_0", "agent_1")
    }
    env = make("SafeMAToy-v0")
    returns, costs = [], []
    obs, _ = env.reset(seed=seed)
    for episode in range(episodes):
        if episode:
            obs, _ = env.reset()
        ret = cost = 0.0
        while True:
            actions = {}
            for aid, module in modules.items():
                with torch.no_grad():
                    out = module.forward_inference({Columns.OBS: torch.as_tensor(obs[aid])[None]})
                actions[aid] = out[Columns.ACTION_DIST_INPUTS][0, :1].numpy()
            obs, rewards, terminated, truncated, infos = env.step(actions)
            assert len(set(rewards.values())) == 1  # the team reward, given to each agent
            ret += rewards["agent_0"]  # counted once: the team return
            cost += float(np.mean([infos[aid]["cost"] for aid in modules]))
            if terminated["__all__"] or truncated["__all__"]:
                break
        returns.append(ret)
        costs.append(cost)
    return returns, costs


def test_evaluate_reproduces_a_hand_rollout(trained):
    from rllib_safe.studies.evaluate import evaluate

    checkpoint = trained[0] / "run" / "checkpoint_000000"
    result = evaluate(checkpoint, episodes=3, seed=11)
    returns, costs = hand_rollout(checkpoint, episodes=3, seed=11)
    assert result.returns == pytest.approx(returns, rel=1e-5)
    assert result.costs == pytest.approx(costs, rel=1e-5, abs=1e-9)
    assert len(set(np.round(returns, 6))) > 1  # the three episodes differ (seeded once, not per episode)
    assert result.summary["episode_cost_over_limit_frac"] == np.mean(np.asarray(costs) > 5.0)


@pytest.mark.usefixtures("ray_local")
def test_evaluate_writes_a_video_headless(tmp_path):
    from tests.conftest import small_config

    algo = small_config("MAPPOLagrangian", env="Safety2x3HalfCheetahVelocity-v0", steps=20, batch=40).build_algo()
    algo.save_to_path(str(tmp_path / "ckpt"))
    algo.stop()
    script = f"""
import imageio.v3 as iio
from rllib_safe.cli import main
print("IMPORTED", flush=True)
assert main(["evaluate", "{tmp_path}/ckpt", "--episodes", "1", "--video", "{tmp_path}/team.mp4"]) == 0
frames = iio.imread("{tmp_path}/team.mp4")
assert frames.shape[0] == 21 and frames.shape[-1] == 3 and frames.std() > 1, frames.shape  # reset + 20 steps
print("RENDER_OK")
"""
    render_headless(script)


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
    assert "episode_cost_mean" in metrics["env_runners"] and "episode_cost_p90" in metrics["env_runners"]
    assert Path(results[0].path).exists()
