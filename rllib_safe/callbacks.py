"""Episode cost metrics, logged as exact sums and counts so that dual updates never see a mean of means; team return.

For every finished episode and agent, :class:`SafeCostCallback` sums the per-step costs over the whole episode
(``prev_episode_chunks + [episode]``; ``infos[0]`` of each chunk is the reset or carried-over info and is skipped)
and logs, under ``env_runners``:

* ``("episode_cost_sum", agent)`` / ``("episode_cost_sum", f"{agent}/{k}")`` for cost index k when m > 1
  (``reduce="sum"``: the iteration's total over all EnvRunners);
* ``("episode_cost_count", agent)`` (``reduce="sum"``): the number of episodes in that total;
* ``"episode_cost_mean"`` (smoothed over a window, for dashboards): the mean over agents of the agent episode cost,
  i.e. a team cost that every agent receives is reported once, never summed over agents; when m > 1 it is the sum
  over the cost indices, and ``"episode_cost_mean_<k>"`` reports cost index k alone;
* ``"episode_return_team"`` (smoothed over the same window): the **team return**, the mean over agents of each
  agent's episode return (same chunks and steps as the cost). Every rllib_safe task gives each agent the team reward,
  so this is the team reward counted once, as SafePO's ``Metrics/EpRet`` and the papers report it; RLlib's own
  ``episode_return_mean`` sums the agents' returns and is n times larger (2× on Ant 2x4, 6× on HalfCheetah 6x1).

The Algorithm reads the exact iteration mean ``sum / count`` with :func:`mean_episode_costs`: J_c, the
**undiscounted** mean episode cost of the episodes that ended in the iteration. The papers' J_c is the expected
*discounted* cost (MAFOCOPS Sec. 3; its Algorithm 1 line 4 estimates it by averaging the episodes' cost returns);
the FOCOPS code discounts it (``c_gamma``), the MACPO code and SafePO do not (their ``aver_episode_costs`` /
``EpCost`` are undiscounted sums), and the benchmarks' cost limits (e.g. 25 in safety-gymnasium) are undiscounted.

**Tail-safety metrics** (:meth:`SafeCostCallback.on_sample_end` and :meth:`SafeCostCallback.on_train_result`). At the
end of every ``sample()`` call, each step's team cost (the mean over agents of the agent's cost summed over cost
indices, the convention of ``episode_cost_mean``) is added to a running total per episode, from the chunks as they leave
the EnvRunner (``infos[1:]`` of each chunk, so every step counts once, before any learner connector touches the
chunks). Under ``env_runners`` the callback logs:

* ``"episode_costs"`` (``reduce="item_series"``): the team cost of every episode that ended, all EnvRunners together;
* ``"cumulative_cost"`` (``reduce="lifetime_sum"``, checkpointed with the Algorithm's metrics): the team cost of every
  env step sampled so far, finished episodes or not.

After each iteration the driver turns them into (:data:`TAIL_METRICS`, stable names, also in the README):

* ``episode_cost_p90``: the 90th percentile of this iteration's episode costs (numpy's linear interpolation);
* ``episode_cost_cvar10``: CVaR at 10 %, the mean of the worst ``ceil(0.1·n)`` of this iteration's n episode costs;
* ``episode_cost_over_limit_frac``: the fraction of this iteration's episodes whose cost exceeds the team cost limit
  (the mean over agents of each agent's limit summed over cost indices: the cost limit d for a team cost);
* ``cost_rate``: ``cumulative_cost / num_env_steps_sampled_lifetime`` (Ray et al. 2019, "Benchmarking Safe
  Exploration").

An iteration in which no episode ended has no per-iteration tail metrics (the keys are absent, never NaN); the raw
``episode_costs`` list is removed from the result once used, so loggers see numbers only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from ray.rllib.callbacks.callbacks import RLlibCallback

#: The windowed team return under ``env_runners`` (module docstring).
TEAM_RETURN_KEY = "episode_return_team"


def _chunk_cost(sa_episode: Any, num_steps: int) -> np.ndarray:
    infos = sa_episode.get_infos(slice(1, num_steps + 1))  # info t+1 was returned by step t
    return np.sum([np.atleast_1d(np.asarray(info["cost"], dtype=np.float64)) for info in infos], axis=0)


def _agent_chunks(episode: Any, prev_episode_chunks: list | None = None) -> Iterator[tuple[str, Any, int]]:
    """``(agent, single-agent chunk, steps)`` for every chunk of a multi-agent episode that holds steps of the agent.

    The episode is given as its final chunk and the earlier ones. An earlier chunk counts only the steps before the
    next chunk began (``t_started`` of the next chunk): with a local EnvRunner the Learner receives the very chunk
    objects the EnvRunner keeps for its metrics, and RLlib's ``AddOneTsToEpisodesAndTruncate`` appends a copy of the
    last step (its info included, with a 0.0 reward) to them in place.
    """
    chunks = [*(prev_episode_chunks or []), episode]
    for k, chunk in enumerate(chunks):
        following = chunks[k + 1].agent_episodes if k + 1 < len(chunks) else {}
        for aid, sa_episode in chunk.agent_episodes.items():
            num_steps = len(sa_episode)
            if aid in following:
                num_steps = min(num_steps, following[aid].t_started - sa_episode.t_started)
            if num_steps > 0:
                yield aid, sa_episode, num_steps


def episode_costs(episode: Any, prev_episode_chunks: list | None = None) -> dict[str, np.ndarray]:
    """Total cost per agent (a length-m vector) of a multi-agent episode given as its final chunk and earlier chunks.

    Each chunk's steps are those of :func:`_agent_chunks` (in-place extensions by the Learner's connector excluded).
    """
    totals: dict[str, np.ndarray] = {}
    for aid, sa_episode, num_steps in _agent_chunks(episode, prev_episode_chunks):
        c = _chunk_cost(sa_episode, num_steps)
        totals[aid] = totals[aid] + c if aid in totals else c
    return totals


def episode_returns(episode: Any, prev_episode_chunks: list | None = None) -> dict[str, float]:
    """Return (sum of rewards) per agent of a multi-agent episode given as its final chunk and earlier chunks.

    The same steps as :func:`episode_costs` (reward t belongs to step t, whose cost is in info t + 1).
    """
    totals: dict[str, float] = {}
    for aid, sa_episode, num_steps in _agent_chunks(episode, prev_episode_chunks):
        reward = float(np.sum(sa_episode.get_rewards(slice(0, num_steps)), dtype=np.float64))
        totals[aid] = totals.get(aid, 0.0) + reward
    return totals


def team_return(agent_returns: dict[str, float]) -> float:
    """The team return of one episode: the mean over agents of each agent's return.

    Every rllib_safe task gives each agent the team reward, so this is the team reward counted once (SafePO's
    ``Metrics/EpRet``); RLlib's ``episode_return_mean`` sums the agents' returns and is n times larger.
    """
    return float(np.mean(list(agent_returns.values())))


def team_return_mean(env_runner_metrics: dict) -> float | None:
    """The windowed team return of an iteration's ``env_runners`` results, or None where no episode has ended.

    ``episode_return_team`` (:class:`SafeCostCallback`); for results without it (runs from before it existed, or an
    EnvRunner without the callback) the mean over agents of RLlib's ``agent_episode_returns_mean``, the same quantity
    over RLlib's window (``metrics_num_episodes_for_smoothing``).
    """
    value = env_runner_metrics.get(TEAM_RETURN_KEY)
    if value is None:
        per_agent = env_runner_metrics.get("agent_episode_returns_mean")
        if not isinstance(per_agent, dict) or not per_agent:
            return None
        value = np.mean([float(v) for v in per_agent.values()])
    value = float(value)
    return None if math.isnan(value) else value


def cost_metric_keys(aid: str, m: int) -> list[str]:
    """The metric sub-keys of agent ``aid``'s m cost indices."""
    return [aid] if m == 1 else [f"{aid}/{k}" for k in range(m)]


