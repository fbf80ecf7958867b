"""Training speed and memory of the off-policy family (HASAC, ConstrainedHASAC, WCMASAC), next to the raw env speed.

Reported per algorithm: env steps per second of wall time (sampling, replay and updates), gradient updates per second
(of the Learner's update time), the sampling / update time shares, the peak resident memory of the driver (which hosts
the replay buffer and the local Learner) and of the EnvRunners, the replay buffer's bytes per row and what a full
buffer weighs (capacity × row), and the checkpoint size per stored row (the checkpoint with the buffer, minus the same
checkpoint without it, over the rows).

Each algorithm runs in a fresh process with its defaults (HARL ``hasac.yaml``: 1000 env steps per iteration, 0.05
gradient updates per env step, minibatch 1000, [256, 256] networks), except that learning starts after the first
iteration instead of after 10 000 warm-up steps; that warm-up iteration and one more are not timed. The driver uses
one torch thread (the EnvRunners are Ray actors with one thread each).

How to run::

    python benchmarks/offpolicy_throughput.py                       # Safety2x4AntVelocity-v0, 2 EnvRunners x 4 envs
    python benchmarks/offpolicy_throughput.py --iters 5 --algos WCMASAC --env SafeMAToy-v0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from env_throughput import time_env  # noqa: E402
from train_throughput import _max_rss_mib  # noqa: E402


def _dir_bytes(path: str) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def measure(config: Any, iters: int) -> dict[str, float]:
    """Builds ``config``'s algorithm, trains two untimed and ``iters`` timed iterations, returns the measurements."""
    algo = config.build_algo()
    try:
        for _ in range(2):  # warm-up: actor start, first weight sync, the first updates
            algo.train()
        steps0 = algo.metrics.peek(("env_runners", "num_env_steps_sampled_lifetime"), default=0)
        sampling = learning = updates = update_rate = 0.0
        start = time.perf_counter()
        for _ in range(iters):
            result = algo.train()
            sampling += result["timers"]["sample_s"]
            learning += result["timers"]["update_and_sync_s"]
            updates += result["num_gradient_updates"]
            update_rate += result["learners"]["__critic__"]["gradient_updates_per_s"] / iters
        wall = time.perf_counter() - start
        steps = algo.metrics.peek(("env_runners", "num_env_steps_sampled_lifetime")) - steps0
        runner_rss = algo.env_runner_group.foreach_env_runner(lambda er: _max_rss_mib(), local_env_runner=False)
        buffer = algo.replay_buffer
        with tempfile.TemporaryDirectory() as full, tempfile.TemporaryDirectory() as light:
            algo.save_to_path(full)
            state = algo.get_state()
            del state["rllib_safe"]["replay_buffer"]
            algo.save_to_path(light, state=state)
            checkpoint_per_row = (_dir_bytes(full) - _dir_bytes(light)) / max(1, len(buffer))
            checkpoint_without_buffer = _dir_bytes(light)
        return {
            "env_steps_per_s": steps / wall,
            "gradient_updates_per_s": update_rate,
            "updates_per_iter": updates / iters,
            "sampling_share": sampling / wall,
            "learner_share": learning / wall,
            "driver_peak_mib": _max_rss_mib(),
            "env_runner_peak_mib": max(runner_rss, default=0.0),
            "buffer_rows": len(buffer),
            "buffer_bytes_per_row": buffer.row_nbytes,
            "full_buffer_gib": buffer.row_nbytes * buffer.capacity / 2**30,
            "checkpoint_bytes_per_row": checkpoint_per_row,
            "full_checkpoint_gib": (checkpoint_without_buffer + checkpoint_per_row * buffer.capacity) / 2**30,
            "seconds_per_iter": wall / iters,
        }
    finally:
        algo.stop()


def build_config(name: str, env: str, args: argparse.Namespace) -> Any:
    """The benchmark config of one algorithm: its defaults, learning from the second iteration on."""
    from rllib_safe.algorithms.registry import get_config

    config = get_config(name).environment(env)
    config.env_runners(num_env_runners=args.num_env_runners, num_envs_per_env_runner=args.num_envs_per_env_runner)
    config.training(num_steps_sampled_before_learning_starts=config.env_steps_per_iteration)
    return config.debugging(seed=0)


def run_single(args: argparse.Namespace) -> None:
    """``--single ALGO TASK``: one measurement, printed as JSON."""
    import ray
    import torch

    import rllib_safe

    torch.set_num_threads(1)
    ray.init(include_dashboard=False, log_to_driver=False)
    rllib_safe.register()
    result = measure(build_config(args.single[0], args.single[1], args), args.iters)
    ray.shutdown()
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algos", nargs="*", default=["HASAC", "ConstrainedHASAC", "WCMASAC"])
    parser.add_argument("--env", default="Safety2x4AntVelocity-v0")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--num-env-runners", type=int, default=2)
    parser.add_argument("--num-envs-per-env-runner", type=int, default=4)
    parser.add_argument("--raw-steps", type=int, default=3000, help="env steps for the raw env speed")
    parser.add_argument("--single", nargs=2, metavar=("ALGO", "TASK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        return run_single(args)

    from rllib_safe.envs import make

    raw, _ = time_env(make(args.env), args.raw_steps)
    rows = []
    for name in args.algos:
        cmd = [sys.executable, os.path.abspath(__file__), "--single", name, args.env, "--iters", str(args.iters)]
        cmd += ["--num-env-runners", str(args.num_env_runners)]
        cmd += ["--num-envs-per-env-runner", str(args.num_envs_per_env_runner)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{name} on {args.env} failed:\n{proc.stderr[-3000:]}")
        rows.append((name, json.loads(lines[-1])))

    print(
        f"\n{args.env}: defaults (1000 env steps/iteration, 0.05 updates/env step, minibatch 1000), "
        f"{args.num_env_runners} EnvRunner(s) x {args.num_envs_per_env_runner} env(s), {args.iters} timed "
        f"iterations, {os.cpu_count()} CPUs"
    )
    header = (
        f"{'algorithm':17s} {'env-steps/s':>11s} {'updates/s':>9s} {'s/iter':>7s} {'sampling':>8s} {'update':>7s} "
        f"{'driver MiB':>10s} {'runner MiB':>10s} {'B/row':>6s} {'full buffer GiB':>15s} {'full ckpt GiB':>13s}"
    )
    print(header)
    print("-" * len(header))
    for name, m in rows:
        print(
            f"{name:17s} {m['env_steps_per_s']:11.0f} {m['gradient_updates_per_s']:9.1f} {m['seconds_per_iter']:7.1f} "
            f"{m['sampling_share']:8.0%} {m['learner_share']:7.0%} {m['driver_peak_mib']:10.0f} "
            f"{m['env_runner_peak_mib']:10.0f} {m['buffer_bytes_per_row']:6d} {m['full_buffer_gib']:15.2f} "
            f"{m['full_checkpoint_gib']:13.2f}"
        )
    print(f"{'raw env (1 core)':17s} {raw:11.0f}")


if __name__ == "__main__":
    main()
