"""Progress of a run: one flat row per iteration, the terminal line, and the Tune callbacks that write and print them.

A row (:func:`flatten_result`) is what ``progress.jsonl`` holds per iteration, for ``rllib-safe train`` and for every
trial of a sweep alike, and what :mod:`rllib_safe.studies.results` rebuilds from Tune's own ``result.json`` where a
trial has no ``progress.jsonl``. Its keys (stable; the README lists them):

* ``iteration``, ``env_steps`` (lifetime env steps), ``env_steps_this_iter``, ``time_this_iter_s``,
  ``time_total_s``, ``env_steps_per_s``, ``num_episodes`` (episodes that ended this iteration);
* ``team_return_mean``: the **team return**, the team reward counted once, as SafePO's ``Metrics/EpRet`` (every
  rllib_safe task gives each agent the team reward; :func:`rllib_safe.callbacks.team_return_mean`: the callback's
  ``env_runners/episode_return_team``, else the mean over agents of RLlib's ``agent_episode_returns_mean``);
  ``episode_return_mean``: RLlib's episode return, the **sum** over the n agents (n times the team return), kept for
  reference; ``episode_len_mean``, ``episode_cost_mean`` (the team cost, counted once) — windowed means of the
  episodes that ended;
* the tail-safety metrics of :mod:`rllib_safe.callbacks`: ``episode_cost_p90``, ``episode_cost_cvar10``,
  ``episode_cost_over_limit_frac`` (this iteration's episodes; absent when none ended), ``cumulative_cost``,
  ``cost_rate``; and ``safe_score`` (:mod:`rllib_safe.studies.score`);
* per agent ``<agent>/episode_cost`` (the exact mean episode cost the duals saw), ``<agent>/<dual>`` (λ, ν),
  ``<agent>/policy_loss``, ``<agent>/entropy``, ``<agent>/mean_kl``, ``<agent>/happo_factor_mean``;
  ``<agent>/alpha`` (off-policy); ``critic/<key>`` for :data:`CRITIC_KEYS`; ``replay_buffer/size``; ``agent_order``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.logger import LoggerCallback

from rllib_safe.callbacks import team_return_mean

#: Names of dual variables in learner results, in the order they are looked for.
DUAL_NAMES = ("lagrange_multiplier", "nu")
#: Per-agent learner results copied into a row (``alpha``: the off-policy family's entropy temperature).
AGENT_KEYS = ("episode_cost", *DUAL_NAMES, "policy_loss", "entropy", "mean_kl", "happo_factor_mean", "alpha")
#: Results of the learner-only critic module (``__critic__``) copied into a row as ``critic/<key>``: the on-policy
#: value losses, and the off-policy family's Q and cost-critic losses, cost value, CVaR_ω estimate and updates/s.
CRITIC_KEYS = (
    "vf_loss", "cost_vf_loss", "q_loss", "cost_critic_loss", "cost_value", "cvar", "gradient_updates_per_s",
)  # fmt: skip
#: ``env_runners`` results copied into a row (row key -> result key).
ENV_RUNNER_KEYS = {
    "env_steps": "num_env_steps_sampled_lifetime",
    "env_steps_this_iter": "num_env_steps_sampled",
    "num_episodes": "num_episodes",
    "episode_return_mean": "episode_return_mean",
    "episode_len_mean": "episode_len_mean",
    "episode_cost_mean": "episode_cost_mean",
    "episode_cost_p90": "episode_cost_p90",
    "episode_cost_cvar10": "episode_cost_cvar10",
    "episode_cost_over_limit_frac": "episode_cost_over_limit_frac",
    "cumulative_cost": "cumulative_cost",
    "cost_rate": "cost_rate",
}
#: Name of the per-trial progress file.
PROGRESS_FILE = "progress.jsonl"
#: Name of the per-trial description file (algorithm, task, seed, cost limit, agents, swept values).
RUN_FILE = "run.json"


def _number(value: Any) -> Any:
    """A plain float for numpy scalars; None for NaN (RLlib reports an empty window as NaN)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def flatten_result(result: dict) -> dict[str, Any]:
    """One flat progress row from an RLlib result (nested, as ``algo.train()`` returns it, or Tune's ``result.json``).

    Args:
        result: The result of one iteration.

    Returns:
        The row (module docstring); missing values are left out, NaN becomes None.
    """
    env = result.get("env_runners", {}) or {}
    learners = result.get("learners", {}) or {}
    row: dict[str, Any] = {"iteration": result.get("training_iteration")}
    for key, source in ENV_RUNNER_KEYS.items():
        if source in env:
            row[key] = _number(env[source])
    team = team_return_mean(env)
    if team is not None:
        row["team_return_mean"] = team
    for key in ("time_this_iter_s", "time_total_s", "agent_order", "safe_score"):
        if key in result:
            row[key] = _number(result[key])
    if row.get("env_steps_this_iter") is not None and row.get("time_this_iter_s"):
        row["env_steps_per_s"] = row["env_steps_this_iter"] / row["time_this_iter_s"]
    for aid, stats in learners.items():
        if aid.startswith("__") or not isinstance(stats, dict):
            continue
        for key in AGENT_KEYS:
            if key in stats:
                row[f"{aid}/{key}"] = _number(stats[key])
    critic = learners.get("__critic__", {}) or {}
    for key in CRITIC_KEYS:
        if key in critic:
            row[f"critic/{key}"] = _number(critic[key])
    if isinstance(result.get("replay_buffer"), dict) and "size" in result["replay_buffer"]:
        row["replay_buffer/size"] = _number(result["replay_buffer"]["size"])
    return row