class SafeCostCallback(RLlibCallback):
    """Logs exact per-agent episode cost sums and counts, the team return and the tail-safety metrics (module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self._running_episode_costs: dict[str, float] = {}  # EnvRunner side: episode id -> cost so far
        self._team_cost_limit: float | None = None  # driver side, read once from the config
        self._team_cost_limit_read = False

    def on_episode_end(self, *, episode, prev_episode_chunks=None, metrics_logger=None, **kwargs) -> None:
        """Sums the episode's costs and rewards per agent and logs them."""
        totals = episode_costs(episode, prev_episode_chunks)
        if not totals or metrics_logger is None:
            return
        returns = episode_returns(episode, prev_episode_chunks)
        metrics_logger.log_value(TEAM_RETURN_KEY, team_return(returns), window=100)
        for aid, total in totals.items():
            for key, value in zip(cost_metric_keys(aid, len(total)), total):
                metrics_logger.log_value(("episode_cost_sum", key), float(value), reduce="sum")
            metrics_logger.log_value(("episode_cost_count", aid), 1, reduce="sum")
        team = np.mean(list(totals.values()), axis=0)  # (m,): a team cost counted once, not summed over agents
        metrics_logger.log_value("episode_cost_mean", float(team.sum()), window=100)
        if len(team) > 1:
            for k, value in enumerate(team):
                metrics_logger.log_value(f"episode_cost_mean_{k}", float(value), window=100)

    # ----------------------------------------------------------------------------------------------------------
    # Tail-safety metrics (module docstring): per-episode team costs and the cumulative cost, then their tails.
    # ----------------------------------------------------------------------------------------------------------
    def on_sample_end(self, *, samples: list, metrics_logger=None, **kwargs) -> None:
        """Adds each chunk's team cost to its episode's running total; logs ended episodes and the sampled cost."""
        if metrics_logger is None:
            return
        running = self._running_episode_costs
        sampled = 0.0
        for chunk in samples:
            per_agent = [_chunk_cost(sa, len(sa)).sum() for sa in chunk.agent_episodes.values() if len(sa) > 0]
            cost = float(np.mean(per_agent)) if per_agent else 0.0
            sampled += cost
            total = running.pop(chunk.id_, 0.0) + cost
            if chunk.is_done:
                metrics_logger.log_value("episode_costs", total, reduce="item_series")
            else:
                running[chunk.id_] = total
        while len(running) > _MAX_RUNNING_EPISODES:  # episodes abandoned by a reset (e.g. reseed_each_iteration)
            running.pop(next(iter(running)))
        metrics_logger.log_value("cumulative_cost", sampled, reduce="lifetime_sum")

    def on_train_result(self, *, algorithm, result: dict, **kwargs) -> None:
        """Replaces the iteration's list of episode costs by its tail metrics and adds the cost rate."""
        env = result.get("env_runners")
        if not isinstance(env, dict):
            return
        costs = env.pop("episode_costs", None)
        if not self._team_cost_limit_read:
            self._team_cost_limit, self._team_cost_limit_read = team_cost_limit(algorithm.config), True
        if isinstance(costs, (list, tuple)) and len(costs) > 0:
            env.update(tail_metrics(costs, self._team_cost_limit))
        steps = env.get("num_env_steps_sampled_lifetime")
        if "cumulative_cost" in env and steps:
            env["cost_rate"] = float(env["cumulative_cost"]) / float(steps)


