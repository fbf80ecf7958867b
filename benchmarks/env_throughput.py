"""Raw environment speed: env steps per second of every registered task on one core (random actions).

Each task runs ``--steps`` env steps (one step = all agents act once) with uniformly random actions drawn beforehand,
resetting whenever an episode ends; the time includes the resets. For the velocity tasks the script can also time
gymnasium-robotics' own MaMuJoCo v1 env on the same robot (``--compare-mamujoco``), the speed of the stock stack.

How to run::

    python benchmarks/env_throughput.py --steps 5000
    python benchmarks/env_throughput.py --tasks Safety2x4AntVelocity-v0 --compare-mamujoco
    python benchmarks/env_throughput.py --tasks SafeAnt2x4-v0 --env-config walls=macpo obs_mode=macpo

Output: a table with one row per task (agents, observation sizes, state size, steps/s, episodes finished) and the
process's peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from rllib_safe.envs import make, task_names


def time_env(env, steps: int, seed: int = 0) -> tuple[float, int]:
    """Steps ``env`` ``steps`` times with pre-drawn random actions; returns (steps/s, episodes finished)."""
    rng = np.random.default_rng(seed)
    agents = list(env.possible_agents)
    actions = [
        {
            a: rng.uniform(
                -1, 1, env.action_space(a).shape if callable(env.action_space) else env.action_spaces[a].shape
            ).astype(np.float32)
            for a in agents
        }
        for _ in range(min(steps, 1000))
    ]
    env.reset(seed=seed)
    episodes = 0
    start = time.perf_counter()
    for t in range(steps):
        _, _, term, trunc, _ = env.step(actions[t % len(actions)])
        if any(term.values()) or any(trunc.values()):
            episodes += 1
            env.reset()
    return steps / (time.perf_counter() - start), episodes


def mamujoco_reference(task_name: str):
    """The stock gymnasium-robotics MaMuJoCo v1 env of a velocity task, or None for other tasks."""
    from rllib_safe.envs.safe_mamujoco import VELOCITY_TASKS

    task = VELOCITY_TASKS.get(task_name)
    if task is None:
        return None
    from gymnasium_robotics import mamujoco_v1

    return mamujoco_v1.parallel_env(task.scenario, task.agent_conf, agent_obsk=1)


def _parse(value: str) -> int | float | str:
    """A command-line option value as an int, a float, or the string itself."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000, help="env steps per task")
    parser.add_argument("--tasks", nargs="*", default=None, help="task names (default: all registered)")
    parser.add_argument("--compare-mamujoco", action="store_true", help="also time stock MaMuJoCo v1")
    parser.add_argument(
        "--env-config", nargs="*", default=[], metavar="KEY=VALUE", help="task options, e.g. walls=macpo obs_mode=macpo"
    )
    args = parser.parse_args()
    options = {key: _parse(value) for key, value in (kv.split("=", 1) for kv in args.env_config)}
    names = args.tasks or task_names()
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the issue asks
    except (AttributeError, OSError):
        pass

    header = f"{'task':40s} {'agents':>6s} {'obs dims':>22s} {'state':>6s} {'steps/s':>9s} {'episodes':>8s}"
    if args.compare_mamujoco:
        header += f" {'MaMuJoCo v1 steps/s':>20s}"
    print(header)
    print("-" * len(header))
    for name in names:
        env = make(name, **options)
        sps, episodes = time_env(env, args.steps)
        dims = sorted({env.observation_spaces[a].shape[0] for a in env.possible_agents})
        row = (
            f"{name:40s} {len(env.possible_agents):6d} {','.join(map(str, dims)):>22s} "
            f"{env.state_space.shape[0]:6d} {sps:9.0f} {episodes:8d}"
        )
        if args.compare_mamujoco:
            ref = mamujoco_reference(name)
            row += f" {time_env(ref, args.steps)[0]:20.0f}" if ref is not None else f" {'-':>20s}"
        print(row, flush=True)
        env.close()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak memory (max RSS of this process): {peak_mib:.0f} MiB; {args.steps} steps per task, one core")
    if options:
        print(f"task options: {options}")


if __name__ == "__main__":
    main()
