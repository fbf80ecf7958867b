"""One constrained score for Tune schedulers that rank trials by a single number (ASHA, PBT, HyperOpt, ...).

A scheduler that maximises the return alone promotes trials that buy return with cost; one that is given the cost as
a second metric cannot use it. ``safe_score`` folds the constraint into the return as an exact penalty on the
violation of the cost limit d (the penalty method of constrained optimisation, e.g. Nocedal & Wright §17.2)::

    safe_score = R − κ · max(0, C − d)

with R the team episode return and C the team episode cost (windowed means over the last episodes:
``env_runners/episode_return_team`` and ``env_runners/episode_cost_mean``, each the team quantity counted once, not
RLlib's ``episode_return_mean``, which sums the n agents' returns), d the team cost limit of the trial and
κ the price of one unit of cost above the limit in units of return (``penalty``, default :data:`DEFAULT_PENALTY`).
A trial that meets its limit is scored by its return alone; a trial that violates it loses κ per unit of excess
cost. Choose κ larger than the return one unit of cost can buy on the task (for the velocity tasks, where an agent
gains roughly one unit of return per step at the speed limit and a step over it costs 1, κ = 10 makes every
violation a loss). The score is reported at the top level of every result as ``safe_score`` once an episode has
ended (schedulers skip results without it).

Use it from Python (``tune_configs/*.yaml`` do this with ``score: {penalty: κ}`` and ``scheduler: {metric:
safe_score}``)::

    config.callbacks(on_train_result=functools.partial(add_safe_score, penalty=10.0))
    tune.TuneConfig(metric="safe_score", mode="max", scheduler=ASHAScheduler(...))
"""

from __future__ import annotations

import math
from typing import Any

#: Default κ: one unit of episode cost above the limit costs 10 units of episode return.
DEFAULT_PENALTY = 10.0
#: The result key (top level).
SCORE_KEY = "safe_score"


def safe_score(
    episode_return: float, episode_cost: float, cost_limit: float, penalty: float = DEFAULT_PENALTY
) -> float:
    """``R − κ · max(0, C − d)`` (module docstring)."""
    return float(episode_return) - float(penalty) * max(0.0, float(episode_cost) - float(cost_limit))


def add_safe_score(*, algorithm: Any, result: dict, penalty: float = DEFAULT_PENALTY, **kwargs: Any) -> None:
    """An RLlib ``on_train_result`` callback that adds ``safe_score`` to the result (module docstring).

    Bind ``penalty`` with :func:`functools.partial`; RLlib passes the other arguments. Nothing is added before the
    first episode has ended, or when the trial has no cost limit.
    """
    from rllib_safe.callbacks import team_cost_limit, team_return_mean

    env = result.get("env_runners", {}) or {}
    ret, cost = team_return_mean(env), env.get("episode_cost_mean")
    if ret is None or cost is None or math.isnan(float(cost)):
        return
    limit = team_cost_limit(algorithm.config)  # cheap: the task's layout is cached per process
    if limit is not None:
        result[SCORE_KEY] = safe_score(ret, cost, limit, penalty)
