"""Trains every algorithm on every registered task for a few tiny iterations and prints a table (too slow for CI).

One local Ray, no remote EnvRunners, short episodes (``max_episode_steps``), tiny batches: this checks that every
(algorithm, task) pair builds, samples, trains and reports its cost, not that it learns.

How to run::

    python benchmarks/smoke_all_tasks.py                                  # all algorithms x all tasks
    python benchmarks/smoke_all_tasks.py --algos MAFOCOPS MACPO --tasks SafeShadowHandOver-v0
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algos", nargs="*", default=None, help="default: every registered algorithm")
    parser.add_argument("--tasks", nargs="*", default=None, help="default: every registered task")
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--episode-steps", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()

    import numpy as np
    import ray

    import rllib_safe
    from rllib_safe.algorithms.registry import ALGORITHMS, get_config
    from rllib_safe.envs import task_names

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rllib_safe.register()
    algos, tasks = args.algos or list(ALGORITHMS), args.tasks or task_names()
    print(f"{'task':34s} {'algorithm':16s} {'status':8s} {'s/iter':>7s} {'episode cost':>13s} {'return':>9s}")
    failures = 0
    for task in tasks:
        for algo in algos:
            config = (
                get_config(algo)
                .environment(task, env_config={"max_episode_steps": args.episode_steps})
                .env_runners(num_env_runners=0)
                .training(train_batch_size_per_learner=args.batch_size, minibatch_size=args.batch_size // 2)
                .debugging(seed=0)
            )
            try:
                a = config.build_algo()
                start = time.perf_counter()
                for _ in range(args.iters):
                    result = a.train()
                per_iter = (time.perf_counter() - start) / args.iters
                a.stop()
                env = result["env_runners"]
                losses = [v.get("policy_loss", 0.0) for k, v in result["learners"].items() if k.startswith("agent")]
                status = "ok" if np.all(np.isfinite(losses)) else "nan"
                cost, ret = env.get("episode_cost_mean", float("nan")), env.get("episode_return_mean", float("nan"))
                print(f"{task:34s} {algo:16s} {status:8s} {per_iter:7.2f} {cost:13.2f} {ret:9.2f}", flush=True)
                failures += status != "ok"
            except Exception as e:  # report and go on with the next pair
                failures += 1
                print(f"{task:34s} {algo:16s} {'FAILED':8s} {type(e).__name__}: {str(e)[:200]}", flush=True)
    ray.shutdown()
    print(f"\n{len(tasks) * len(algos) - failures} of {len(tasks) * len(algos)} pairs trained.")


if __name__ == "__main__":
    main()
