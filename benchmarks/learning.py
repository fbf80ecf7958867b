r"""Learning benchmark: return and cost against env steps over several seeds, side by side with a reference run.

Trains one algorithm on one task for each seed in this process (``config.build_algo()``, a local Ray with
``--num-cpus`` CPUs, seeds one after another unless ``--jobs`` > 1), writes one JSON line per iteration to
``<out>/seed_<k>.jsonl`` and prints a Markdown table against a reference: a SafePO progress file (columns
``Train/TotalSteps``, ``Metrics/EpRet``, ``Metrics/EpCost``) or another study directory of this script. The
rollout is the algorithm's default unless ``--config`` overrides it (on-policy family: 10,000 env steps per
iteration from 2 EnvRunners x 5 envs).

Learning curves are indexed by **env steps** (``num_env_steps_sampled_lifetime``), never by wall time or
iterations, so the comparison does not depend on the machine or its load; wall time is recorded but not compared.

How to run the comparison of issue 13 (MAPPO-Lagrangian against SafePO's MAPPO-L on Safety2x4AntVelocity-v0)::

    python benchmarks/learning.py --algo MAPPOLagrangian --env Safety2x4AntVelocity-v0 --seeds 0 1 2 \
        --timesteps 1000000 --out results/learning/mappolag_ant2x4vel \
        --reference /work/shared/anchors/safepo_mappolag_ant2x4vel_seed0_1M_progress.csv \
        --plot results/learning/mappolag_ant2x4vel.png
    # another setting, compared with the first one by the same rule:
    python benchmarks/learning.py ... --config init_log_std=-1.0 --out results/learning/mappolag_std037 \
        --reference results/learning/mappolag_ant2x4vel
    # one figure with several studies (e.g. three algorithms on one task), without training:
    python benchmarks/learning.py --out results/learning/mafocops_walls --report-only \
        --reference results/learning/macpo_walls --also results/learning/mappolag_walls --plot walls.png
    # the table again (also while a study runs), without training:
    python benchmarks/learning.py --out results/learning/mappolag_ant2x4vel --report-only \
        --reference /work/shared/anchors/safepo_mappolag_ant2x4vel_seed0_1M_progress.csv

A study is resumable: a seed whose file already reaches ``--timesteps`` is skipped; a seed file that stops short
(an interrupted run) is trained again from the start (no checkpoint is kept), so rerunning the same command
continues an interrupted study.

**The rule of the table** (identical for our seeds and the reference):

* *return*: the team episode return, i.e. the mean over agents of each agent's episode return (RLlib's
  ``agent_episode_returns_mean``; every agent receives the team reward, so this is the team reward once, as
  SafePO's ``Metrics/EpRet``; RLlib's ``episode_return_mean`` sums over agents and is n times larger);
  *cost*: ``env_runners/episode_cost_mean`` of rllib_safe's callback, the team cost once (SafePO's
  ``Metrics/EpCost`` is the mean over agents too). Both are RLlib's windows over the last 100 episodes.
* *value of one seed at checkpoint c* (c = every, 2·every, …, up to ``--timesteps``): the mean of that seed's
  iteration values whose env steps lie in ``(c − every/2, c + every/2]``; "—" when no iteration lies there.
* *over seeds*: the median and [min, max] of the seeds' values (seeds without a value are left out; the cell says
  how many seeds there are when fewer than all).
* *last 10 % of the run*: each seed's mean over its iterations whose env steps exceed 0.9·T, T the seed's last env
  steps; then the median and [min, max] over seeds.
* *verdict*: ``return ≥ ref`` compares our median with the reference's median; ``cost ≤ limit`` compares our median
  cost with the team cost limit of the task and config.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Study description file inside ``--out``.
STUDY_FILE = "study.json"
#: SafePO progress columns: env steps, episode return, episode cost.
SAFEPO_COLUMNS = ("Train/TotalSteps", "Metrics/EpRet", "Metrics/EpCost")
#: Row keys of a seed file used by the report.
RETURN_KEY, COST_KEY = "team_return_mean", "episode_cost_mean"
#: Fraction of a run that the "last 10 %" row averages over.
LAST_FRACTION = 0.1
#: Settings that must agree between a rerun and the study files it continues.
SAME_SETTINGS = ("algo", "env", "config", "env_config")


# ---------------------------------------------------------------------------------------------------- report maths
@dataclass
class Series:
    """One run's learning curve: env steps and the return and cost at those steps (NaN where a value is missing)."""

    steps: np.ndarray
    ret: np.ndarray
    cost: np.ndarray

    def values(self, key: str) -> np.ndarray:
        """The return (``"return"``) or cost (``"cost"``) values."""
        return {"return": self.ret, "cost": self.cost}[key]