def agents_in(row: dict) -> list[str]:
    """The agent ids that have per-agent entries in a row, in order of appearance."""
    seen: dict[str, None] = {}
    for key in row:
        if "/" in key and not key.startswith("critic/"):
            seen.setdefault(key.split("/", 1)[0], None)
    return list(seen)


def dual_name_in(row: dict) -> str | None:
    """The name of the dual variable a row carries (``lagrange_multiplier``, ``nu``), or None."""
    for name in DUAL_NAMES:
        if any(key.endswith(f"/{name}") for key in row):
            return name
    return None


def _fmt(value: float, spec: str) -> str:
    return format(value, spec)


def progress_line(row: dict, cost_limit: float | None) -> str:
    """The terminal line of one iteration.

    ``iter    3 | steps    12000 | return 40.60 | cost 3.10 / limit 25 | p90 7.0 cvar 9.0 over 10% | λ 0.010 0.012
    | 910 env-steps/s | 41 s``. ``return`` is the team return (``team_return_mean``: the team reward once, as SafePO's
    ``EpRet``), ``cost`` the team cost. A row without the team return (neither rllib_safe's callback nor RLlib's
    per-agent returns logged it) prints ``return n/a (sum over agents R)`` with RLlib's ``episode_return_mean``. An
    iteration in which no episode ended says so in words instead of printing numbers that are not there: ``no episode
    ended yet`` before the first one, and ``no episode ended this iteration`` (after the windowed return and cost of
    earlier episodes) later on.
    """
    limit = f" / limit {cost_limit:g}" if cost_limit is not None else ""
    line = f"iter {int(row.get('iteration') or 0):4d} | steps {int(row.get('env_steps') or 0):8d}"
    ret, summed, cost = row.get("team_return_mean"), row.get("episode_return_mean"), row.get("episode_cost_mean")
    if ret is None and summed is None:
        line += " | no episode ended yet"
    else:
        line += f" | return {_fmt(ret, '.2f')}" if ret is not None else f" | return n/a (sum over agents {summed:.2f})"
        line += f" | cost {_fmt(cost, '.2f')}{limit}" if cost is not None else ""
        ended = row.get("num_episodes")
        if ended is None:  # an EnvRunner that does not count them: the tail metrics exist iff an episode ended
            ended = int(row.get("episode_cost_p90") is not None)
        if not ended:
            line += " | no episode ended this iteration"
        elif row.get("episode_cost_p90") is not None:
            line += f" | p90 {_fmt(row['episode_cost_p90'], '.3g')} cvar {_fmt(row['episode_cost_cvar10'], '.3g')}"
            if row.get("episode_cost_over_limit_frac") is not None:
                line += f" over {100 * row['episode_cost_over_limit_frac']:.0f}%"
    dual = dual_name_in(row)
    if dual is not None:
        values = [row[f"{aid}/{dual}"] for aid in agents_in(row) if row.get(f"{aid}/{dual}") is not None]
        symbol = {"lagrange_multiplier": "λ", "nu": "ν"}.get(dual, dual)
        line += f" | {symbol} " + " ".join(_fmt(v, ".3f") for v in values)
    line += _off_policy_part(row)
    if row.get("env_steps_per_s") is not None:
        line += f" | {_fmt(row['env_steps_per_s'], '.0f')} env-steps/s"
    if row.get("time_total_s") is not None:
        line += f" | {_fmt(row['time_total_s'], '.0f')} s"
    return line


def _off_policy_part(row: dict) -> str:
    """α per agent, Q and cost-critic losses, CVaR_ω, replay size and gradient updates/s (rows with a replay buffer)."""
    if row.get("replay_buffer/size") is None:
        return ""
    alphas = [row[f"{aid}/alpha"] for aid in agents_in(row) if row.get(f"{aid}/alpha") is not None]
    part = (" | α " + " ".join(_fmt(a, ".3f") for a in alphas)) if alphas else ""
    for key, name in (("q_loss", "Q loss"), ("cost_critic_loss", "cost loss"), ("cvar", "CVaR")):
        if row.get(f"critic/{key}") is not None:
            part += f" | {name} {_fmt(row[f'critic/{key}'], '.3g')}"
    part += f" | buffer {int(row['replay_buffer/size'])}"
    if row.get("critic/gradient_updates_per_s") is not None:
        part += f" | {_fmt(row['critic/gradient_updates_per_s'], '.0f')} upd/s"
    return part


