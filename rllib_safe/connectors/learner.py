"""Learner connector pieces of the on-policy family: costs and global state from infos, centralized (cost) GAE.

Pipeline (built by :class:`~rllib_safe.algorithms.sequential.sequential_learner.SequentialLearner`), in order:
``AddOneTsToEpisodesAndTruncate`` (RLlib: the bootstrap step) → :class:`AddCostsAndStateFromInfos` → RLlib's default
pieces (observations, actions, rewards, ..., agent-to-module mapping, batching, tensors) → :class:`CentralizedGAE`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns

from rllib_safe.core.columns import CRITIC_ID, SafeColumns


def gae(
    values: np.ndarray,
    rewards: np.ndarray,
    terminateds: np.ndarray,
    truncateds: np.ndarray,
    gamma: float,
    lambda_: float,
) -> np.ndarray:
    """Generalised advantage estimation over a flat batch of episode chunks; returns the value targets.

    Rows follow RLlib's layout after ``AddOneTsToEpisodesAndTruncate``: every chunk ends with an artificial
    bootstrap row (reward 0, masked out of the loss) whose value is ``V(s_last)``. ``terminateds[t]`` cuts the
    bootstrap (``δ_t = r_t − V(s_t)``); ``truncateds[t]`` marks the last real row of a chunk: the bootstrap stays
    but the recursion stops. With ``d_t = 1 − terminated_t`` and ``p_t = d_t (1 − truncated_t)``:

    ``δ_t = r_t + γ d_t V(s_{t+1}) − V(s_t)``,  ``Â_t = δ_t + γ λ p_t Â_{t+1}``,  ``target_t = Â_t + V(s_t)``.

    Args:
        values: ``V(s_t)``, shape ``(N,)`` or ``(N, m)`` (several cost streams at once).
        rewards: Rewards or costs of transition t, same shape.
        terminateds: ``(N,)`` bools.
        truncateds: ``(N,)`` bools.
        gamma: Discount factor.
        lambda_: GAE λ.

    Returns:
        Value targets of the same shape as ``values`` (``float32``).
    """
    values = np.asarray(values, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64)
    shape = (-1,) + (1,) * (values.ndim - 1)
    not_terminal = (1.0 - np.asarray(terminateds, dtype=np.float64)).reshape(shape)
    propagate = not_terminal * (1.0 - np.asarray(truncateds, dtype=np.float64)).reshape(shape)
    next_values = np.concatenate([values[1:], np.zeros_like(values[:1])])
    deltas = rewards + gamma * not_terminal * next_values - values
    advantages = np.zeros_like(values)
    running = np.zeros_like(values[0])
    for t in range(len(values) - 1, -1, -1):
        running = deltas[t] + gamma * lambda_ * propagate[t] * running
        advantages[t] = running
    return (advantages + values).astype(np.float32)


def standardize(x: np.ndarray, mask: np.ndarray, center_only: bool = False) -> np.ndarray:
    """Standardises ``x`` (per column) with the mean and std of the rows where ``mask`` is True."""
    valid = x[mask]
    mean = valid.mean(axis=0)
    if center_only:
        return (x - mean).astype(np.float32)
    return ((x - mean) / np.maximum(valid.std(axis=0), 1e-4)).astype(np.float32)


class AddCostsAndStateFromInfos(ConnectorV2):
    """Adds the ``costs`` and ``state`` columns from the episodes' infos.

    A ``SingleAgentEpisode`` holds one info per observation: ``infos[0]`` came with the reset (or chunk-start)
    observation and ``infos[t + 1]`` was returned by step t. So the cost of transition t is ``infos[t + 1]["cost"]``
    and the state of observation t is ``infos[t]["state"]``. The artificial bootstrap row (the last row of every
    chunk, added by ``AddOneTsToEpisodesAndTruncate``) costs 0; its state is the final observation's state.
    """

    def __init__(self, input_observation_space=None, input_action_space=None, *, num_costs: int = 1, **kwargs):
        """Args: num_costs: number of cost indices m of the task."""
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.num_costs = num_costs

    def __call__(self, *, rl_module, batch: dict[str, Any], episodes: list, shared_data=None, **kwargs) -> Any:
        """Adds both columns for every single-agent episode chunk."""
        for sa_episode in self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False):
            n_rows = len(sa_episode)  # includes the artificial bootstrap row
            infos = sa_episode.get_infos(slice(0, n_rows + 1))
            try:
                states = np.stack([info["state"] for info in infos[:n_rows]]).astype(np.float32)
                costs = np.zeros((n_rows, self.num_costs), dtype=np.float32)
                for t in range(n_rows - 1):
                    costs[t] = infos[t + 1]["cost"]
            except KeyError as e:
                raise ValueError(
                    f"rllib_safe algorithms need infos[agent]['cost'] and infos[agent]['state'] on every step; "
                    f"agent {sa_episode.agent_id!r} of episode {sa_episode.multi_agent_episode_id} has no {e}. "
                    "Use a task from rllib_safe.envs or follow the SafeMultiAgentEnv contract."
                ) from None
            if self.num_costs == 1:
                costs = costs[:, 0]
            self.add_n_batch_items(batch, SafeColumns.STATE, states, n_rows, sa_episode)
            self.add_n_batch_items(batch, SafeColumns.COSTS, costs, n_rows, sa_episode)
        return batch


class CentralizedGAE(ConnectorV2):
    """Reward GAE from the centralized critic and cost GAE from each agent's cost critic; builds the critic batch.

    Runs last, on the tensor batch. Requires every agent to act on every env step, so that the rows of all agent
    modules line up (same episodes, same order, same lengths); this is checked. Writes into every agent's batch:
    ``advantages`` (team reward advantage, standardised over valid rows), ``value_targets``, ``cost_advantages``
    ``(N, m)`` (standardised, or centred only) and ``cost_value_targets``; and adds the critic's own batch under
    :data:`~rllib_safe.core.columns.CRITIC_ID` with normalised targets (the normalisers are updated first, each
    with its own targets).

    Args:
        gamma: Reward discount. lambda_: Reward GAE λ.
        cost_gamma: Cost discount. cost_lambda: Cost GAE λ.
        cost_advantage_normalization: ``"standardize"`` or ``"center"``.
    """

    def __init__(
        self,
        input_observation_space=None,
        input_action_space=None,
        *,
        gamma: float,
        lambda_: float,
        cost_gamma: float,
        cost_lambda: float,
        cost_advantage_normalization: str = "standardize",
        **kwargs,
    ):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.gamma, self.lambda_ = gamma, lambda_
        self.cost_gamma, self.cost_lambda = cost_gamma, cost_lambda
        self.center_costs = cost_advantage_normalization == "center"

    def __call__(self, *, rl_module, batch: dict[str, Any], episodes: list, **kwargs) -> Any:
        """Computes both GAEs and writes the columns (see the class docstring)."""
        critic = rl_module[CRITIC_ID].unwrapped()
        agents = [aid for aid in critic.agent_ids if aid in batch]
        missing = set(critic.agent_ids) - set(agents)
        if missing:
            raise ValueError(f"The train batch has no rows for agents {sorted(missing)}; every agent must act.")
        first = batch[agents[0]]
        n = len(first[Columns.REWARDS])
        for aid in agents[1:]:
            if len(batch[aid][Columns.REWARDS]) != n:
                raise ValueError("Agent batches are not aligned by env step (different lengths); every agent must act.")
        device = first[Columns.REWARDS].device
        to_np = lambda x: x.detach().cpu().numpy()  # noqa: E731

        state = first[SafeColumns.STATE]
        rewards = to_np(first[Columns.REWARDS])
        for aid in agents[1:]:
            if not np.array_equal(to_np(batch[aid][Columns.REWARDS]), rewards):
                raise ValueError("The centralized reward critic needs a team reward (the same reward for every agent).")
        terminateds, truncateds = to_np(first[Columns.TERMINATEDS]), to_np(first[Columns.TRUNCATEDS])
        mask = to_np(first[Columns.LOSS_MASK]).astype(bool)
        values, cost_values = critic.raw_values(state)
        values = to_np(values)

        value_targets = gae(values, rewards, terminateds, truncateds, self.gamma, self.lambda_)
        advantages = standardize(value_targets - values, mask)
        critic_batch = {SafeColumns.STATE: state, Columns.LOSS_MASK: first[Columns.LOSS_MASK]}
        tensor = lambda x: torch.as_tensor(x, device=device)  # noqa: E731
        if critic.use_value_norm:
            critic.value_norm.update(tensor(value_targets[mask]).unsqueeze(-1))
            critic_batch[Columns.VALUE_TARGETS] = critic.value_norm.normalize(tensor(value_targets).unsqueeze(-1))[:, 0]
        else:
            critic_batch[Columns.VALUE_TARGETS] = tensor(value_targets)

        for aid in agents:
            costs = to_np(batch[aid][SafeColumns.COSTS]).reshape(n, -1)
            cost_v = to_np(cost_values[aid])
            cost_targets = gae(cost_v, costs, terminateds, truncateds, self.cost_gamma, self.cost_lambda)
            cost_advantages = standardize(cost_targets - cost_v, mask, center_only=self.center_costs)
            batch[aid][Columns.ADVANTAGES] = tensor(advantages)
            batch[aid][Columns.VALUE_TARGETS] = tensor(value_targets)
            batch[aid][SafeColumns.COST_ADVANTAGES] = tensor(cost_advantages)
            batch[aid][SafeColumns.COST_VALUE_TARGETS] = tensor(cost_targets)
            key = f"{SafeColumns.COST_VALUE_TARGETS}/{aid}"
            if critic.use_value_norm:
                critic.cost_value_norm[aid].update(tensor(cost_targets[mask]))
                critic_batch[key] = critic.cost_value_norm[aid].normalize(tensor(cost_targets))
            else:
                critic_batch[key] = tensor(cost_targets)
        batch[CRITIC_ID] = critic_batch
        return batch