def _float(value: Any) -> float:
    return float("nan") if value is None or value == "" else float(value)


def series_from_rows(rows: list[dict]) -> Series:
    """The curve of a seed file's rows (``env_steps``, :data:`RETURN_KEY`, :data:`COST_KEY`)."""
    rows = [r for r in rows if r.get("env_steps") is not None]
    return Series(
        np.array([float(r["env_steps"]) for r in rows]),
        np.array([_float(r.get(RETURN_KEY)) for r in rows]),
        np.array([_float(r.get(COST_KEY)) for r in rows]),
    )


def read_seed_file(path: str | Path) -> list[dict]:
    """The rows of one ``seed_<k>.jsonl`` (a truncated last line, from an interrupted run, is ignored)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def read_safepo_csv(path: str | Path) -> Series:
    """The curve of a SafePO progress file (:data:`SAFEPO_COLUMNS`)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in SAFEPO_COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise ValueError(f"{path}: not a SafePO progress file (needs columns {', '.join(SAFEPO_COLUMNS)}).")
    steps, ret, cost = (np.array([_float(r[c]) for r in rows]) for c in SAFEPO_COLUMNS)
    return Series(steps, ret, cost)


def seed_files(out: str | Path) -> dict[int, Path]:
    """The seed files of a study directory, by seed."""
    return {int(p.stem.split("_", 1)[1]): p for p in sorted(Path(out).glob("seed_*.jsonl"))}


def read_study(out: str | Path) -> dict[int, Series]:
    """The curves of a study directory, by seed (raises ValueError when it has no seed file)."""
    files = seed_files(out)
    if not files:
        raise ValueError(f"{out}: no seed_<k>.jsonl files (not a study directory of benchmarks/learning.py).")
    return {seed: series_from_rows(read_seed_file(p)) for seed, p in files.items()}


def read_reference(path: str | Path) -> list[Series]:
    """A reference: a SafePO progress CSV (one run) or a study directory of this script (one run per seed)."""
    path = Path(path)
    if path.is_dir():
        return list(read_study(path).values())
    if path.suffix == ".csv":
        return [read_safepo_csv(path)]
    raise ValueError(f"--reference {path}: expected a SafePO progress .csv file or a study directory.")


def window_mean(series: Series, key: str, checkpoint: float, every: float) -> float:
    """Mean of one run's ``key`` values whose env steps lie in ``(checkpoint − every/2, checkpoint + every/2]``.

    Returns NaN when no finite value lies in the window.
    """
    values = series.values(key)
    inside = (series.steps > checkpoint - every / 2) & (series.steps <= checkpoint + every / 2) & np.isfinite(values)
    return float(values[inside].mean()) if inside.any() else float("nan")


def last_fraction_mean(series: Series, key: str, fraction: float = LAST_FRACTION) -> float:
    """Mean of one run's ``key`` values over its last ``fraction`` of env steps (steps > (1 − fraction)·T).

    T is the run's last env steps. Returns NaN when no finite value lies there.
    """
    if series.steps.size == 0:
        return float("nan")
    values = series.values(key)
    inside = (series.steps > (1 - fraction) * series.steps.max()) & np.isfinite(values)
    return float(values[inside].mean()) if inside.any() else float("nan")


@dataclass
class Spread:
    """Median, min and max over seeds of one value (NaN for all when no seed has it); n: the seeds that have it."""

    median: float
    low: float
    high: float
    n: int