@dataclass(frozen=True)
class RunInfo:
    """What the progress callbacks know about a trial before its first result (from its resolved config)."""

    algorithm: str
    env: str
    seed: int | None
    cost_limit: float | None
    agent_ids: tuple[str, ...]
    swept: dict

    def to_json(self) -> dict:
        """The contents of ``run.json``."""
        return {
            "algorithm": self.algorithm,
            "env": self.env,
            "seed": self.seed,
            "cost_limit": self.cost_limit,
            "agent_ids": list(self.agent_ids),
            "swept": self.swept,
        }


def describe_trial(trial: Any) -> RunInfo:
    """Reads a trial's algorithm, task, seed, team cost limit, agents and swept values from its resolved config."""
    from rllib_safe.algorithms.registry import get_algorithm_class
    from rllib_safe.callbacks import team_cost_limit

    algo_cls = get_algorithm_class(trial.trainable_name)
    config = algo_cls.get_default_config().update_from_dict(dict(trial.config))
    agent_ids: tuple[str, ...] = ()
    try:
        from rllib_safe.algorithms.sequential.sequential import probe_env

        agent_ids = tuple(probe_env(config).agent_ids)
    except (ValueError, TypeError):
        pass
    swept = {k: v for k, v in (getattr(trial, "evaluated_params", None) or {}).items() if k not in ("env", "seed")}
    seed = config.seed
    return RunInfo(
        algorithm=trial.trainable_name,
        env=str(config.env),
        seed=None if seed is None else int(seed),
        cost_limit=team_cost_limit(config),
        agent_ids=agent_ids,
        swept=swept,
    )


class ProgressJsonlCallback(LoggerCallback):
    """Writes ``run.json`` and one :func:`flatten_result` row per iteration to ``progress.jsonl`` in every trial dir.

    Like Tune's own ``JsonLoggerCallback`` it writes into the trial's directory on the driver, which Tune syncs to
    the storage path; a resumed trial appends (readers keep the last row of each iteration).
    """

    def __init__(self) -> None:
        self._files: dict[Any, Any] = {}

    def log_trial_start(self, trial: Any) -> None:
        """Opens the trial's progress file (append) and writes its ``run.json``."""
        if trial in self._files:
            self._files[trial].close()
        path = Path(trial.local_path)
        path.mkdir(parents=True, exist_ok=True)
        (path / RUN_FILE).write_text(json.dumps(describe_trial(trial).to_json(), indent=1, default=str))
        self._files[trial] = open(path / PROGRESS_FILE, "a")

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        """Appends the iteration's row."""
        if trial not in self._files:
            self.log_trial_start(trial)
        self._files[trial].write(json.dumps(flatten_result(result), default=str) + "\n")
        self._files[trial].flush()

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        """Closes the trial's progress file."""
        handle = self._files.pop(trial, None)
        if handle is not None:
            handle.close()

    def __getstate__(self) -> dict:
        return {"_files": {}}


class ProgressLinesCallback(Callback):
    """Prints our progress line for every result of every trial (Tune's own table is switched off).

    Args:
        prefix_trials: Put the trial's swept values in front of each line (sweeps); False for a single run.
    """

    def __init__(self, prefix_trials: bool = True) -> None:
        self.prefix_trials = prefix_trials
        self._info: dict[str, RunInfo] = {}

    def _describe(self, trial: Any) -> RunInfo:
        if trial.trial_id not in self._info:
            self._info[trial.trial_id] = describe_trial(trial)
        return self._info[trial.trial_id]

    def label(self, trial: Any) -> str:
        """A short name of a trial: its task, seed and swept values."""
        info = self._describe(trial)
        parts = [info.algorithm, info.env, *(f"{k}={v}" for k, v in info.swept.items()), f"seed={info.seed}"]
        return "[" + " ".join(parts) + "]"

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        """Prints the line of one result."""
        line = progress_line(flatten_result(result), self._describe(trial).cost_limit)
        print(f"{self.label(trial)} {line}" if self.prefix_trials else line, flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Says where a finished trial's results are (sweeps)."""
        if self.prefix_trials:
            print(f"{self.label(trial)} done -> {trial.path}", flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Says that a trial failed and where its error file is."""
        where = os.path.join(trial.path, "error.txt") if trial.path else "its trial directory"
        print(f"{self.label(trial)} FAILED (see {where})", flush=True)
