"""End-to-end training speed per algorithm, next to the raw env speed of the same task.

Reported: env steps per second of wall time (sampling plus update), the sampling and learner time shares, and peak
memory.

Each algorithm trains ``--iters`` iterations after one warm-up iteration (not counted). Env steps/s is the number of
env steps sampled in the timed iterations over their wall time. The shares come from the exact per-iteration phase
times the Algorithm logs (``timers/sample_s``; ``timers/update_and_sync_s``: learner update plus weight sync). Peak
memory is the maximum resident set size of the driver (which hosts the learner) and of the EnvRunner processes; every
measurement runs in a fresh process.

How to run::

    python benchmarks/train_throughput.py   # MAPPO, HAPPO, MAPPOLagrangian on Safety2x4AntVelocity-v0
    python benchmarks/train_throughput.py --iters 5 --num-env-runners 2 --batch-size 8000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from env_throughput import time_env  # noqa: E402


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(config: Any, iters: int) -> dict[str, float]:
    """Builds ``config``'s algorithm, trains one warm-up and ``iters`` timed iterations, returns the measurements."""
    algo = config.build_algo()
    try:
        algo.train()  # warm-up: actor start, first weight sync, torch initialisation
        steps0 = algo.metrics.peek(("env_runners", "num_env_steps_sampled_lifetime"), default=0)
        sampling = learning = 0.0
        start = time.perf_counter()
        for _ in range(iters):
            timers = algo.train()["timers"]
            sampling += timers["sample_s"]
            learning += timers["update_and_sync_s"]
        wall = time.perf_counter() - start
        steps = algo.metrics.peek(("env_runners", "num_env_steps_sampled_lifetime")) - steps0
        runner_rss = algo.env_runner_group.foreach_env_runner(lambda er: _max_rss_mib(), local_env_runner=False)
        return {
            "env_steps_per_s": steps / wall,
            "sampling_share": sampling / wall,
            "learner_share": learning / wall,
            "driver_peak_mib": _max_rss_mib(),
            "env_runner_peak_mib": max(runner_rss, default=0.0),
            "seconds_per_iter": wall / iters,
        }
    finally:
        algo.stop()


def build_config(name: str, env: str, args: argparse.Namespace) -> Any:
    """The benchmark config of one algorithm (the same batch sizes for every algorithm)."""
    from rllib_safe.algorithms.registry import get_config

    return (
        get_config(name)
        .environment(env)
        .env_runners(num_env_runners=args.num_env_runners, num_envs_per_env_runner=args.num_envs_per_env_runner)
        .learners(num_learners=args.num_learners, num_gpus_per_learner=args.num_gpus_per_learner)
        .training(
            train_batch_size_per_learner=args.batch_size,
            minibatch_size=args.minibatch_size,
            num_epochs=args.num_epochs,
        )
        .debugging(seed=0)
    )


def measure_in_subprocess(name: str, env: str, args: argparse.Namespace) -> dict[str, float]:
    """:func:`measure` in a fresh process (peak memory is per process and never goes down)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--single", name, env]
    keys = ("iters", "batch_size", "minibatch_size", "num_epochs", "num_env_runners", "num_envs_per_env_runner")
    for key in (*keys, "num_learners", "num_gpus_per_learner"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{name} on {env} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The batch-size and resource options shared with ``efficiency.py``."""
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4000)
    parser.add_argument("--minibatch-size", type=int, default=1000)
    parser.add_argument("--num-epochs", type=int, default=5)
    parser.add_argument("--num-env-runners", type=int, default=2)
    parser.add_argument("--num-envs-per-env-runner", type=int, default=4)
    parser.add_argument("--num-learners", type=int, default=0, help="0: the learner runs in the driver")
    parser.add_argument("--num-gpus-per-learner", type=float, default=0, help="GPUs per learner (0: CPU)")
    parser.add_argument("--single", nargs=2, metavar=("ALGO", "TASK"), help=argparse.SUPPRESS)


def run_single(args: argparse.Namespace) -> None:
    """``--single ALGO TASK``: one measurement, printed as JSON (used by :func:`measure_in_subprocess`)."""
    import ray

    import rllib_safe

    ray.init(include_dashboard=False, log_to_driver=False)
    rllib_safe.register()
    result = measure(build_config(args.single[0], args.single[1], args), args.iters)
    ray.shutdown()
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algos", nargs="*", default=["MAPPO", "HAPPO", "MAPPOLagrangian"])
    parser.add_argument("--env", default="Safety2x4AntVelocity-v0")
    parser.add_argument("--raw-steps", type=int, default=3000, help="env steps for the raw env speed")
    add_arguments(parser)
    args = parser.parse_args()
    if args.single:
        return run_single(args)

    from rllib_safe.envs import make

    raw, _ = time_env(make(args.env), args.raw_steps)
    rows = [(name, measure_in_subprocess(name, args.env, args)) for name in args.algos]

    print(
        f"\n{args.env}: batch {args.batch_size} env steps/iteration, {args.num_epochs} epochs x minibatch "
        f"{args.minibatch_size}, {args.num_env_runners} EnvRunner(s) x {args.num_envs_per_env_runner} env(s), "
        f"{args.iters} timed iterations, {os.cpu_count()} CPUs, "
        f"{max(1, args.num_learners)} learner(s) x {args.num_gpus_per_learner:g} GPU"
    )
    header = (
        f"{'algorithm':18s} {'env-steps/s':>11s} {'s/iter':>7s} {'sampling':>9s} {'update':>8s} "
        f"{'driver peak MiB':>16s} {'EnvRunner peak MiB':>19s}"
    )
    print(header)
    print("-" * len(header))
    for name, m in rows:
        print(
            f"{name:18s} {m['env_steps_per_s']:11.0f} {m['seconds_per_iter']:7.1f} {m['sampling_share']:9.0%} "
            f"{m['learner_share']:8.0%} {m['driver_peak_mib']:16.0f} {m['env_runner_peak_mib']:19.0f}"
        )
    print(f"{'raw env (1 core)':18s} {raw:11.0f}")


if __name__ == "__main__":
    main()