def spread(values: list[float]) -> Spread:
    """Median and [min, max] of the finite values (the seeds' values at one checkpoint)."""
    finite = np.array([v for v in values if np.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return Spread(float("nan"), float("nan"), float("nan"), 0)
    return Spread(float(np.median(finite)), float(finite.min()), float(finite.max()), int(finite.size))


def checkpoints(every: float, until: float) -> list[float]:
    """``every, 2·every, …`` up to ``until`` (included)."""
    return [every * k for k in range(1, int(math.floor(until / every + 1e-9)) + 1)]


def _cell(s: Spread, runs: int, digits: int) -> str:
    if s.n == 0:
        return "—"
    text = f"{s.median:.{digits}f}" if s.n == 1 else f"{s.median:.{digits}f} [{s.low:.{digits}f}, {s.high:.{digits}f}]"
    return text if s.n == runs or runs == 1 else f"{text} ({s.n}/{runs})"


def _steps_label(steps: float) -> str:
    return f"{steps / 1e6:g} M" if steps >= 1e6 else f"{steps / 1e3:g}k"


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "no")


def report_rows(
    ours: list[Series], reference: list[Series], every: float, until: float
) -> list[tuple[str, Spread, Spread, Spread, Spread]]:
    """(label, our return, reference return, our cost, reference cost) per checkpoint and for the last 10 %."""

    def cells(value_of) -> list[Spread]:
        return [spread([value_of(s, key) for s in runs]) for key in ("return", "cost") for runs in (ours, reference)]

    rows = [
        (_steps_label(c), *cells(lambda s, key, c=c: window_mean(s, key, c, every))) for c in checkpoints(every, until)
    ]
    last = cells(last_fraction_mean)
    rows.append((f"last {LAST_FRACTION:.0%} of the run", *last))
    return rows


def markdown_report(
    ours: list[Series],
    reference: list[Series],
    *,
    every: float,
    until: float,
    cost_limit: float | None,
    ours_label: str = "ours",
    reference_label: str = "reference",
) -> str:
    """The Markdown table of a study against a reference (module docstring: the rule)."""
    limit = "?" if cost_limit is None else f"{cost_limit:g}"
    lines = [
        f"| env steps | {ours_label} return | {reference_label} return | {ours_label} cost | {reference_label} cost "
        f"| return ≥ ref | cost ≤ limit ({limit}) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r_ours, r_ref, c_ours, c_ref in report_rows(ours, reference, every, until):
        better = None if r_ours.n == 0 or r_ref.n == 0 else r_ours.median >= r_ref.median
        safe = None if c_ours.n == 0 or cost_limit is None else c_ours.median <= cost_limit
        lines.append(
            f"| {label} | {_cell(r_ours, len(ours), 1)} | {_cell(r_ref, len(reference), 1)} "
            f"| {_cell(c_ours, len(ours), 2)} | {_cell(c_ref, len(reference), 2)} "
            f"| {_verdict(better)} | {_verdict(safe)} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- training
def _parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    from rllib_safe.cli import _parse_overrides as parse

    return parse(pairs or [])


def build_config(algo: str, env: str, config: dict, env_config: dict, seed: int):
    """The validated AlgorithmConfig of one seed (ValueError naming an unknown key, before any Ray actor starts)."""
    from rllib_safe.algorithms.registry import get_config

    cfg = get_config(algo).environment(env, env_config=env_config).debugging(seed=seed)
    for key, value in config.items():
        if not hasattr(cfg, key):
            raise ValueError(f"Unknown config key {key!r} for {type(cfg).__name__}.")
        setattr(cfg, key, value)
    cfg.validate()
    return cfg


def iteration_row(result: dict, agent_ids: list[str], num_costs: int, wall_s: float) -> dict[str, Any]:
    """One seed-file line: rllib_safe's progress row (with the team return), the exact iteration J_c and wall time."""
    from rllib_safe.callbacks import mean_episode_costs
    from rllib_safe.studies.progress import flatten_result

    row = flatten_result(result)  # RETURN_KEY: rllib_safe.callbacks.team_return_mean
    env = result.get("env_runners", {}) or {}
    exact = mean_episode_costs(env, agent_ids, num_costs)
    if agent_ids and agent_ids[0] in exact:
        row["episode_cost_iter"] = float(exact[agent_ids[0]].sum())
    row["wall_s"] = wall_s
    return row


def run_seed(study: dict, seed: int, out: Path, num_cpus: int, verbose: bool) -> Path:
    """Trains one seed until ``num_env_steps_sampled_lifetime`` ≥ the study's timesteps; one line per iteration."""
    import ray

    import rllib_safe
    from rllib_safe.algorithms.sequential.sequential import probe_env

    rllib_safe.register()
    config = build_config(study["algo"], study["env"], study["config"], study["env_config"], seed)
    info = probe_env(config)
    path = out / f"seed_{seed}.jsonl"
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=verbose)
    algo = None
    try:
        rllib_safe.register()  # Tune's registry lives in the running cluster
        algo = config.build_algo()
        start, steps = time.perf_counter(), 0
        with open(path, "w") as f:
            while steps < study["timesteps"]:
                result = algo.train()
                row = iteration_row(result, list(info.agent_ids), info.num_costs, time.perf_counter() - start)
                row["seed"] = seed
                steps = int(row.get("env_steps") or 0)
                f.write(json.dumps(row) + "\n")
                f.flush()
                ret, cost = row.get(RETURN_KEY), row.get(COST_KEY)
                print(
                    f"seed {seed} | iter {row['iteration']:4d} | steps {steps:9d} | return "
                    f"{'—' if ret is None else f'{ret:.1f}'} | cost {'—' if cost is None else f'{cost:.2f}'} "
                    f"| {row['wall_s']:.0f} s",
                    flush=True,
                )
    finally:
        if algo is not None:
            algo.stop()
        ray.shutdown()
    return path


def _seed_done(path: Path, timesteps: int) -> bool:
    rows = read_seed_file(path) if path.exists() else []
    return bool(rows) and (rows[-1].get("env_steps") or 0) >= timesteps


def prepare_study(args: argparse.Namespace) -> dict:
    """Checks the settings (before Ray starts), writes ``study.json`` and refuses to mix settings in one directory."""
    import rllib_safe
    from rllib_safe.algorithms.registry import canonical_name
    from rllib_safe.callbacks import team_cost_limit

    rllib_safe.register()
    study = {
        "algo": canonical_name(args.algo),
        "env": args.env,
        "config": _parse_overrides(args.config),
        "env_config": _parse_overrides(args.env_config),
    }
    config = build_config(study["algo"], study["env"], study["config"], study["env_config"], seed=0)
    study.update(timesteps=args.timesteps, cost_limit=team_cost_limit(config))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    previous = out / STUDY_FILE
    if previous.exists():
        old = json.loads(previous.read_text())
        differ = [k for k in SAME_SETTINGS if old.get(k) != study[k]]
        if differ:
            raise ValueError(
                f"{out} holds a study with other settings ({', '.join(f'{k}: {old.get(k)!r}' for k in differ)}); "
                "use another --out."
            )
        study["seeds"] = sorted(set(old.get("seeds", [])) | set(args.seeds))
    else:
        study["seeds"] = sorted(args.seeds)
    previous.write_text(json.dumps(study, indent=1) + "\n")
    return study


def train(args: argparse.Namespace, study: dict) -> None:
    """Runs the seeds that have not reached the timesteps yet (in turn, or ``--jobs`` processes at a time)."""
    out = Path(args.out)
    todo = []
    for seed in args.seeds:
        if _seed_done(out / f"seed_{seed}.jsonl", study["timesteps"]):
            print(f"seed {seed}: {out}/seed_{seed}.jsonl already reaches {study['timesteps']} env steps, skipped.")
        else:
            todo.append(seed)
    if args.jobs <= 1:
        for seed in todo:
            run_seed(study, seed, out, args.num_cpus, args.verbose)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in [pool.submit(run_seed, study, s, out, args.num_cpus, args.verbose) for s in todo]:
            future.result()


# ---------------------------------------------------------------------------------------------------- report, plot
def _label(path: str | Path) -> str:
    path = Path(path)
    study = path / STUDY_FILE
    if path.is_dir() and study.exists():
        s = json.loads(study.read_text())
        extra = " ".join(f"{k}={v}" for k, v in s.get("config", {}).items())
        return f"{s['algo']} {extra}".strip() + f" ({path.name})"
    return path.name


def report(args: argparse.Namespace) -> str:
    """The printed report of ``--out`` against ``--reference``."""
    out = Path(args.out)
    study = json.loads((out / STUDY_FILE).read_text()) if (out / STUDY_FILE).exists() else {}
    ours = read_study(out)
    reference = read_reference(args.reference) if args.reference else []
    until = study.get("timesteps") or max(float(s.steps.max()) for s in ours.values() if s.steps.size)
    reached = ", ".join(f"seed {k}: {int(s.steps.max()) if s.steps.size else 0}" for k, s in ours.items())
    head = [
        f"{study.get('algo', '?')} on {study.get('env', '?')} | config {study.get('config', {})} "
        f"env_config {study.get('env_config', {})} | {len(ours)} seeds ({reached} env steps) "
        f"| cost limit {study.get('cost_limit')}",
        f"reference: {args.reference or 'none'} ({len(reference)} run{'s' if len(reference) != 1 else ''})",
        f"rule: a run's value at checkpoint c = mean of its iterations with env steps in (c − {args.every / 2:g}, "
        f"c + {args.every / 2:g}]; last {LAST_FRACTION:.0%} = mean over env steps > {1 - LAST_FRACTION:g}·(its last "
        "env steps); cells: median [min, max] over seeds; return = team return (mean over agents), cost = team cost.",
        "",
    ]
    table = markdown_report(
        list(ours.values()),
        reference,
        every=args.every,
        until=until,
        cost_limit=study.get("cost_limit"),
        reference_label="ref",
    )
    return "\n".join(head) + table


def band(runs: list[Series], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Median, min and max over runs of one curve.

    The runs are put on the union of their env steps within the range all of them cover (linear interpolation between
    a run's own iterations).
    """
    curves = []
    for s in runs:
        values = s.values(key)
        ok = np.isfinite(values)
        if ok.any():
            curves.append((s.steps[ok], values[ok]))
    if not curves:
        return (np.empty(0),) * 4
    lo, hi = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    grid = np.unique(np.concatenate([x[(x >= lo) & (x <= hi)] for x, _ in curves]))
    stacked = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, np.median(stacked, axis=0), stacked.min(axis=0), stacked.max(axis=0)


def plot(args: argparse.Namespace, path: str | Path) -> Path:
    """Return and cost against env steps: median and min–max band over seeds, reference dashed, cost limit line.

    ``args.also``: further study directories drawn in the same figure like ``--out`` (e.g. the three algorithms of
    one task).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    study = json.loads((out / STUDY_FILE).read_text()) if (out / STUDY_FILE).exists() else {}
    ours = list(read_study(out).values())
    reference = read_reference(args.reference) if args.reference else []
    curves = [
        (ours, f"{_label(out)}, {len(ours)} seeds", "-", "C0"),
        (reference, f"reference: {_label(args.reference)}" if args.reference else "", "--", "C1"),
    ]
    for k, other in enumerate(args.also):
        runs = list(read_study(other).values())
        curves.append((runs, f"{_label(other)}, {len(runs)} seeds", "-", f"C{k + 2}"))
    fig, axes = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    for ax, key, name in zip(axes, ("return", "cost"), ("episode return (team)", "episode cost (team)"), strict=True):
        for runs, label, style, color in curves:
            grid, median, low, high = band(runs, key)
            if grid.size:
                ax.plot(grid, median, style, color=color, label=label)
                if len(runs) > 1:
                    ax.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0)
        if key == "cost" and study.get("cost_limit") is not None:
            ax.axhline(study["cost_limit"], color="k", linestyle=":", label=f"cost limit {study['cost_limit']:g}")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[-1].set_xlabel("env steps")
    axes[0].set_title(f"{study.get('algo', '?')} on {study.get('env', '?')}\nmedian and min–max over seeds")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="MAPPOLagrangian")
    parser.add_argument("--env", default="Safety2x4AntVelocity-v0")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=1_000_000, help="env steps per seed")
    parser.add_argument("--out", required=True, help="study directory (seed_<k>.jsonl, study.json)")
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (YAML values)")
    parser.add_argument("--env-config", nargs="*", default=[], metavar="KEY=VALUE", help="task options (YAML values)")
    parser.add_argument("--reference", help="SafePO progress .csv or another study directory of this script")
    parser.add_argument("--every", type=float, default=100_000, help="checkpoint spacing in env steps")
    parser.add_argument("--plot", help="also draw the curves into this image file")
    parser.add_argument("--also", nargs="*", default=[], metavar="DIR", help="more study directories for the plot")
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at the same time (processes)")
    parser.add_argument("--num-cpus", type=int, default=2, help="logical CPUs of each seed's local Ray")
    parser.add_argument("--report-only", action="store_true", help="print the table from the seed files; no training")
    parser.add_argument("--verbose", action="store_true", help="show the Ray workers' logs")
    args = parser.parse_args(argv)
    if args.every <= 0:
        parser.error("--every must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        if not args.report_only:
            train(args, prepare_study(args))
        print(report(args))
        if args.plot:
            print(f"plot: {plot(args, args.plot)}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
