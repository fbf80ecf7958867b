"""Learning curves in the papers' layout: return and cost against env steps, median and 25–75 % band across seeds.

One column of panels per task (the team return on top: the team reward once, as SafePO's ``EpRet``; the team cost below,
a dashed line at the cost limit), one curve per algorithm × setting. Seeds are put on a common grid of env steps (the
steps of all seeds within the range every seed covers; a seed's value between two of its own iterations is interpolated
linearly) before the median and the band are taken, as in seed 000's Figures 3–10 ("the solid line shows the median
performance across 5 seeds and the shaded areas correspond to the 25-75% percentiles").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rllib_safe.studies.results import Trial

#: Rows of panels: (progress key, axis label).
PANELS = (("team_return_mean", "episode return (team)"), ("episode_cost_mean", "episode cost (team)"))


@dataclass
class Curve:
    """The median and 25–75 % band of one metric of one algorithm × setting × task over seeds."""

    label: str
    env: str
    steps: np.ndarray
    median: np.ndarray
    q25: np.ndarray
    q75: np.ndarray
    seeds: int


def _series(trial: Trial, key: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(r["env_steps"], r[key]) for r in trial.rows if r.get(key) is not None and r.get("env_steps") is not None]
    if not points:
        return np.empty(0), np.empty(0)
    steps, values = np.asarray(points, dtype=np.float64).T
    return steps, values


def curve(trials: list[Trial], key: str, label: str) -> Curve | None:
    """The median and band of ``key`` over the given trials (the seeds of one group); None without data."""
    series = [s for s in (_series(t, key) for t in trials) if s[0].size]
    if not series:
        return None
    lo = max(steps[0] for steps, _ in series)
    hi = min(steps[-1] for steps, _ in series)
    grid = np.unique(np.concatenate([steps[(steps >= lo) & (steps <= hi)] for steps, _ in series]))
    values = np.stack([np.interp(grid, steps, vals) for steps, vals in series])
    q25, median, q75 = np.percentile(values, [25, 50, 75], axis=0)
    return Curve(label, trials[0].env, grid, median, q25, q75, len(series))


def group_curves(trials: list[Trial], key: str) -> list[Curve]:
    """One curve per algorithm × setting × task."""
    groups: dict[tuple, list[Trial]] = {}
    for t in trials:
        groups.setdefault((t.env, t.algorithm, t.setting), []).append(t)
    curves = []
    for (_, algorithm, setting), members in sorted(groups.items()):
        label = algorithm if setting == "default" else f"{algorithm} {setting}"
        c = curve(members, key, label)
        if c is not None:
            curves.append(c)
    return curves


def make_figure(trials: list[Trial], *, title: str | None = None):
    """The figure (matplotlib ``Figure``, no pyplot state): return and cost panels per task.

    Raises:
        ValueError: No trial has a finished episode to plot.
    """
    from matplotlib.figure import Figure

    tasks = sorted({t.env for t in trials})
    by_row = [group_curves(trials, key) for key, _ in PANELS]
    if not any(by_row):
        raise ValueError("nothing to plot: no trial has an iteration with a finished episode.")
    labels = sorted({c.label for row in by_row for c in row})
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    width = max(6.0, 4.2 * len(tasks))
    fig = Figure(figsize=(width, 6.0), layout="constrained")
    axes = fig.subplots(len(PANELS), len(tasks), squeeze=False, sharex="col")
    limits = {t.env: t.cost_limit for t in trials if t.cost_limit is not None}
    for col, task in enumerate(tasks):
        for row, (key, ylabel) in enumerate(PANELS):
            ax = axes[row][col]
            for c in (c for c in by_row[row] if c.env == task):
                ax.plot(c.steps, c.median, color=colors[c.label], label=c.label, linewidth=1.6)
                ax.fill_between(c.steps, c.q25, c.q75, color=colors[c.label], alpha=0.25, linewidth=0)
            if key == "episode_cost_mean" and task in limits:
                ax.axhline(limits[task], color="black", linestyle="--", linewidth=1.0, label="cost limit")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(task)
            if row == len(PANELS) - 1:
                ax.set_xlabel("env steps")
    handles, names = [], []
    for ax in axes.flat:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    longest = max(len(n) for n in names)
    ncols = max(1, min(len(names), int(width * 12 / (longest + 6))))  # about 12 characters per inch
    fig.legend(handles, names, loc="outside lower center", ncols=ncols, frameon=False)
    fig.suptitle(title or "median and 25–75 % band over seeds", fontsize="medium")
    return fig


def save_figure(fig, out: str | Path) -> list[Path]:
    """Writes the figure as PNG and SVG (``out`` with its suffix replaced by each); returns the paths."""
    out = Path(out)
    if out.suffix.lower() not in ("", ".png", ".svg"):
        raise ValueError(f"--out must end in .png or .svg (both are written), got {str(out)!r}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".png"), out.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path, dpi=110 if path.suffix == ".png" else None)
    return paths
