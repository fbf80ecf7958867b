"""Entrypoint of the cluster tests' Ray jobs: ``ray job submit --working-dir . -- python tests/cluster/job_train.py``.

Trains MAPPO-Lagrangian on ``SafeMAToy-v0`` with two EnvRunners, one per node (each node offers one
``env_runner_slot`` resource), through the Python API, and writes what the tests check to ``--out``.

``--mode tune``: a one-trial Tune experiment with storage on the shared ``--storage-path``, W&B logging in offline
mode and a checkpoint at the end; the EnvRunner of ``RLLIB_SAFE_KILL_ENV_RUNNER`` kills itself mid-sample once
(:mod:`tests.cluster.ledger`).

``--mode node_kill``: ``Algorithm.train()`` in this driver; after ``--kill-after`` iterations it writes
``ready_for_kill`` and waits for ``node_killed`` (the test kills the worker node in between), then trains on and saves
its final checkpoint to the storage path.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import ray

import rllib_safe
from tests.cluster.ledger import LedgerCallback
from tests.conftest import small_config


def make_config(probe_timeout_s: float):
    """The tests' small config (tests/conftest.py) on the toy with two EnvRunners, one per ``env_runner_slot``."""
    return (
        small_config("MAPPOLagrangian", env="SafeMAToy-v0", steps=25, batch=200, cost_limit=1.0)
        .env_runners(
            num_env_runners=2, num_envs_per_env_runner=1, custom_resources_per_env_runner={"env_runner_slot": 1}
        )
        .callbacks(LedgerCallback)
        .fault_tolerance(env_runner_health_probe_timeout_s=probe_timeout_s, lost_env_runners_timeout_s=120)
    )


def keep(result: dict) -> dict:
    """What the tests read of one iteration's result."""
    env, learners = result["env_runners"], result["learners"]
    return {
        "iteration": result["training_iteration"],
        "env_runners": {k: env.get(k) for k in ("episode_cost_sum", "episode_cost_count", "num_episodes")},
        "learners": {aid: {"episode_cost": learners[aid].get("episode_cost")} for aid in ("agent_0", "agent_1")},
    }


class RestartedEnvRunnerDelivered:
    """Tune stopper: at least ``iters`` iterations and, once an EnvRunner was killed, until its restarted successor
    has delivered episodes (checked after each result: those episodes were sampled in that iteration or before)."""

    def __init__(self, iters: int, max_iters: int = 40) -> None:
        self.iters, self.max_iters = iters, max_iters

    def __call__(self, trial_id: str, result: dict) -> bool:
        it = result["training_iteration"]
        if it < self.iters:
            return False
        ledger_dir = Path(os.environ["RLLIB_SAFE_LEDGER_DIR"])
        if not (ledger_dir / "killed").exists():
            return True
        killed = json.loads((ledger_dir / "killed").read_text())["pid"]
        pids = {int(p.stem.split("_")[1]) for p in ledger_dir.glob("ledger_*.jsonl")}
        return len(pids - {killed}) >= 2 or it >= self.max_iters


def run_tune(args: argparse.Namespace, summary: dict) -> None:
    from ray import tune
    from ray.air.integrations.wandb import WandbLoggerCallback

    tuner = tune.Tuner(
        "MAPPOLagrangian",
        param_space=make_config(probe_timeout_s=60),
        run_config=tune.RunConfig(
            name="cluster_tune",
            storage_path=args.storage_path,
            stop=RestartedEnvRunnerDelivered(args.iters),
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True),
            callbacks=[WandbLoggerCallback(project="rllib_safe_cluster_test", mode="offline")],
            verbose=0,
        ),
    )
    results = tuner.fit()
    assert not results.errors, results.errors
    result = results[0]
    summary["trial_path"] = result.path
    summary["checkpoint"] = result.checkpoint.path if result.checkpoint else None
    rows = [json.loads(line) for line in (Path(result.path) / "result.json").read_text().splitlines()]
    summary["iterations"] = [keep(row) for row in rows]


def run_node_kill(args: argparse.Namespace, summary: dict) -> None:
    out = Path(args.out)
    algo = make_config(probe_timeout_s=2).build_algo()
    summary["iterations"] = []
    for i in range(1, args.iters + 1):
        summary["iterations"].append(keep(algo.train()))
        summary.setdefault("healthy_env_runners", []).append(algo.env_runner_group.num_healthy_remote_workers())
        if i == args.kill_after:
            (out / "ready_for_kill").touch()
            deadline = time.monotonic() + 180
            while not (out / "node_killed").exists():
                assert time.monotonic() < deadline, "the test never killed the node"
                time.sleep(0.5)
    summary["checkpoint"] = algo.save_to_path(str(Path(args.storage_path) / "node_kill" / "final"))
    algo.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["tune", "node_kill"], required=True)
    parser.add_argument("--storage-path", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--kill-after", type=int, default=2)
    args = parser.parse_args()

    ray.init()  # inside a Ray job: connects to the job's cluster (RAY_ADDRESS), never starts a private one
    rllib_safe.register()
    cwd = os.getcwd()
    summary = {
        "driver_node": ray.util.get_node_ip_address(),
        "cluster_nodes": sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]),
        "ray_address": os.environ.get("RAY_ADDRESS"),
    }
    (run_tune if args.mode == "tune" else run_node_kill)(args, summary)
    summary["cwd_intact"] = os.getcwd() == cwd and Path(cwd, "tests", "cluster", "job_train.py").exists()
    Path(args.out, "summary.json").write_text(json.dumps(summary, indent=1, default=lambda x: x.item()))
    print("JOB DONE", json.dumps({k: summary[k] for k in ("driver_node", "cluster_nodes", "checkpoint")}))


if __name__ == "__main__":
    main()
