"""Episode cost metrics, logged as exact sums and counts so that dual updates never see a mean of means.

For every finished episode and agent, :class:`SafeCostCallback` sums the per-step costs over the whole episode
(``prev_episode_chunks + [episode]``; ``infos[0]`` of each chunk is the reset or carried-over info and is skipped)
and logs, under ``env_runners``:

* ``("episode_cost_sum", agent)`` / ``("episode_cost_sum", f"{agent}/{k}")`` for cost index k when m > 1
  (``reduce="sum"``: the iteration's total over all EnvRunners);
* ``("episode_cost_count", agent)`` (``reduce="sum"``): the number of episodes in that total;
* ``"episode_cost_mean"`` (smoothed over a window, for dashboards): the mean over agents of the agent episode cost,
  i.e. a team cost that every agent receives is reported once, never summed over agents; when m > 1 it is the sum
  over the cost indices, and ``"episode_cost_mean_<k>"`` reports cost index k alone.

The Algorithm reads the exact iteration mean ``sum / count`` with :func:`mean_episode_costs`: J_c, the
**undiscounted** mean episode cost of the episodes that ended in the iteration. The papers' J_c is the expected
*discounted* cost (MAFOCOPS Sec. 3; its Algorithm 1 line 4 estimates it by averaging the episodes' cost returns);
the FOCOPS code discounts it (``c_gamma``), the MACPO code and SafePO do not (their ``aver_episode_costs`` /
``EpCost`` are undiscounted sums), and the benchmarks' cost limits (e.g. 25 in safety-gymnasium) are undiscounted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.callbacks.callbacks import RLlibCallback


def _chunk_cost(sa_episode: Any, num_steps: int) -> np.ndarray:
    infos = sa_episode.get_infos(slice(1, num_steps + 1))  # info t+1 was returned by step t
    return np.sum([np.atleast_1d(np.asarray(info["cost"], dtype=np.float64)) for info in infos], axis=0)


def episode_costs(episode: Any, prev_episode_chunks: list | None = None) -> dict[str, np.ndarray]:
    """Total cost per agent (a length-m vector) of a multi-agent episode given as its final chunk and earlier chunks.

    An earlier chunk counts only the steps before the next chunk began (``t_started`` of the next chunk): with a
    local EnvRunner the Learner receives the very chunk objects the EnvRunner keeps for its metrics, and RLlib's
    ``AddOneTsToEpisodesAndTruncate`` appends a copy of the last step (its info included) to them in place.
    """
    chunks = [*(prev_episode_chunks or []), episode]
    totals: dict[str, np.ndarray] = {}
    for k, chunk in enumerate(chunks):
        following = chunks[k + 1].agent_episodes if k + 1 < len(chunks) else {}
        for aid, sa_episode in chunk.agent_episodes.items():
            num_steps = len(sa_episode)
            if aid in following:
                num_steps = min(num_steps, following[aid].t_started - sa_episode.t_started)
            if num_steps <= 0:
                continue
            c = _chunk_cost(sa_episode, num_steps)
            totals[aid] = totals[aid] + c if aid in totals else c
    return totals


def cost_metric_keys(aid: str, m: int) -> list[str]:
    """The metric sub-keys of agent ``aid``'s m cost indices."""
    return [aid] if m == 1 else [f"{aid}/{k}" for k in range(m)]


class SafeCostCallback(RLlibCallback):
    """Logs exact per-agent episode cost sums and counts (see the module docstring)."""

    def on_episode_end(self, *, episode, prev_episode_chunks=None, metrics_logger=None, **kwargs) -> None:
        """Sums the episode's costs per agent and logs them."""
        totals = episode_costs(episode, prev_episode_chunks)
        if not totals or metrics_logger is None:
            return
        for aid, total in totals.items():
            for key, value in zip(cost_metric_keys(aid, len(total)), total):
                metrics_logger.log_value(("episode_cost_sum", key), float(value), reduce="sum")
            metrics_logger.log_value(("episode_cost_count", aid), 1, reduce="sum")
        team = np.mean(list(totals.values()), axis=0)  # (m,): a team cost counted once, not summed over agents
        metrics_logger.log_value("episode_cost_mean", float(team.sum()), window=100)
        if len(team) > 1:
            for k, value in enumerate(team):
                metrics_logger.log_value(f"episode_cost_mean_{k}", float(value), window=100)


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
