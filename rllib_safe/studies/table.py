"""Tables in the papers' layout: final return and cost per algorithm × setting × task, median and IQR over seeds.

The final value of one seed (trial) is the mean of a progress value over its last ``k`` iterations (default
:data:`DEFAULT_LAST_K`; iterations without the value, e.g. no episode ended, are skipped). Over the seeds of one
(algorithm, setting, task) the table gives the median and the interquartile range [25 %, 75 %] (numpy's linear
interpolation), for the return, the cost and the tail-safety metrics. The return is the team return
(``team_return_mean`` of :mod:`rllib_safe.studies.progress`: the team reward once, as SafePO's ``Metrics/EpRet``); a
trial from before it was logged gets it from its rows' ``episode_return_mean`` (:mod:`rllib_safe.studies.results`).

The normalised table is the layout of seed 000's Tables 3–4: one row per setting (e.g. λ), for each task the median
return and the median cost divided by those of the baseline (HAPPO in the paper) on the same task, and the "All envs"
pair, the mean of the normalised values over the tasks (the paper's last column pair; its caption calls it the
averaged performance across the scenarios), three decimals.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

import numpy as np

from rllib_safe.studies.results import Trial

#: Default window: the last 10 iterations of every seed.
DEFAULT_LAST_K = 10
#: Table metric -> progress row key (see rllib_safe.studies.progress).
METRICS: dict[str, str] = {
    "return": "team_return_mean",
    "cost": "episode_cost_mean",
    "cost_p90": "episode_cost_p90",
    "cost_cvar10": "episode_cost_cvar10",
    "over_limit_frac": "episode_cost_over_limit_frac",
    "cost_rate": "cost_rate",
}
ALL_ENVS = "all envs"


def final_value(rows: list[dict], key: str, last_k: int = DEFAULT_LAST_K) -> float | None:
    """Mean of ``key`` over the last ``last_k`` iterations that have it (None if none has)."""
    values = [r[key] for r in rows if r.get(key) is not None][-last_k:] if rows else []
    return float(np.mean(values)) if values else None


@dataclass
class Stat:
    """Median and interquartile range of one metric over seeds."""

    median: float | None
    q25: float | None
    q75: float | None
    n: int

    @classmethod
    def of(cls, values: list[float | None]) -> Stat:
        """The median and quartiles of the values that exist."""
        present = [v for v in values if v is not None]
        if not present:
            return cls(None, None, None, 0)
        q25, median, q75 = np.percentile(present, [25, 50, 75])
        return cls(float(median), float(q25), float(q75), len(present))


@dataclass
class Group:
    """The seeds of one algorithm × setting × task."""

    algorithm: str
    setting: str
    env: str
    trials: list[Trial] = field(default_factory=list)
    stats: dict[str, Stat] = field(default_factory=dict)

    @property
    def cost_limit(self) -> float | None:
        """The trials' cost limit (the first one's)."""
        return next((t.cost_limit for t in self.trials if t.cost_limit is not None), None)


def summarize(trials: list[Trial], last_k: int = DEFAULT_LAST_K) -> list[Group]:
    """Groups trials by (algorithm, setting, task) and computes each metric's median and IQR over seeds."""
    if last_k < 1:
        raise ValueError(f"--last must be >= 1, got {last_k}.")
    groups: dict[tuple, Group] = {}
    for trial in trials:
        key = (trial.algorithm, trial.setting, trial.env)
        groups.setdefault(key, Group(*key)).trials.append(trial)
    for group in groups.values():
        group.trials.sort(key=lambda t: (t.seed is None, t.seed))
        for name, key in METRICS.items():
            group.stats[name] = Stat.of([final_value(t.rows, key, last_k) for t in group.trials])
    return sorted(groups.values(), key=lambda g: (g.algorithm, g.setting, g.env))


def normalized(groups: list[Group], baseline: str) -> tuple[list[str], dict[tuple[str, str], dict]]:
    """The Tables 3–4 layout: median return and cost over seeds divided by the baseline's, per task and "all envs".

    One row per (algorithm, setting) other than the baseline; per task ``(return / baseline return, cost / baseline
    cost)``; "all envs" is the mean of each ratio over the tasks.

    Returns:
        The tasks (columns, in order) and ``{(algorithm, setting): {task: (return ratio, cost ratio)}}``; a ratio is
        None where the baseline's value is 0 or missing. Empty when the baseline has no trial.
    """
    base = {g.env: g for g in groups if g.algorithm == baseline}
    if not base:
        return [], {}
    tasks = sorted({g.env for g in groups if g.algorithm != baseline and g.env in base})
    table: dict[tuple[str, str], dict] = {}
    for group in groups:
        if group.algorithm == baseline or group.env not in base:
            continue
        row = table.setdefault((group.algorithm, group.setting), {})
        row[group.env] = tuple(
            _ratio(group.stats[m].median, base[group.env].stats[m].median) for m in ("return", "cost")
        )
    for row in table.values():
        pairs = [row[t] for t in tasks if t in row]
        row[ALL_ENVS] = tuple(_mean([p[i] for p in pairs]) if len(pairs) == len(tasks) else None for i in range(2))
    return tasks, table


