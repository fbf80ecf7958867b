"""MAFOCOPS on SafeMAToy-v0 with the two critic schedules (``critic_update``), same seeds and budget.

"before_agents": the critics train once per iteration before the agent loop; "with_each_agent": they step on every
minibatch of each agent's update (MAFOCOPS Algorithm 1 line 12). Prints, per schedule and seed, the deterministic
evaluation (mean action, 20 episodes) after the last iteration, the largest training cost of the last 5 iterations
and the reward critic's last value loss, then the means over seeds.

How to run::

    python benchmarks/critic_update.py                        # 3 seeds x 20 iterations of 1,000 steps
    python benchmarks/critic_update.py --seeds 0 1 2 3 4 --iters 30
    python benchmarks/critic_update.py --schedules with_each_agent --seeds 1 2
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import ray

import rllib_safe
from rllib_safe.algorithms.mafocops import MAFOCOPSConfig
from rllib_safe.core.columns import CRITIC_ID

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.helpers import TOY_LEARNING  # noqa: E402

#: The toy settings of tests/learning/test_mafocops_vs_macpo.py: the learning tests' toy settings
#: (``tests/helpers.TOY_LEARNING``) plus Table 5's δ and the λ and ν lr for the toy's cost scale.
TOY = dict(
    cost_limit=5.0,
    **TOY_LEARNING,
    focops_lambda=1.0,
    nu_lr=0.3,
    kl_threshold=0.0125,
    reseed_each_iteration=True,
)


SCHEDULES = ("before_agents", "with_each_agent")


def run(schedule: str, seed: int, iters: int) -> dict[str, float]:
    config = (
        MAFOCOPSConfig()
        .environment("SafeMAToy-v0")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1, batch_mode="complete_episodes")
        .training(critic_update=schedule, **TOY)
        .evaluation(
            evaluation_interval=10_000,
            evaluation_duration=20,
            evaluation_duration_unit="episodes",
            evaluation_num_env_runners=0,
            evaluation_config={"explore": False},
        )
        .debugging(seed=seed)
    )
    algo = config.build_algo()
    try:
        results = [algo.train() for _ in range(iters)]
        evaluation = algo.evaluate()["env_runners"]
    finally:
        algo.stop()
    last = results[-1]["learners"][CRITIC_ID]
    return {
        "eval_return": evaluation["episode_return_mean"] / 2,  # the team reward, per agent
        "eval_cost": evaluation["episode_cost_mean"],
        "max_train_cost_last5": max(r["env_runners"]["episode_cost_mean"] for r in results[-5:]),
        # The reward critic's last minibatch loss (the logged cost critic loss is not comparable between the
        # schedules: with each agent it covers the last agent's cost critic only).
        "vf_loss": last["vf_loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rllib_safe.register()
    try:
        table = {}
        for schedule in args.schedules:
            for seed in args.seeds:
                table[schedule, seed] = row = run(schedule, seed, args.iters)
                print(f"{schedule:16s} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
        print(f"\nmeans over seeds {args.seeds}, {args.iters} iterations of 1,000 steps (best safe return 18.09):")
        for schedule in args.schedules:
            rows = [table[schedule, s] for s in args.seeds]
            means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            print(f"{schedule:16s} " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