def mean_episode_costs(env_runner_metrics: dict, agent_ids: list[str], num_costs: int) -> dict[str, np.ndarray]:
    """Exact mean episode cost per agent of one iteration from the aggregated sums and counts.

    Args:
        env_runner_metrics: The reduced ``env_runners`` results (nested dict) of the iteration.
        agent_ids: The agents.
        num_costs: m.

    Returns:
        ``{agent: (m,) array}`` for the agents that finished at least one episode this iteration (an iteration in
        which no episode ended reports its sums and counts as NaN; those agents are left out).
    """
    sums = env_runner_metrics.get("episode_cost_sum", {})
    counts = env_runner_metrics.get("episode_cost_count", {})
    out = {}
    for aid in agent_ids:
        count = float(counts.get(aid, 0) or 0)
        if not (np.isfinite(count) and count > 0):  # no episode ended: RLlib reports an empty sum as NaN
            continue
        out[aid] = np.array([sums[k] for k in cost_metric_keys(aid, num_costs)], dtype=np.float64) / count
    return out


#: Names of the per-iteration tail metrics under ``env_runners`` (module docstring); ``cumulative_cost`` and
#: ``cost_rate`` are there on every iteration.
TAIL_METRICS = ("episode_cost_p90", "episode_cost_cvar10", "episode_cost_over_limit_frac")
#: Bound on the running totals an EnvRunner keeps for episodes that have not ended.
_MAX_RUNNING_EPISODES = 10_000


def tail_metrics(episode_costs: Any, cost_limit: float | None, alpha: float = 0.1) -> dict[str, float]:
    """Tail-safety metrics of a set of episode costs.

    Args:
        episode_costs: The episode costs (at least one).
        cost_limit: The limit an episode's cost is compared with; None leaves out the fraction over the limit.
        alpha: The tail fraction of the CVaR (0.1: the worst 10 %).

    Returns:
        ``episode_cost_p90`` (numpy's linearly interpolated 90th percentile), ``episode_cost_cvar10`` (the mean of the
        worst ``ceil(alpha·n)`` costs) and, with a limit, ``episode_cost_over_limit_frac`` (fraction of costs > limit).
    """
    costs = np.sort(np.asarray(episode_costs, dtype=np.float64))[::-1]
    if costs.size == 0:
        raise ValueError("tail_metrics needs at least one episode cost.")
    worst = max(1, math.ceil(alpha * costs.size - 1e-9))
    out = {
        "episode_cost_p90": float(np.percentile(costs, 90)),
        "episode_cost_cvar10": float(costs[:worst].mean()),
    }
    if cost_limit is not None:
        out["episode_cost_over_limit_frac"] = float(np.mean(costs > cost_limit))
    return out


def team_cost_limit(config: Any) -> float | None:
    """The limit on the team episode cost: the mean over agents of each agent's limit summed over cost indices.

    Uses ``config.cost_limits()`` where the config has it (the on-policy base), else a scalar ``config.cost_limit``;
    None when neither gives one.
    """
    if hasattr(config, "cost_limits"):
        try:
            limits = config.cost_limits()
        except ValueError:
            return None
        return float(np.mean([np.sum(v) for v in limits.values()]))
    limit = getattr(config, "cost_limit", None)
    return float(limit) if isinstance(limit, (int, float)) and not isinstance(limit, bool) else None
