"""Sampling speed on one core: the raw env next to ``EnvRunner.sample()`` of RLlib's runner and the lock-step runners.

The raw env speed is env steps per second of one env stepped in a plain loop with pre-drawn random actions (resets
included), as in ``env_throughput.py``. Runner speed is env steps per second of ``EnvRunner.sample(num_timesteps=
--chunk)`` calls in this process (``num_env_runners=0``) with N envs per runner and a random-initialised
MAPPO-Lagrangian policy (actors 128×128, the rllib_safe default); episodes are built, callbacks (the cost metrics) run.
Runners:

* ``stock``: RLlib's ``MultiAgentEnvRunner``;
* ``lockstep``: :class:`rllib_safe.env_runners.LockstepMultiAgentEnvRunner` (bitwise the stock runner's episodes);
* ``fused``: :class:`rllib_safe.env_runners.FusedLockstepEnvRunner` (agents with equal actor layers in one batch;
  the on-policy default).

The process is pinned to one core with one torch thread. Each (task, N) is measured in ``--rounds`` rounds that
interleave raw and runners, and the best round counts, so that a busy machine slows all of them alike; the table
gives each runner's share of the raw speed. ``--clock cpu`` counts process CPU time instead of wall time (steadier
on a machine shared with other jobs).

How to run::

    python benchmarks/sampling.py                                     # 4 tasks x 1/4/8/16 envs per runner
    python benchmarks/sampling.py --tasks Safety2x4AntVelocity-v0 --envs 1 8 --rounds 5 --clock cpu
    python benchmarks/sampling.py --profile lockstep --tasks Safety2x4AntVelocity-v0 --envs 8   # cProfile top lines
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from collections.abc import Callable

import numpy as np

TASKS = [
    "Safety2x4AntVelocity-v0",
    "Safety6x1HalfCheetahVelocity-v0",
    "SafeManyAgentAnt8x1-v0",
    "SafeShadowHandOver-v0",
]
RUNNERS = ["stock", "lockstep", "fused"]


def raw_loop(env, steps: int, seed: int = 0) -> Callable[[], int]:
    """A plain loop of ``steps`` env steps with pre-drawn random actions (resets included); returns the steps."""
    rng = np.random.default_rng(seed)
    agents = list(env.possible_agents)
    actions = [
        {a: rng.uniform(-1, 1, env.action_spaces[a].shape).astype(np.float32) for a in agents}
        for _ in range(min(steps, 500))
    ]
    env.reset(seed=seed)

    def run() -> int:
        for t in range(steps):
            _, _, terminateds, truncateds, _ = env.step(actions[t % len(actions)])
            if terminateds["__all__"] or truncateds["__all__"]:
                env.reset()
        return steps

    return run


def make_runner(name: str, task: str, num_envs: int, chunk: int):
    """A local EnvRunner of kind ``name`` for ``task`` with ``num_envs`` envs, warmed up by one ``sample()`` call."""
    from rllib_safe.algorithms.registry import get_config
    from rllib_safe.env_runners import env_runner_class

    config = (
        get_config("MAPPOLagrangian")
        .environment(task)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=num_envs, env_runner_cls=env_runner_class(name))
        .debugging(seed=0)
    )
    config.validate()
    runner = config.env_runner_cls(config=config)
    runner.sample(num_timesteps=chunk)
    return runner


def runner_loop(runner, steps: int, chunk: int) -> Callable[[], int]:
    """``sample(num_timesteps=chunk)`` calls until at least ``steps`` env steps; returns the env steps sampled."""

    def run() -> int:
        done = 0
        while done < steps:
            done += sum(len(e) for e in runner.sample(num_timesteps=chunk))
        return done

    return run


def timed(run: Callable[[], int], clock: Callable[[], float]) -> float:
    start = clock()
    steps = run()
    return steps / (clock() - start)


def measure(task: str, num_envs: int, args: argparse.Namespace) -> dict[str, float]:
    """Best-of-rounds steps/s of the raw env and of each runner for one (task, envs per runner)."""
    from rllib_safe.envs import make

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    loops = {"raw": raw_loop(make(task), args.steps)}
    runners = {name: make_runner(name, task, num_envs, args.chunk) for name in args.runners}
    loops.update({name: runner_loop(r, args.steps, args.chunk) for name, r in runners.items()})
    best = dict.fromkeys(loops, 0.0)
    for _ in range(args.rounds):
        for name, run in loops.items():
            best[name] = max(best[name], timed(run, clock))
    for runner in runners.values():
        runner.stop()
    return best


def profile(task: str, num_envs: int, args: argparse.Namespace) -> None:
    """Prints the top lines of a cProfile of runner ``--profile``'s ``sample()`` (first task and envs setting)."""
    runner = make_runner(args.profile, task, num_envs, args.chunk)
    profiler = cProfile.Profile()
    profiler.enable()
    steps = runner_loop(runner, args.steps, args.chunk)()
    profiler.disable()
    runner.stop()
    print(f"\ncProfile of {args.profile} runner.sample() on {task}, {num_envs} env(s), {steps} env steps:")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile_lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="*", default=TASKS)
    parser.add_argument("--envs", nargs="*", type=int, default=[1, 4, 8, 16], help="envs per runner")
    parser.add_argument("--runners", nargs="*", default=RUNNERS, choices=RUNNERS)
    parser.add_argument("--steps", type=int, default=2000, help="env steps per measurement")
    parser.add_argument("--chunk", type=int, default=1000, help="env steps per sample() call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--profile", choices=RUNNERS, help="print cProfile's top lines for this runner instead")
    parser.add_argument("--profile-lines", type=int, default=25)
    args = parser.parse_args()

    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the issue measures
    except (AttributeError, OSError):
        pass
    import torch

    torch.set_num_threads(1)
    import rllib_safe  # noqa: F401  (registers the tasks)

    if args.profile:
        return profile(args.tasks[0], args.envs[0], args)

    load = os.getloadavg()[0]
    print(
        f"one core, {args.clock} clock, best of {args.rounds} rounds of >= {args.steps} env steps, "
        f"sample(num_timesteps={args.chunk}); load average {load:.1f} on {os.cpu_count()} CPUs"
    )
    header = f"{'task':34s} {'envs':>4s} {'raw steps/s':>11s}" + "".join(
        f" {name + ' steps/s (raw)':>24s}" for name in args.runners
    )
    print(header)
    print("-" * len(header))
    for task in args.tasks:
        for num_envs in args.envs:
            best = measure(task, num_envs, args)
            row = f"{task:34s} {num_envs:4d} {best['raw']:11.0f}"
            for name in args.runners:
                row += f" {best[name]:15.0f} ({best[name] / best['raw']:5.0%})"
            print(row, flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
