r"""Is a task's cost limit reachable? The episode cost and return of reference policies, side by side with the limit.

A learning curve whose cost stays above the limit means one of two things: the algorithm fails to enforce the
constraint, or no nearby policy meets it. This script separates the two before any training, by rolling out
policies that need no learning, with fixed seeds, on the task exactly as the algorithms see it (``rllib_safe.envs.
make``, the task's own cost rule and default limit):

* ``zero``: every action 0 (the robot does nothing; on the moving-obstacle task it stands still);
* ``uniform``: actions uniform in the action box;
* ``gauss:<σ>``: actions ``N(0, σ²)`` clipped to the box, i.e. a freshly initialised Gaussian policy of that σ;
* ``--probe N``: ``N`` random open-loop gaits, each action ``a_k(t) = A_k·sin(2π·f·t·dt + φ_k)`` with ``A_k`` uniform
  in [-1, 1], ``φ_k`` in [0, 2π), one frequency ``f`` in [0.5, 3] Hz, for the first ``--probe-steps`` steps and 0
  afterwards; the row reports the gait of the lowest mean episode cost (its return too). A probe row at or under the
  limit proves the limit reachable by *some* simple behaviour; a probe row over it proves nothing.

Each row gives, over ``--seeds`` (env reset seeds), the median and [min, max] of the team episode cost (per cost
index for several costs; the cost the callback logs as ``episode_cost_mean``), the team return (the mean over agents
of their episode returns, as ``benchmarks/learning.py``) and the episode length, and whether the median cost is at
most the task's limit.

How to run (the obstacle-task numbers of issue 13; about 30 s on one core)::

    python benchmarks/cost_floor.py --env SafeHalfCheetah2x3-v0 --seeds 0 1 2 --probe 40
    python benchmarks/cost_floor.py --env SafeAnt2x4-v0 --policies zero gauss:0.37
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rllib_safe.envs import make, task_names

#: One action per agent for step ``t`` of an episode.
Policy = Callable[[int], dict[str, np.ndarray]]


@dataclass
class Episode:
    """One rolled-out episode: the team return, the team cost per cost index, the number of steps."""

    team_return: float
    costs: tuple[float, ...]
    length: int


def rollout(env, policy: Policy, seed: int) -> Episode:
    """Runs one episode of ``policy`` from ``env.reset(seed=seed)``.

    Args:
        env: An rllib_safe task (``rllib_safe.envs.make``).
        policy: Maps the step index to one action per agent of ``env.possible_agents``.
        seed: The reset seed.

    Returns:
        The team return (mean over agents of their summed rewards), the team cost summed over the episode for each
        cost index, and the episode length.
    """
    env.reset(seed=seed)
    agents = list(env.possible_agents)
    rewards = dict.fromkeys(agents, 0.0)
    costs = np.zeros(env.num_costs)
    t = 0
    while True:
        _, reward, terminated, truncated, infos = env.step(policy(t))
        for agent in agents:
            rewards[agent] += float(reward[agent])
        costs += np.atleast_1d(np.asarray(infos[agents[0]]["cost"], dtype=float))
        t += 1
        if terminated["__all__"] or truncated["__all__"]:
            return Episode(float(np.mean(list(rewards.values()))), tuple(float(c) for c in costs), t)


def _box(env, agent: str) -> tuple[np.ndarray, np.ndarray]:
    space = env.action_spaces[agent]
    return space.low.astype(np.float64), space.high.astype(np.float64)


def reference_policy(env, name: str, rng: np.random.Generator) -> Policy:
    """A policy that needs no learning, by name: ``zero``, ``uniform`` or ``gauss:<σ>`` (module docstring).

    Raises:
        ValueError: For any other name, listing the known ones.
    """

    def act(draw: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Policy:
        boxes = {agent: _box(env, agent) for agent in env.possible_agents}
        return lambda t: {a: np.clip(draw(lo, hi), lo, hi).astype(np.float32) for a, (lo, hi) in boxes.items()}

    if name == "zero":
        return act(lambda lo, hi: np.zeros_like(lo))
    if name == "uniform":
        return act(lambda lo, hi: rng.uniform(lo, hi))
    if name.startswith("gauss:"):
        try:
            sigma = float(name.split(":", 1)[1])
        except ValueError:
            sigma = math.nan
        if not sigma > 0 or not math.isfinite(sigma):
            raise ValueError(f"policy {name!r}: σ must be a positive number, e.g. 'gauss:0.37'.")
        return act(lambda lo, hi: rng.normal(0.0, sigma, lo.shape))
    raise ValueError(f"Unknown policy {name!r}; known: 'zero', 'uniform', 'gauss:<σ>' (e.g. 'gauss:0.37').")


def open_loop_gait(env, rng: np.random.Generator, steps: int) -> Policy:
    """A random sinusoidal gait for the first ``steps`` steps, zero actions afterwards (module docstring)."""
    dt = float(getattr(env.robot.env, "dt", 1.0)) if hasattr(env, "robot") else 1.0
    frequency = rng.uniform(0.5, 3.0)
    gaits = {}
    for agent in env.possible_agents:
        lo, hi = _box(env, agent)
        gaits[agent] = (lo, hi, rng.uniform(-1.0, 1.0, lo.shape), rng.uniform(0.0, 2.0 * np.pi, lo.shape))

    def policy(t: int) -> dict[str, np.ndarray]:
        on = t < steps
        return {
            a: np.clip(
                amp * np.sin(2.0 * np.pi * frequency * t * dt + phase) if on else np.zeros_like(lo), lo, hi
            ).astype(np.float32)
            for a, (lo, hi, amp, phase) in gaits.items()
        }

    return policy


@dataclass
class Row:
    """The episodes of one policy over the seeds."""

    policy: str
    episodes: list[Episode]


def evaluate(env, name: str, policy: Policy, seeds: list[int]) -> Row:
    """Rolls ``policy`` out once per seed."""
    return Row(name, [rollout(env, policy, seed) for seed in seeds])


def probe(env, n: int, steps: int, seeds: list[int], probe_seed: int) -> Row:
    """The lowest-mean-cost gait of ``n`` random open-loop gaits (:func:`open_loop_gait`), each on every seed."""
    rng = np.random.default_rng(probe_seed)
    best: Row | None = None
    for k in range(n):
        gait = open_loop_gait(env, rng, steps)
        row = evaluate(env, f"probe: best of {n} gaits (#{k}, first {steps} steps)", gait, seeds)
        if best is None or _mean_cost(row) < _mean_cost(best):
            best = row
    assert best is not None
    return best


def _mean_cost(row: Row) -> float:
    return float(np.mean([sum(e.costs) for e in row.episodes]))


def _cell(values: list[float], digits: int) -> str:
    return f"{np.median(values):.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def markdown(task: str, limits: tuple[float, ...], rows: list[Row]) -> str:
    """The Markdown table of ``rows``: median [min, max] over seeds, and the verdict against each limit."""
    num_costs = len(limits)
    cost_heads = [f"cost {i}" if num_costs > 1 else "episode cost" for i in range(num_costs)]
    limit_heads = [f"≤ limit {lim:g}" for lim in limits]
    lines = [
        f"{task} | limit {', '.join(f'{lim:g}' for lim in limits)} | {len(rows[0].episodes)} seeds; "
        "cells: median [min, max] over seeds",
        "| policy | " + " | ".join(cost_heads) + " | team return | length | " + " | ".join(limit_heads) + " |",
        "|---" * (3 + 2 * num_costs) + "|",
    ]
    for row in rows:
        costs = [[e.costs[i] for e in row.episodes] for i in range(num_costs)]
        verdicts = ["yes" if np.median(c) <= lim else "no" for c, lim in zip(costs, limits, strict=True)]
        lines.append(
            f"| {row.policy} | "
            + " | ".join(_cell(c, 1) for c in costs)
            + f" | {_cell([e.team_return for e in row.episodes], 1)} | {_cell([e.length for e in row.episodes], 0)} | "
            + " | ".join(verdicts)
            + " |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (module docstring); a bad value exits with a message naming the option."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", required=True, help="a registered task name")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--policies", nargs="*", default=["zero", "uniform", "gauss:0.61", "gauss:0.37"])
    parser.add_argument("--probe", type=int, default=0, help="number of random open-loop gaits to try (0: none)")
    parser.add_argument("--probe-steps", type=int, default=60, help="steps a gait acts before zero actions")
    parser.add_argument("--probe-seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.env not in task_names():
        parser.error(f"--env: unknown task {args.env!r}; known: {task_names()}")
    if args.probe < 0:
        parser.error(f"--probe must be >= 0, got {args.probe}")
    if args.probe_steps < 1:
        parser.error(f"--probe-steps must be >= 1, got {args.probe_steps}")
    return args


def main(argv: list[str] | None = None) -> str:
    """Prints (and returns) the table for the command line ``argv``."""
    args = parse_args(argv)
    env = make(args.env)
    rng = np.random.default_rng(0)
    try:
        policies = {name: reference_policy(env, name, rng) for name in args.policies}
    except ValueError as err:
        raise SystemExit(f"cost_floor.py: error: --policies: {err}") from None
    rows = [evaluate(env, name, policy, args.seeds) for name, policy in policies.items()]
    if args.probe:
        rows.append(probe(env, args.probe, args.probe_steps, args.seeds, args.probe_seed))
    limits = tuple(np.atleast_1d(np.asarray(env.cost_limit, dtype=float)).tolist())
    table = markdown(args.env, limits, rows)
    print(table)
    env.close()
    return table


if __name__ == "__main__":
    main()
