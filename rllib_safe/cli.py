"""The ``rllib-safe`` command line.

``rllib-safe train``: one training run, as a one-trial Ray Tune experiment, with one progress line per iteration
(env steps, return, episode cost against its limit, its tail, dual variables, env steps/s); results (progress.jsonl,
Tune's result.json and TensorBoard events, optionally W&B), checkpoints and resume are Tune's.
``rllib-safe sweep FILE``: a study from ``tune_configs/`` (the same code path, many trials).
``rllib-safe table`` / ``plot``: the papers' tables and learning curves from run directories.
``rllib-safe evaluate CHECKPOINT``: deterministic episodes of a trained team, their cost tail and a video.
``rllib-safe tasks`` / ``rllib-safe algos``: the registered names.

Examples::

    rllib-safe train --algo mappo_lagrangian --env Safety2x4AntVelocity-v0 --stop-timesteps 20000
    rllib-safe train --algo happo --env Safety2x3HalfCheetahVelocity-v0 --config lr=3e-4 num_epochs=10
    rllib-safe train --restore results/MAPPOLagrangian_.../run/checkpoint_000000 --stop-iters 20
    rllib-safe sweep tune_configs/mafocops_lambda.yaml && rllib-safe table results/mafocops_lambda
    rllib-safe plot results/mafocops_lambda --out plots/mafocops_lambda.png
    rllib-safe evaluate results/.../checkpoint_000000 --episodes 20 --video team.mp4
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

DEFAULT_ENV = "Safety2x4AntVelocity-v0"
DEFAULT_ALGO = "MAPPOLagrangian"
#: Name of a train run's trial directory inside its results directory.
TRAIN_TRIAL_DIR = "run"
#: Where relative result paths go inside a Ray job (whose working directory is a temporary copy that Ray deletes when
#: the job ends): under Tune's own default results folder, on the node that runs the job's driver (the head).
JOB_RESULTS_ROOT = "~/ray_results/rllib_safe"


def in_ray_job() -> bool:
    """True inside the driver of a ``ray job submit`` job (Ray's job supervisor sets this variable for it)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def local_path(path: str) -> Path:
    """An absolute local path.

    A relative one is taken from the current directory or, inside a Ray job, from :data:`JOB_RESULTS_ROOT`: the job's
    working directory is deleted after the job, and with it whatever it holds.
    """
    path = Path(path).expanduser()
    if not path.is_absolute() and in_ray_job():
        path = Path(JOB_RESULTS_ROOT).expanduser() / path
    return path.resolve()


def storage_location(path: str) -> str:
    """``--storage-path``: a URI (``s3://``, ``gs://``) unchanged, else an absolute local path (:func:`local_path`)."""
    from rllib_safe.studies.experiment import is_uri

    return str(path) if is_uri(path) else str(local_path(path))


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    import yaml

    overrides = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--config expects KEY=VALUE pairs, got {pair!r}.")
        key, value = pair.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def apply_overrides(config, pairs: list[str]):
    """Sets ``--config KEY=VALUE`` pairs on an AlgorithmConfig (raises ValueError for an unknown key)."""
    for key, value in _parse_overrides(pairs).items():
        if not hasattr(config, key):
            raise ValueError(f"Unknown config key {key!r} for {type(config).__name__}.")
        setattr(config, key, value)
    return config


def build_config(args: argparse.Namespace):
    """The AlgorithmConfig of a ``train`` call (validated; raises ValueError naming the bad field)."""
    from rllib_safe.algorithms.registry import get_config

    config = get_config(args.algo)
    config.environment(args.env, env_config=_parse_overrides(args.env_config))
    runners = {"num_env_runners": args.num_env_runners, "num_envs_per_env_runner": args.num_envs_per_env_runner}
    config.env_runners(**{k: v for k, v in runners.items() if v is not None})  # None: the algorithm's default
    config.learners(num_learners=args.num_learners, num_gpus_per_learner=args.num_gpus_per_learner)
    config.debugging(seed=args.seed)
    if args.batch_size is not None:
        config.training(train_batch_size_per_learner=args.batch_size)
    if args.cost_limit is not None:
        config.training(cost_limit=args.cost_limit)
    apply_overrides(config, args.config)
    config.validate()
    return config


def _results_dir(args: argparse.Namespace, algo: str, env: str) -> tuple[str, str]:
    """The storage path and experiment name of a train run.

    ``--output`` (default results/<algo>_<env>_<time>); its last part is placed under ``--storage-path`` when given.
    Inside a Ray job a relative ``--output`` is placed under :data:`JOB_RESULTS_ROOT` (:func:`local_path`), and the
    default is ``JOB_RESULTS_ROOT/<algo>_<env>_<time>``.
    """
    from rllib_safe.studies.experiment import is_uri

    stamp = time.strftime("%Y%m%d_%H%M%S")
    output = args.output or f"{'' if in_ray_job() else 'results/'}{algo}_{env}_{stamp}".replace("|", "-")
    if args.storage_path:
        return storage_location(args.storage_path), Path(output).name
    if is_uri(output):
        base, _, name = output.rstrip("/").rpartition("/")
        return base, name
    path = local_path(output)
    return str(path.parent), path.name


def train(args: argparse.Namespace) -> int:
    """Runs ``rllib-safe train``: a one-trial Tune experiment with our progress lines as its reporter."""
    import rllib_safe
    from rllib_safe.algorithms.registry import canonical_name
    from rllib_safe.callbacks import team_cost_limit
    from rllib_safe.studies.checkpoint import read_checkpoint
    from rllib_safe.studies.experiment import (
        Experiment,
        init_ray,
        prepare_wandb,
        report_errors,
        run_experiment,
        trial_cpus,
    )
    from rllib_safe.studies.score import DEFAULT_PENALTY, add_safe_score

    rllib_safe.register()
    start_iteration = 0
    if args.restore:
        info = read_checkpoint(args.restore)
        config, args.algo, start_iteration = info.config, canonical_name(info.algorithm), info.iteration
        # Placement may differ on the cluster that resumes (e.g. custom_resources_per_env_runner of a lost node).
        apply_overrides(config, args.config).validate()
    else:
        args.algo = canonical_name(args.algo)
        config = build_config(args)  # validates before any Ray actor starts
    config.callbacks(on_train_result=functools.partial(add_safe_score, penalty=DEFAULT_PENALTY))
    from rllib_safe.algorithms.sequential.sequential import probe_env

    agent_ids = list(probe_env(config).agent_ids)
    cost_limit = team_cost_limit(config)
    storage, name = _results_dir(args, args.algo, str(config.env))
    stop: dict[str, Any] = {}
    if args.stop_iters:
        stop["training_iteration"] = start_iteration + args.stop_iters
    if args.stop_timesteps:
        stop["env_runners/num_env_steps_sampled_lifetime"] = args.stop_timesteps
    experiment = Experiment(
        algorithm=args.algo,
        param_space=config.to_dict(),
        storage_path=storage,
        name=name,
        stop=stop,
        checkpoint_every=args.checkpoint_every,
        trial_dirname=TRAIN_TRIAL_DIR,
        restore_from=str(info.path) if args.restore else None,
    )
    min_cpus = trial_cpus(args.algo, config)
    if args.wandb_project:
        prepare_wandb()
    started = init_ray(args.address, num_cpus=args.num_cpus, min_cpus=min_cpus, verbose=args.verbose)
    try:
        _print_cluster(args.address)
        print(
            f"rllib-safe: {args.algo} on {config.env} | agents {agent_ids} | cost limit {cost_limit:g} "
            f"| results -> {experiment.path}",
            flush=True,
        )
        if in_ray_job() and not args.storage_path:
            print(
                f"rllib-safe: in a Ray job, relative paths go under {JOB_RESULTS_ROOT} (the job's working directory "
                "is deleted when it ends); on several nodes give --storage-path, a place every node reaches",
                flush=True,
            )
        results = run_experiment(
            experiment, resume=args.resume, wandb_project=args.wandb_project, prefix_trials=False, verbose=args.verbose
        )
        if report_errors(results):
            return 1
        result = results[0]
        rows = result.metrics or {}
        steps = (rows.get("env_runners") or {}).get("num_env_steps_sampled_lifetime", 0)
        print(f"done: {rows.get('training_iteration', 0)} iterations, {int(steps or 0)} env steps.")
        print(f"results: {result.path}/progress.jsonl (JSON lines), {result.path} (TensorBoard, Tune's result.json)")
        if result.checkpoint is not None:
            ckpt = result.checkpoint.path
            print(f"checkpoint: {ckpt}  (resume: rllib-safe train --restore {ckpt})")
    finally:
        _shutdown(started, args.verbose)
    return 0


def _print_cluster(address: str | None) -> None:
    """Prints the running cluster this run joined: its GCS address, nodes and resources (one line).

    Only with ``--address`` or ``RAY_ADDRESS`` (inside a ``ray job``); nothing for a local Ray this run started.
    """
    import ray

    if not (address or os.environ.get("RAY_ADDRESS")):
        return

    nodes = [n for n in ray.nodes() if n["Alive"]]
    total = ray.cluster_resources()
    print(
        f"rllib-safe: Ray cluster {ray.get_runtime_context().gcs_address}: {len(nodes)} node(s), "
        f"{total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs",
        flush=True,
    )


def _shutdown(started: bool, verbose: bool) -> None:
    import ray

    from rllib_safe.studies import quiet

    quiet.after_run(verbose)
    if started:
        ray.shutdown()


def sweep(args: argparse.Namespace) -> int:
    """Runs ``rllib-safe sweep FILE``: every experiment of a sweep file with Tune."""
    import rllib_safe
    from rllib_safe.studies.experiment import (
        Experiment,
        init_ray,
        prepare_wandb,
        report_errors,
        run_experiment,
        trial_cpus,
    )
    from rllib_safe.studies.spec import base_config, build_scheduler, load_sweep, param_space

    rllib_safe.register()
    spec = load_sweep(args.file)  # checks every key and value before Ray starts
    if args.only:
        known = [e.name for e in spec.experiments]
        unknown = [name for name in args.only if name not in known]
        if unknown:
            raise ValueError(f"--only: no experiment {unknown[0]!r} in {args.file}; it has {', '.join(known)}.")
        spec.experiments = [e for e in spec.experiments if e.name in args.only]
    default = "." if in_ray_job() else "results"  # in a job: JOB_RESULTS_ROOT/<sweep name>
    storage = f"{storage_location(args.storage_path or default).rstrip('/')}/{spec.name}"
    experiments = []
    for exp in spec.experiments:
        scheduler, metric, mode = build_scheduler(exp)
        experiments.append(
            Experiment(
                algorithm=exp.algorithm,
                param_space=param_space(exp),
                storage_path=storage,
                name=exp.name,
                stop=exp.stop,
                checkpoint_every=exp.checkpoint_every,
                keep_checkpoints=exp.keep_checkpoints,
                num_samples=exp.num_samples,
                scheduler=scheduler,
                metric=metric,
                mode=mode,
                max_failures=exp.max_failures,
            )
        )
    min_cpus = max(trial_cpus(e.algorithm, base_config(e)) for e in spec.experiments)
    if args.wandb_project:
        prepare_wandb()
    started = init_ray(args.address, num_cpus=args.num_cpus, min_cpus=min_cpus, verbose=args.verbose)
    failed = 0
    try:
        _print_cluster(args.address)
        total = sum(e.num_trials for e in spec.experiments)
        print(
            f"rllib-safe: sweep {spec.name} ({args.file}) | {len(experiments)} experiment(s), {total} trial(s) "
            f"| results -> {storage}",
            flush=True,
        )
        for exp in experiments:
            resume = args.resume and _can_restore(exp.path)
            results = run_experiment(
                exp,
                resume=resume,
                max_concurrent=args.max_concurrent,
                wandb_project=args.wandb_project,
                wandb_group=spec.name,
                verbose=args.verbose,
            )
            failed += report_errors(results)
        print(f"done: results in {storage}")
        print(f"table: rllib-safe table {storage}")
        print(f"plot:  rllib-safe plot {storage} --out {spec.name}.png")
    finally:
        _shutdown(started, args.verbose)
    return 1 if failed else 0


def _can_restore(path: str) -> bool:
    from ray import tune

    return tune.Tuner.can_restore(path)


def table(args: argparse.Namespace) -> int:
    """Runs ``rllib-safe table RUN_DIR...``."""
    from rllib_safe.studies.results import load_trials
    from rllib_safe.studies.table import markdown, summarize, to_csv

    groups = summarize(load_trials(args.run_dirs), last_k=args.last)
    baseline = None if args.normalize_by.lower() == "none" else args.normalize_by
    text = markdown(groups, last_k=args.last, baseline=baseline)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.csv:
        Path(args.csv).write_text(to_csv(groups, baseline=baseline))
        print(f"CSV: {args.csv}")
    return 0


def plot(args: argparse.Namespace) -> int:
    """Runs ``rllib-safe plot RUN_DIR... --out FILE``."""
    from rllib_safe.studies.plot import make_figure, save_figure
    from rllib_safe.studies.results import load_trials

    paths = save_figure(make_figure(load_trials(args.run_dirs), title=args.title), args.out)
    print("plot: " + ", ".join(str(p) for p in paths))
    return 0


def evaluate_checkpoint(args: argparse.Namespace) -> int:
    """Runs ``rllib-safe evaluate CHECKPOINT``."""
    from rllib_safe.studies.evaluate import evaluate

    result = evaluate(
        args.checkpoint, episodes=args.episodes, stochastic=args.stochastic, seed=args.seed, video=args.video
    )
    s = result.summary
    mode = "stochastic" if args.stochastic else "deterministic"
    limit = f" / limit {result.cost_limit:g}" if result.cost_limit is not None else ""
    print(f"rllib-safe: {s['episodes']} {mode} episodes of {result.checkpoint}")
    print(
        f"return {s['return_mean']:.2f} ± {s['return_std']:.2f} | cost {s['cost_mean']:.2f}{limit} "
        f"| cost p90 {s['episode_cost_p90']:.2f} | cost CVaR 10 % {s['episode_cost_cvar10']:.2f}"
        + (f" | over the limit {100 * s['episode_cost_over_limit_frac']:.0f} %" if limit else "")
        + f" | length {s['length_mean']:.0f}"
    )
    for i, (r, c) in enumerate(zip(result.returns, result.costs)):
        print(f"episode {i}: return {r:.2f} cost {c:.2f}")
    if args.video:
        print(f"video: {args.video} (episode 0)")
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


def _cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="connect to this running Ray cluster (default: RAY_ADDRESS, as Ray sets it inside a job; "
        "without either, a local Ray is started)",
    )
    p.add_argument(
        "--storage-path",
        default=None,
        help="results root: a shared directory, or s3:// gs:// URIs (relative paths in a Ray job: under "
        f"{JOB_RESULTS_ROOT})",
    )
    p.add_argument("--wandb-project", default=None, help="log to Weights & Biases (offline without an API key)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (default: all)")
    p.add_argument("--verbose", action="store_true", help="show third-party notices and Tune's own table")