def _ratio(x: float | None, y: float | None) -> float | None:
    return None if x is None or y is None or y == 0 else x / y


def _mean(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) or not values else float(np.mean(values))


def _num(x: float | None, spec: str = ".2f") -> str:
    return "—" if x is None else format(x, spec)


def _cell(stat: Stat, spec: str = ".2f", percent: bool = False) -> str:
    if stat.median is None:
        return "—"
    scale = 100.0 if percent else 1.0
    unit = " %" if percent else ""
    return f"{stat.median * scale:{spec}}{unit} [{stat.q25 * scale:{spec}}, {stat.q75 * scale:{spec}}]"


def markdown(groups: list[Group], *, last_k: int, baseline: str | None) -> str:
    """The tables as Markdown: the raw table, then the normalised one where the baseline ran on the same tasks."""
    out = io.StringIO()
    out.write(
        f"Final values: mean over the last {last_k} iterations of each seed; median [25 %, 75 %] over seeds. "
        "Return is the team return (the team reward once, as SafePO's EpRet; not RLlib's episode_return_mean, the "
        "sum over agents), cost the team cost, both windowed episode means; p90, CVaR 10 % and over-limit are "
        "per-iteration episode-cost tails (rllib_safe.callbacks).\n\n"
    )
    out.write(
        "| algorithm | setting | task | seeds | return | cost | limit | cost p90 | cost CVaR 10 % | over limit "
        "| cost rate |\n"
    )
    out.write("|---|---|---|---:|---|---|---:|---|---|---|---|\n")
    for g in groups:
        s = g.stats
        out.write(
            f"| {g.algorithm} | {g.setting} | {g.env} | {len(g.trials)} | {_cell(s['return'])} | {_cell(s['cost'])} "
            f"| {_num(g.cost_limit, 'g')} | {_cell(s['cost_p90'])} | {_cell(s['cost_cvar10'])} "
            f"| {_cell(s['over_limit_frac'], '.0f', percent=True)} | {_cell(s['cost_rate'], '.4f')} |\n"
        )
    if baseline:
        tasks, table = normalized(groups, baseline)
        if table:
            out.write(
                f"\nNormalised by {baseline} (seed 000 Tables 3–4 layout): median over seeds ÷ {baseline}'s median on "
                'the same task; "all envs" is the mean over the tasks.\n\n'
            )
            columns = [*tasks, ALL_ENVS]
            out.write("| algorithm | setting | " + " | ".join(f"{t} return | {t} cost" for t in columns) + " |\n")
            out.write("|---|---|" + "---:|---:|" * len(columns) + "\n")
            for (algorithm, setting), row in table.items():
                pairs = [row.get(t, (None, None)) for t in columns]
                cells = " | ".join(f"{_num(r, '.3f')} | {_num(c, '.3f')}" for r, c in pairs)
                out.write(f"| {algorithm} | {setting} | {cells} |\n")
    return out.getvalue()


def to_csv(groups: list[Group], *, baseline: str | None) -> str:
    """The tables as CSV, one row per algorithm × setting × task (and "all envs" rows for the normalised means)."""
    tasks, table = normalized(groups, baseline) if baseline else ([], {})
    out = io.StringIO()
    writer = csv.writer(out)
    header = ["algorithm", "setting", "task", "seeds", "cost_limit"]
    for name in METRICS:
        header += [f"{name}_median", f"{name}_q25", f"{name}_q75"]
    header += ["return_normalized", "cost_normalized"]
    writer.writerow(header)

    def fmt(x: float | None) -> str:
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else repr(float(x))

    for g in groups:
        row = [g.algorithm, g.setting, g.env, len(g.trials), fmt(g.cost_limit)]
        for name in METRICS:
            st = g.stats[name]
            row += [fmt(st.median), fmt(st.q25), fmt(st.q75)]
        ratios = table.get((g.algorithm, g.setting), {}).get(g.env, (None, None))
        writer.writerow(row + [fmt(ratios[0]), fmt(ratios[1])])
    for (algorithm, setting), ratios in table.items():
        r, c = ratios.get(ALL_ENVS, (None, None))
        writer.writerow([algorithm, setting, ALL_ENVS, "", ""] + [""] * (3 * len(METRICS)) + [fmt(r), fmt(c)])
    return out.getvalue()
