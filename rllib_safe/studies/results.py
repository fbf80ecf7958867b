"""Reading results: the trials under one or more run directories, from ``progress.jsonl`` or Tune's ``result.json``.

A trial directory is any directory holding ``progress.jsonl`` (written by ``rllib-safe train`` and ``sweep``) or
``result.json`` (any Tune trial, also one run from Python with ``tune.Tuner``). A RUN_DIR given to ``table`` or
``plot`` may be a trial directory, an experiment directory or a sweep directory: trial directories are found below it.
A trial that was resumed repeats the iterations after its last checkpoint; the last row of each iteration is kept.

**Runs from before the team return was logged.** Their ``progress.jsonl`` rows have RLlib's ``episode_return_mean``
(the sum over the n agents) but no ``team_return_mean``; where ``run.json`` lists the agents, the rows get
``team_return_mean = episode_return_mean / n`` (exact for every rllib_safe task: each agent receives the team reward,
and the driver's windows of both hold the same episodes) and ``team_return_derived: true``. Without the agents the
team return stays absent (tables print "—", plots leave the curve out). Tune-only trials (``result.json``) get it
from RLlib's per-agent returns (:func:`rllib_safe.studies.progress.flatten_result`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rllib_safe.studies.progress import PROGRESS_FILE, RUN_FILE, flatten_result

TUNE_RESULT_FILE = "result.json"
PARAMS_FILE = "params.json"


@dataclass
class Trial:
    """One trial's description and progress rows."""

    path: str
    algorithm: str
    env: str
    seed: int | None
    cost_limit: float | None
    swept: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)

    @property
    def setting(self) -> str:
        """The swept values (not seed, not task) as ``key=value`` words, or ``"default"``."""
        return " ".join(f"{k}={_short(v)}" for k, v in sorted(self.swept.items())) or "default"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:g}"
    return str(value)


def find_trial_dirs(paths: list[str | Path]) -> list[Path]:
    """Every trial directory at or below the given paths (sorted, without duplicates).

    Raises:
        ValueError: A path does not exist or holds no trial.
    """
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise ValueError(f"{raw}: no such directory.")
        before = len(found)
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("checkpoint") and d not in ("wandb", "tensorboard"))
            if PROGRESS_FILE in files or TUNE_RESULT_FILE in files:
                found.setdefault(Path(root).resolve(), None)
        if len(found) == before:
            raise ValueError(f"{raw}: holds no trial (no {PROGRESS_FILE} or {TUNE_RESULT_FILE} below it).")
    return sorted(found)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a killed driver
            continue
    return rows


def _dedupe(rows: list[dict]) -> list[dict]:
    by_iteration: dict[Any, dict] = {}
    for row in rows:
        by_iteration[row.get("iteration")] = row  # the last one wins (a resumed trial repeats iterations)
    return sorted(by_iteration.values(), key=lambda r: r.get("iteration") or 0)


def _describe_from_params(path: Path, params: dict) -> dict:
    """Algorithm, task, seed and cost limit of a Tune trial without ``run.json`` (e.g. run from Python)."""
    algorithm = path.name.split("_", 1)[0]  # Tune names trial directories <trainable>_<id>_...
    limit = params.get("cost_limit")
    if not isinstance(limit, (int, float)):
        limit = None
        try:
            from rllib_safe.envs import make

            limit = float(make(str(params.get("env")), **(params.get("env_config") or {})).cost_limit)
        except Exception:  # an env that cannot be built here: no limit line
            limit = None
    return {"algorithm": algorithm, "env": str(params.get("env")), "seed": params.get("seed"), "cost_limit": limit}


def _add_team_return(rows: list[dict], num_agents: int) -> None:
    """Adds ``team_return_mean`` to rows of older runs that only have RLlib's sum over agents (module docstring)."""
    if num_agents < 1:
        return
    for row in rows:
        if row.get("team_return_mean") is None and row.get("episode_return_mean") is not None:
            row["team_return_mean"] = row["episode_return_mean"] / num_agents
            row["team_return_derived"] = True


def load_trial(path: Path, swept_keys: set[str] | None = None) -> Trial:
    """Reads one trial directory (``run.json`` + ``progress.jsonl``, or Tune's ``params.json`` + ``result.json``)."""
    run_file = path / RUN_FILE
    params_file = path / PARAMS_FILE
    params = json.loads(params_file.read_text()) if params_file.exists() else {}
    if run_file.exists():
        info = json.loads(run_file.read_text())
    else:
        info = _describe_from_params(path, params)
        info["swept"] = {k: params[k] for k in sorted(swept_keys or ()) if k in params}
    if (path / PROGRESS_FILE).exists():
        rows = _read_jsonl(path / PROGRESS_FILE)
        _add_team_return(rows, len(info.get("agent_ids") or ()))
    else:
        rows = [flatten_result(result) for result in _read_jsonl(path / TUNE_RESULT_FILE)]
    return Trial(
        path=str(path),
        algorithm=str(info.get("algorithm")),
        env=str(info.get("env")),
        seed=info.get("seed"),
        cost_limit=info.get("cost_limit"),
        swept=dict(info.get("swept") or {}),
        rows=_dedupe(rows),
    )


def _varying_keys(param_sets: list[dict]) -> set[str]:
    """Config keys whose value differs between trials (seed and task aside): the swept fields of plain Tune runs."""
    keys: set[str] = set()
    for key in set().union(*param_sets) if param_sets else ():
        if key in ("seed", "env") or key.startswith("callbacks"):
            continue
        values = {json.dumps(p.get(key), sort_keys=True, default=str) for p in param_sets}
        if len(values) > 1:
            keys.add(key)
    return keys


def load_trials(paths: list[str | Path]) -> list[Trial]:
    """All trials under the given run directories (:func:`find_trial_dirs`), with their rows."""
    dirs = find_trial_dirs(paths)
    plain = [d for d in dirs if not (d / RUN_FILE).exists() and (d / PARAMS_FILE).exists()]
    swept = _varying_keys([json.loads((d / PARAMS_FILE).read_text()) for d in plain]) if plain else set()
    return [load_trial(d, swept) for d in dirs]
