"""The ``rllib-safe`` command line.

``rllib-safe train``: a real RLlib training run with one progress line per iteration (env steps, return, episode cost
against its limit, dual variables, env steps/s), results as JSON lines and TensorBoard, checkpoints, and resume.
``rllib-safe tasks`` / ``rllib-safe algos``: the registered names.

Examples::

    rllib-safe train --algo mappo_lagrangian --env Safety2x4AntVelocity-v0 --stop-timesteps 20000
    rllib-safe train --algo happo --env Safety2x3HalfCheetahVelocity-v0 --config lr=3e-4 num_epochs=10
    rllib-safe train --restore results/MAPPOLagrangian_.../checkpoints/final --stop-iters 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_ENV = "Safety2x4AntVelocity-v0"
DEFAULT_ALGO = "MAPPOLagrangian"


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    import yaml

    overrides = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--config expects KEY=VALUE pairs, got {pair!r}.")
        key, value = pair.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def build_config(args: argparse.Namespace):
    """The AlgorithmConfig of a ``train`` call (validated; raises ValueError naming the bad field)."""
    from rllib_safe.algorithms.registry import get_config

    config = get_config(args.algo)
    config.environment(args.env, env_config=_parse_overrides(args.env_config))
    config.env_runners(num_env_runners=args.num_env_runners, num_envs_per_env_runner=args.num_envs_per_env_runner)
    config.learners(num_learners=args.num_learners)
    config.debugging(seed=args.seed)
    if args.batch_size is not None:
        config.training(train_batch_size_per_learner=args.batch_size)
    if args.cost_limit is not None:
        config.training(cost_limit=args.cost_limit)
    for key, value in _parse_overrides(args.config).items():
        if not hasattr(config, key):
            raise ValueError(f"Unknown config key {key!r} for {type(config).__name__}.")
        setattr(config, key, value)
    config.validate()
    return config


def _flatten(result: dict, agent_ids: list[str], dual_name: str) -> dict[str, Any]:
    env = result.get("env_runners", {})
    learners = result.get("learners", {})
    row: dict[str, Any] = {
        "iteration": result.get("training_iteration"),
        "env_steps": env.get("num_env_steps_sampled_lifetime"),
        "episode_return_mean": env.get("episode_return_mean"),
        "episode_len_mean": env.get("episode_len_mean"),
        "episode_cost_mean": env.get("episode_cost_mean"),
        "num_episodes": env.get("num_episodes"),
        "env_steps_per_s": env.get("num_env_steps_sampled_lifetime_throughput"),
        "time_this_iter_s": result.get("time_this_iter_s"),
        "time_total_s": result.get("time_total_s"),
        "agent_order": result.get("agent_order"),
    }
    for aid in agent_ids:
        stats = learners.get(aid, {})
        for key in ("episode_cost", dual_name, "policy_loss", "entropy", "mean_kl", "happo_factor_mean", "alpha"):
            if key in stats:
                row[f"{aid}/{key}"] = stats[key]
    critic = learners.get("__critic__", {})
    for key in ("vf_loss", "cost_vf_loss", *OFF_POLICY_CRITIC_KEYS):
        if key in critic:
            row[f"critic/{key}"] = critic[key]
    if "replay_buffer" in result:
        row["replay_buffer/size"] = result["replay_buffer"].get("size")
    return {k: (float(v) if hasattr(v, "item") else v) for k, v in row.items()}


def _progress_line(row: dict, agent_ids: list[str], cost_limit: float, dual_name: str) -> str:
    def fmt(x: Any, spec: str = ".2f") -> str:
        return "n/a" if x is None else format(x, spec)

    line = (
        f"iter {row['iteration']:4d} | steps {int(row['env_steps'] or 0):8d} "
        f"| return {fmt(row['episode_return_mean'])} | cost {fmt(row['episode_cost_mean'])} / limit {cost_limit:g}"
    )
    duals = [row.get(f"{aid}/{dual_name}") for aid in agent_ids]
    if any(d is not None for d in duals):
        line += " | " + dual_name.replace("lagrange_multiplier", "λ") + " " + " ".join(fmt(d, ".3f") for d in duals)
    line += _off_policy_part(row, agent_ids, fmt)
    steps_per_s = (row["env_steps_this_iter"] / row["time_this_iter_s"]) if row.get("time_this_iter_s") else None
    return line + f" | {fmt(steps_per_s, '.0f')} env-steps/s | {fmt(row['time_total_s'], '.0f')} s"


#: Critic metrics of the off-policy family (HASAC, ConstrainedHASAC, WCMASAC) in results and progress lines.
OFF_POLICY_CRITIC_KEYS = ("q_loss", "cost_critic_loss", "cost_value", "cvar", "gradient_updates_per_s")


def _off_policy_part(row: dict, agent_ids: list[str], fmt: Any) -> str:
    """α per agent, Q and cost-critic losses, CVaR_ω, replay size and gradient updates/s (off-policy rows only)."""
    if row.get("replay_buffer/size") is None:
        return ""
    part = " | α " + " ".join(fmt(row.get(f"{aid}/alpha"), ".3f") for aid in agent_ids)
    part += f" | Q loss {fmt(row.get('critic/q_loss'), '.3g')}"
    if row.get("critic/cost_critic_loss") is not None:
        part += f" | cost loss {fmt(row['critic/cost_critic_loss'], '.3g')}"
    if row.get("critic/cvar") is not None:
        part += f" | CVaR {fmt(row['critic/cvar'], '.3g')}"
    part += f" | buffer {int(row['replay_buffer/size'])} | {fmt(row.get('critic/gradient_updates_per_s'), '.0f')} upd/s"
    return part


def train(args: argparse.Namespace) -> int:
    """Runs ``rllib-safe train``."""
    import ray

    import rllib_safe
    from rllib_safe.algorithms.registry import canonical_name
    from rllib_safe.algorithms.sequential.sequential import probe_env

    rllib_safe.register()
    if args.restore:
        path = Path(args.restore).expanduser().resolve()
        if not (path / "class_and_ctor_args.pkl").exists():
            raise ValueError(f"--restore: no RLlib checkpoint at {path} (expected class_and_ctor_args.pkl there).")
    else:
        args.algo = canonical_name(args.algo)
        config = build_config(args)  # validates before any Ray actor starts

    ray.init(
        address=os.environ.get("RAY_ADDRESS"),
        num_cpus=None if os.environ.get("RAY_ADDRESS") else args.num_cpus,
        include_dashboard=False,
        ignore_reinit_error=True,
        log_to_driver=args.verbose,
    )
    try:
        if args.restore:
            from ray.rllib.algorithms.algorithm import Algorithm

            algo = Algorithm.from_checkpoint(str(path))
            config = algo.config
            args.algo = type(algo).__name__
        else:
            algo = config.build_algo()
        info = probe_env(config)
        agent_ids = list(info.agent_ids)
        limits = config.cost_limits(info)
        cost_limit = float(next(iter(limits.values()))[0])
        learner_cls = config.get_default_learner_class()
        dual_name = getattr(learner_cls, "dual_name", "lagrange_multiplier")

        stamp = time.strftime("%Y%m%d_%H%M%S")
        out = Path(args.output or f"results/{args.algo}_{config.env}_{stamp}".replace("|", "-")).resolve()
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.to_dict(), default=str, indent=1))
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))
        print(
            f"rllib-safe: {args.algo} on {config.env} | agents {agent_ids} | cost limit {cost_limit:g} "
            f"| results -> {out}",
            flush=True,
        )
        last_steps, iteration = 0, 0
        with open(out / "progress.jsonl", "a") as progress:
            while True:
                result = algo.train()
                iteration += 1
                row = _flatten(result, agent_ids, dual_name)
                row["env_steps_this_iter"] = (row["env_steps"] or 0) - last_steps
                last_steps = row["env_steps"] or 0
                progress.write(json.dumps(row) + "\n")
                progress.flush()
                for key, value in row.items():
                    if isinstance(value, (int, float)) and value is not None:
                        writer.add_scalar(key, value, global_step=int(last_steps))
                print(_progress_line(row, agent_ids, cost_limit, dual_name), flush=True)
                if args.checkpoint_every and iteration % args.checkpoint_every == 0:
                    algo.save_to_path(str(out / "checkpoints" / f"iter_{row['iteration']:06d}"))
                if (args.stop_iters and iteration >= args.stop_iters) or (
                    args.stop_timesteps and last_steps >= args.stop_timesteps
                ):
                    break
        final = out / "checkpoints" / "final"
        algo.save_to_path(str(final))
        writer.close()
        print(f"done: {iteration} iterations, {int(last_steps)} env steps.")
        print(f"results: {out / 'progress.jsonl'} (JSON lines), {out / 'tensorboard'} (TensorBoard)")
        print(f"checkpoint: {final}  (resume: rllib-safe train --restore {final})")
        algo.stop()
    finally:
        ray.shutdown()
    return 0


def list_tasks(args: argparse.Namespace) -> int:
    """Prints the registered task names."""
    from rllib_safe.envs import task_names

    print("\n".join(task_names()))
    return 0


def list_algos(args: argparse.Namespace) -> int:
    """Prints the registered algorithm names."""
    from rllib_safe.algorithms.registry import ALGORITHMS

    print("\n".join(ALGORITHMS))
    return 0


def make_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rllib-safe``."""
    parser = argparse.ArgumentParser(prog="rllib-safe", description="Safe multi-agent RL on Ray RLlib.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an algorithm on a task")
    p.add_argument("--algo", default=DEFAULT_ALGO, help=f"algorithm name (default {DEFAULT_ALGO}; see `algos`)")
    p.add_argument("--env", default=DEFAULT_ENV, help=f"task name (default {DEFAULT_ENV}; see `tasks`)")
    p.add_argument("--stop-timesteps", type=int, default=20_000, help="stop after this many env steps")
    p.add_argument("--stop-iters", type=int, default=0, help="stop after this many iterations (0: no limit)")
    p.add_argument("--num-env-runners", type=int, default=2, help="sampling processes (default 2)")
    p.add_argument("--num-envs-per-env-runner", type=int, default=4, help="vectorised envs per EnvRunner (default 4)")
    p.add_argument("--num-learners", type=int, default=0, help="0: learn in the driver process")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="train_batch_size_per_learner: env steps per iteration for the on-policy algorithms (their default "
        "4000), rows per gradient update for the off-policy ones (default 1000)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cost-limit", type=float, default=None, help="limit on the episode cost (default: the task's)")
    p.add_argument("--output", default=None, help="results folder (default results/<algo>_<env>_<time>)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="checkpoint every N iterations (0: only at the end)")
    p.add_argument("--restore", default=None, help="resume from a checkpoint folder")
    p.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE", help="algorithm config overrides")
    p.add_argument("--env-config", nargs="*", default=[], metavar="KEY=VALUE", help="task options")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (default: all)")
    p.add_argument("--verbose", action="store_true", help="show the Ray workers' logs")
    p.set_defaults(func=train)

    sub.add_parser("tasks", help="list the task names").set_defaults(func=list_tasks)
    sub.add_parser("algos", help="list the algorithm names").set_defaults(func=list_algos)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rllib-safe`` console script."""
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"rllib-safe: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
