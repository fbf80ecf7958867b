"""The off-policy family against MAPPO-Lagrangian on Safety2x4AntVelocity-v0 with a cost limit that binds.

The seed paper (``003``, Sec. 4) claims WCMASAC earns at least MAPPO-Lagrangian's reward with fewer constraint
violations. This script runs, seed 0, ``--steps`` env steps each (default 300 000), one after another:

1. HASAC (unconstrained), which sets the binding limit: half of HASAC's mean episode cost over its last
   ``--tail-episodes`` training episodes (the paper's sensitivity studies set bounds relative to the unconstrained
   cost in this way), or the task's own limit if HASAC's cost was 0 (no limit binds then); ``--cost-limit`` fixes
   it instead;
2. ConstrainedHASAC, WCMASAC and MAPPOLagrangian with that limit.

The off-policy three run with HARL's tuned HASAC config for Ant 2x4 (:data:`HARL_ANT_2X4`; ``--preset defaults``
for their defaults), MAPPO-Lagrangian with the package's defaults; 2 EnvRunners × 4 envs, a learner in the driver
with one torch thread. Reported per algorithm, from its last ``--tail-episodes`` training episodes (the stochastic
policy that is being trained, as the paper's curves): mean episode return (the team reward once: RLlib's summed
return divided by the number of agents), mean episode cost, episode-cost p90 and the fraction of episodes over the
limit; plus wall time. Per-iteration rows (the package's progress rows: team return, costs, λ and α per agent,
critic losses, CVaR_ω, buffer size) go to ``--out`` as JSON lines.

How to run (hours on 2 shared cores)::

    nice python benchmarks/offpolicy_ant.py --out results/offpolicy_ant.jsonl
    nice python benchmarks/offpolicy_ant.py --steps 20000 --algos WCMASAC --cost-limit 10   # a short check
    nice python benchmarks/offpolicy_ant.py --cost-limit 12.5 --jobs 3   # the three others at once, a known limit
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

DEFAULT_ENV = "Safety2x4AntVelocity-v0"

#: HARL's tuned HASAC config for MaMuJoCo Ant 2x4 (``tuned_configs/mamujoco/Ant-v2-2x4/hasac/config.json``), used
#: for the three off-policy algorithms with ``--preset harl_ant_2x4`` (the default here); ``--preset defaults`` runs
#: their defaults (HARL ``hasac.yaml``: α 0.001, n-step 20, minibatch 1000, lr 5e-4, Huber loss).
HARL_ANT_2X4 = {
    "initial_alpha": 0.2,
    "auto_alpha": False,
    "train_batch_size_per_learner": 2200,
    "n_step": 5,
    "actor_lr": 1e-3,
    "critic_lr": 3e-4,
    "cost_critic_lr": 3e-4,
    "critic_loss": "mse",
}


def run_one(
    name: str, env_name: str, steps: int, cost_limit: float, tail: int, out: str, preset: str
) -> dict[str, Any]:
    """Trains one algorithm for ``steps`` env steps; returns the tail statistics."""
    import ray
    import torch

    import rllib_safe
    from rllib_safe.algorithms.registry import get_config
    from rllib_safe.studies.progress import flatten_result

    torch.set_num_threads(1)
    for attempt in range(3):  # a loaded machine can time out Ray's start
        try:
            ray.init(include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            if attempt == 2:
                raise
            time.sleep(30)
    rllib_safe.register()
    config = (
        get_config(name)
        .environment(env_name)
        .env_runners(num_env_runners=2, num_envs_per_env_runner=4)
        .training(cost_limit=cost_limit)
        .debugging(seed=0)
    )
    config.callbacks(EpisodeRecorder)
    if preset == "harl_ant_2x4" and hasattr(config, "n_step"):
        config.training(**HARL_ANT_2X4)
    algo = config.build_algo()
    returns: list[float] = []
    costs: list[float] = []
    start = time.time()
    with open(out, "a") as log:
        while True:
            result = algo.train()
            env = result["env_runners"]
            returns += _items(env.get("episode_record_returns"))
            costs += _items(env.get("episode_record_costs"))
            lifetime = env.get("num_env_steps_sampled_lifetime", 0)
            # The package's progress row: team return, costs, λ / α per agent, Q and cost losses, CVaR_ω, buffer.
            row = {"algo": name, **flatten_result(result), "seconds": time.time() - start}
            log.write(json.dumps(row) + "\n")
            log.flush()
            if lifetime >= steps:
                break
    algo.stop()
    ray.shutdown()
    r, c = np.asarray(returns[-tail:]), np.asarray(costs[-tail:])
    return {
        "algo": name,
        "episodes": len(c),
        "return": float(r.mean()),
        "cost": float(c.mean()),
        "cost_p90": float(np.percentile(c, 90)),
        "violations": float((c > cost_limit).mean()),
        "hours": (time.time() - start) / 3600,
    }


def binding_limit(hasac_cost: float, env_name: str) -> float:
    """Half of HASAC's episode cost, or the task's own limit when HASAC had no cost.

    Without cost no limit binds, and with a limit of 0 the constrained algorithms' multipliers would climb on the
    estimation noise of their cost critics alone.
    """
    if hasac_cost > 0:
        limit = hasac_cost / 2
        print(f"binding limit: half of HASAC's episode cost {hasac_cost:.2f} -> {limit:.2f}", flush=True)
        return limit
    from rllib_safe.envs import make

    env = make(env_name)
    limit = float(np.max(env.cost_limit))
    env.close()
    print(f"HASAC's episode cost is 0: no limit binds at this budget; the task's limit {limit:g} instead", flush=True)
    return limit


def _items(series: Any) -> list[float]:
    """The items of an item series as RLlib returns it: a list, or NaN when no episode ended this iteration."""
    if series is None or (np.isscalar(series) and np.isnan(series)):
        return []
    return np.atleast_1d(series).tolist()


def _episode_recorder_class():
    from rllib_safe.callbacks import SafeCostCallback, episode_costs

    class _EpisodeRecorder(SafeCostCallback):
        """SafeCostCallback plus each finished episode's (return, team cost) as an item series."""

        def on_episode_end(self, *, episode, prev_episode_chunks=None, metrics_logger=None, **kwargs) -> None:
            super().on_episode_end(
                episode=episode, prev_episode_chunks=prev_episode_chunks, metrics_logger=metrics_logger, **kwargs
            )
            if metrics_logger is None:
                return
            totals = episode_costs(episode, prev_episode_chunks)
            cost = float(np.mean([t.sum() for t in totals.values()])) if totals else 0.0
            # The team return once (every agent receives the team reward; RLlib's get_return() sums the agents).
            chunks = [episode, *(prev_episode_chunks or [])]
            episode_return = sum(chunk.get_return() for chunk in chunks) / max(1, len(episode.agent_episodes))
            # Two series of equal length (an item series flattens tuples).
            metrics_logger.log_value("episode_record_returns", float(episode_return), reduce="item_series")
            metrics_logger.log_value("episode_record_costs", cost, reduce="item_series")

    return _EpisodeRecorder