def make_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rllib-safe``."""
    parser = argparse.ArgumentParser(prog="rllib-safe", description="Safe multi-agent RL on Ray RLlib.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an algorithm on a task (a one-trial Tune experiment)")
    p.add_argument("--algo", default=DEFAULT_ALGO, help=f"algorithm name (default {DEFAULT_ALGO}; see `algos`)")
    p.add_argument("--env", default=DEFAULT_ENV, help=f"task name (default {DEFAULT_ENV}; see `tasks`)")
    p.add_argument("--stop-timesteps", type=int, default=20_000, help="stop after this many env steps")
    p.add_argument("--stop-iters", type=int, default=0, help="stop after this many iterations (0: no limit)")
    p.add_argument("--num-env-runners", type=int, default=None, help="sampling processes (default: the algorithm's, 2)")
    p.add_argument(
        "--num-envs-per-env-runner",
        type=int,
        default=None,
        help="vectorised envs per EnvRunner (default: the algorithm's; on-policy 5)",
    )
    p.add_argument("--num-learners", type=int, default=0, help="0: learn in the trial's own process")
    p.add_argument("--num-gpus-per-learner", type=float, default=0, help="GPUs per Learner (default 0)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="train_batch_size_per_learner: env steps per iteration of the on-policy algorithms (their default 10,000)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cost-limit", type=float, default=None, help="limit on the episode cost (default: the task's)")
    p.add_argument(
        "--output",
        default=None,
        help="results folder (default results/<algo>_<env>_<time>; in a Ray job "
        f"{JOB_RESULTS_ROOT}/<algo>_<env>_<time>)",
    )
    p.add_argument("--checkpoint-every", type=int, default=0, help="checkpoint every N iterations (0: only at the end)")
    p.add_argument("--restore", default=None, help="start from a checkpoint folder (continues its iterations)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --output (Tune resume)")
    p.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE", help="algorithm config overrides")
    p.add_argument("--env-config", nargs="*", default=[], metavar="KEY=VALUE", help="task options")
    _cluster_options(p)
    p.set_defaults(func=train)

    p = sub.add_parser("sweep", help="run a Tune sweep from a YAML file (tune_configs/)")
    p.add_argument("file", help="sweep file, e.g. tune_configs/smoke.yaml")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep; finished trials are kept")
    p.add_argument("--max-concurrent", type=int, default=None, help="at most N trials at once")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run only these experiments of the file")
    _cluster_options(p)
    p.set_defaults(func=sweep)

    p = sub.add_parser("table", help="final return and cost (median, IQR over seeds) in the papers' layout")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="train/sweep results (trial dirs are found below)")
    p.add_argument("--last", type=int, default=10, help="window: mean of each seed's last K iterations (default 10)")
    p.add_argument("--normalize-by", default="HAPPO", help="baseline of the normalised table (default HAPPO; none)")
    p.add_argument("--csv", default=None, help="also write the table as CSV")
    p.add_argument("--markdown", default=None, help="also write the Markdown to a file")
    p.set_defaults(func=table)

    p = sub.add_parser("plot", help="return and cost curves (median, 25-75 %% band over seeds) per task")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, help="output file; both FILE.png and FILE.svg are written")
    p.add_argument("--title", default=None)
    p.set_defaults(func=plot)

    p = sub.add_parser("evaluate", help="episodes of a trained team: return, cost, cost tail, video")
    p.add_argument("checkpoint", help="a checkpoint folder (checkpoint_*), or a trial folder: its newest checkpoint")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--stochastic", action="store_true", help="sample actions (default: the mean action)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first reset")
    p.add_argument("--video", default=None, help="write episode 0 as FILE.mp4 (MuJoCo offscreen, MUJOCO_GL=egl)")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=evaluate_checkpoint)

    sub.add_parser("tasks", help="list the task names").set_defaults(func=list_tasks)
    sub.add_parser("algos", help="list the algorithm names").set_defaults(func=list_algos)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rllib-safe`` console script."""
    args = make_parser().parse_args(argv)
    if args.command in ("train", "sweep", "evaluate"):
        from rllib_safe.studies import quiet

        quiet.before_ray(getattr(args, "verbose", False))
    try:
        return args.func(args)
    except ValueError as e:  # bad input: one line (the traceback too with --verbose)
        if getattr(args, "verbose", False):
            traceback.print_exc()
        print(f"rllib-safe: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rllib-safe: interrupted (resume with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