EpisodeRecorder = _episode_recorder_class()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--env", default=DEFAULT_ENV)
    parser.add_argument("--algos", nargs="*", default=["ConstrainedHASAC", "WCMASAC", "MAPPOLagrangian"])
    parser.add_argument("--cost-limit", type=float, default=None, help="default: half of HASAC's episode cost")
    parser.add_argument("--tail-episodes", type=int, default=40)
    parser.add_argument("--out", default="offpolicy_ant.jsonl")
    parser.add_argument("--preset", choices=["harl_ant_2x4", "defaults"], default="harl_ant_2x4")
    parser.add_argument("--jobs", type=int, default=1, help="algorithms trained at once after HASAC (each 2 CPUs)")
    parser.add_argument("--single", nargs=2, metavar=("ALGO", "LIMIT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        limit = float(args.single[1])
        result = run_one(args.single[0], args.env, args.steps, limit, args.tail_episodes, args.out, args.preset)
        print(json.dumps(result))
        return

    def run(name: str, limit: float) -> dict[str, Any]:
        cmd = [sys.executable, os.path.abspath(__file__), "--single", name, str(limit), "--steps", str(args.steps)]
        cmd += ["--tail-episodes", str(args.tail_episodes), "--out", args.out, "--env", args.env]
        cmd += ["--preset", args.preset]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(lines[-1])
        print(json.dumps(result), flush=True)
        return result

    rows = []
    limit = args.cost_limit
    if limit is None:
        hasac = run("HASAC", 25.0)
        rows.append(hasac)
        limit = binding_limit(hasac["cost"], args.env)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each run is its own process with its own Ray
        rows += list(pool.map(lambda name: run(name, limit), args.algos))

    print(
        f"\n{args.env}, {args.steps} env steps, seed 0, cost limit {limit:.2f}; "
        f"last {args.tail_episodes} training episodes"
    )
    header = f"{'algorithm':17s} {'return':>9s} {'cost':>7s} {'cost p90':>8s} {'over limit':>10s} {'hours':>6s}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['algo']:17s} {r['return']:9.1f} {r['cost']:7.2f} {r['cost_p90']:8.2f} {r['violations']:10.0%} "
            f"{r['hours']:6.2f}"
        )


if __name__ == "__main__":
    main()
