"""Joint-transition replay for centralized off-policy critics (HASAC, Constrained-HASAC, WCMASAC).

One row is one env step of the whole team: every agent's observation and action, the global state, the team reward,
the team costs (``m`` of them), ``terminated`` and ``truncated`` (separately), and the next observations and next
state. A sampled minibatch is therefore aligned across agents by construction: row ``k`` of ``obs/agent_0`` and row
``k`` of ``obs/agent_1`` are the same env step.

Why a buffer of our own rather than RLlib's: ``MultiAgentEpisodeReplayBuffer`` samples each module's agent steps
independently in its "independent" mode (SAC/DQN use it), so rows of different agents do not come from the same env
step, which breaks a joint critic Q(s, a_1..a_n); its "synchronized" mode returns per-module dicts without the global
state, the costs or separate termination/truncation flags, and is not wired into RLlib's off-policy training step
(``notes/rllib_new_stack.md`` §2.6). A flat, preallocated table of joint rows is also what HARL uses
(``harl/common/buffers/off_policy_buffer_ep.py``): sampling is a handful of numpy gathers, the memory is
``capacity × row size`` (pages are only touched when written), and the state pickles into a checkpoint. It lives here,
next to where RLlib keeps its buffers (``ray.rllib.utils.replay_buffers``), because it depends on nothing above
RLlib's episodes: any off-policy algorithm of the package can use it.

Costs and rewards: a row's ``reward`` and ``costs`` are the means over agents of ``rewards[agent][t]`` and
``infos[agent][t + 1]["cost"]`` (the cost of transition t is in the info returned by step t, the package's
convention). Every task here gives the team reward and the team cost to every agent, so the mean is that team value,
on the scale of the cost limit (never an n-fold sum). The state of row t is ``infos[agent][t]["state"]`` and its next
state ``infos[agent][t + 1]["state"]``.

Episodes arrive as the chunks RLlib's EnvRunners return. Rows of one chunk are written in order; the chunk that
continues an episode (same id, starting where the last one ended) is linked to it, so n-step windows run across chunk
(and iteration) boundaries. Each position remembers the global insertion id of its row and the id of the same
episode's next row; a link whose row has been overwritten (ring buffer) no longer matches and ends the window.

n-step returns (HARL ``OffPolicyBufferEP.sample``; default ``n_step`` 20 in HARL's ``hasac.yaml``): from a sampled
row t the window runs over t, t+1, ..., t+n−1 and stops early after a terminated or truncated transition, or at the
newest stored step of an episode that is still running. With k the number of steps taken::

    reward_n = Σ_{j<k} γ^j r_{t+j}     costs_n = Σ_{j<k} γ_c^j c_{t+j}     discount = γ^k     cost_discount = γ_c^k
    next_state, next_obs = those after step t+k−1     terminated = terminated_{t+k−1}

so a target ``reward_n + discount · (1 − terminated) · V(next_state)`` bootstraps after a truncation (the time limit
is not a terminal state) and does not after a termination.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def joint_transitions(episode: Any, agent_ids: list[str]) -> dict[str, np.ndarray] | None:
    """The joint rows of one ``MultiAgentEpisode`` chunk (None for an empty chunk).

    Args:
        episode: A ``MultiAgentEpisode`` (a chunk returned by an EnvRunner).
        agent_ids: The agents, in the task's order.

    Returns:
        Columns of length L (the chunk's env steps): ``obs/<agent>``, ``next_obs/<agent>``, ``actions/<agent>``,
        ``state``, ``next_state``, ``reward``, ``costs`` (L, m), ``terminated``, ``truncated``.

    Raises:
        ValueError: If an agent did not act at every env step of the chunk, or a value is NaN/inf (naming it).
    """
    length = len(episode)
    if length == 0:
        return None
    rows: dict[str, np.ndarray] = {}
    rewards, costs = [], []
    for aid in agent_ids:
        sa = episode.agent_episodes.get(aid)
        if sa is None or len(sa) != length:
            raise ValueError(
                f"Joint replay needs every agent to act at every env step: agent {aid!r} has "
                f"{0 if sa is None else len(sa)} of the {length} steps of episode {episode.id_}."
            )
        obs = np.asarray(sa.get_observations(), dtype=np.float32)
        infos = sa.get_infos()
        rows[f"obs/{aid}"], rows[f"next_obs/{aid}"] = obs[:-1], obs[1:]
        rows[f"actions/{aid}"] = np.asarray(sa.get_actions(), dtype=np.float32).reshape(length, -1)
        rewards.append(np.asarray(sa.get_rewards(), dtype=np.float64))
        costs.append(np.stack([np.atleast_1d(np.asarray(info["cost"], dtype=np.float64)) for info in infos[1:]]))
        if aid == agent_ids[0]:
            states = np.stack([np.asarray(info["state"], dtype=np.float32) for info in infos])
            rows["state"], rows["next_state"] = states[:-1], states[1:]
    rows["reward"] = np.mean(rewards, axis=0)
    rows["costs"] = np.mean(costs, axis=0)
    rows["terminated"] = np.zeros(length, dtype=bool)
    rows["truncated"] = np.zeros(length, dtype=bool)
    rows["terminated"][-1] = bool(episode.is_terminated)
    rows["truncated"][-1] = bool(episode.is_truncated) and not episode.is_terminated
    for key, value in rows.items():
        if value.dtype != bool and not np.all(np.isfinite(value)):
            raise ValueError(f"Non-finite value in column {key!r} of episode {episode.id_} (joint replay).")
    return rows


class JointReplayBuffer:
    """A ring buffer of joint transitions with aligned, n-step minibatches (see the module docstring).

    Args:
        capacity: Maximum number of rows (env steps); the oldest are overwritten.
        agent_ids: The agents, in the task's order.
        observation_dims: ``{agent: flat observation size}``.
        action_dims: ``{agent: flat action size}``.
        state_dim: Flat size of the global state.
        num_costs: m, the number of cost indices.
        seed: Seed of the sampling RNG (its state is part of :meth:`state_dict`).
    """

    def __init__(
        self,
        capacity: int,
        *,
        agent_ids: list[str],
        observation_dims: dict[str, int],
        action_dims: dict[str, int],
        state_dim: int,
        num_costs: int = 1,
        seed: int | None = None,
    ) -> None:
        if not (isinstance(capacity, int) and capacity >= 1):
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}.")
        self.capacity = capacity
        self.agent_ids = list(agent_ids)
        self.num_costs = num_costs
        shapes: dict[str, tuple[tuple[int, ...], Any]] = {
            "state": ((state_dim,), np.float32),
            "next_state": ((state_dim,), np.float32),
            "reward": ((), np.float32),
            "costs": ((num_costs,), np.float32),
            "terminated": ((), bool),
            "truncated": ((), bool),
        }
        for aid in self.agent_ids:
            shapes[f"obs/{aid}"] = ((observation_dims[aid],), np.float32)
            shapes[f"next_obs/{aid}"] = ((observation_dims[aid],), np.float32)
            shapes[f"actions/{aid}"] = ((action_dims[aid],), np.float32)
        # np.zeros maps untouched pages lazily: a large capacity costs memory only as rows are written.
        self._columns = {k: np.zeros((capacity, *shape), dtype=dtype) for k, (shape, dtype) in shapes.items()}
        self._row_id = np.full(capacity, -1, dtype=np.int64)  # global insertion id of the row at each position
        self._next_id = np.full(capacity, -1, dtype=np.int64)  # global id of the episode's next row (-1: none yet)
        self._num_added = 0
        self._open: dict[str, tuple[int, int]] = {}  # running episode id -> (id of its newest row, env_t there)
        self._rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return min(self._num_added, self.capacity)

    @property
    def num_added(self) -> int:
        """Rows added since creation (lifetime)."""
        return self._num_added

    @property
    def row_nbytes(self) -> int:
        """Bytes per stored row (all columns plus the two link arrays)."""
        return sum(v[0].nbytes for v in self._columns.values()) + 16

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored rows (what a checkpoint with the buffer adds, before pickling overhead)."""
        return self.row_nbytes * len(self)

    # ------------------------------------------------------------------------------------------------------------
    def add_episodes(self, episodes: list) -> int:
        """Appends the joint rows of RLlib episode chunks (in order); returns the number of rows added."""
        carried, self._open = self._open, {}
        added = 0
        for episode in episodes:
            rows = joint_transitions(episode, self.agent_ids)
            if rows is None:
                continue
            first_id = self._write(rows)
            previous = self._open.pop(episode.id_, None) or carried.pop(episode.id_, None)
            if previous is not None and previous[1] == episode.env_t_started:
                self._link(previous[0], first_id)
            length = len(rows["reward"])
            if not episode.is_done:
                self._open[episode.id_] = (first_id + length - 1, episode.env_t_started + length)
            added += length
        return added

    def add(self, rows: dict[str, np.ndarray]) -> int:
        """Appends consecutive rows of one episode (columns as in :func:`joint_transitions`); returns the first id."""
        return self._write(rows)

    def _write(self, rows: dict[str, np.ndarray]) -> int:
        length = len(rows["reward"])
        if length > self.capacity:  # only the newest `capacity` rows can be kept
            self._num_added += length - self.capacity
            rows = {k: v[-self.capacity :] for k, v in rows.items()}
            length = self.capacity
        ids = self._num_added + np.arange(length, dtype=np.int64)
        positions = ids % self.capacity
        for key, column in self._columns.items():
            column[positions] = rows[key]
        self._row_id[positions] = ids
        self._next_id[positions[:-1]] = ids[1:]
        self._next_id[positions[-1]] = -1
        self._num_added += length
        return int(ids[0])

    def _link(self, previous_id: int, next_id: int) -> None:
        position = previous_id % self.capacity
        if self._row_id[position] == previous_id:
            self._next_id[position] = next_id

    # ------------------------------------------------------------------------------------------------------------
    def sample(
        self, batch_size: int, *, n_step: int = 1, gamma: float = 0.99, cost_gamma: float | None = None
    ) -> dict[str, np.ndarray]:
        """A minibatch of ``batch_size`` distinct rows with n-step returns (see the module docstring).

        Returns:
            ``state``, ``obs/<agent>``, ``actions/<agent>`` (row t); ``reward``, ``costs`` (n-step sums);
            ``next_state``, ``next_obs/<agent>``, ``terminated`` (after the window's last step, as float32);
            ``discount`` (γ^k), ``cost_discount`` (γ_c^k), ``n_steps`` (k).
        """
        size = len(self)
        if not 1 <= batch_size <= size:
            raise ValueError(f"Cannot sample {batch_size} distinct rows from a replay buffer holding {size}.")
        cost_gamma = gamma if cost_gamma is None else cost_gamma
        col = self._columns
        rows = self._rng.choice(size, batch_size, replace=False)  # HARL: distinct rows within a minibatch
        last = rows.copy()
        reward = col["reward"][rows].astype(np.float64)
        costs = col["costs"][rows].astype(np.float64)
        steps = np.ones(batch_size, dtype=np.int64)
        stop = col["terminated"][rows] | col["truncated"][rows]
        for k in range(1, n_step):
            next_id = self._next_id[last]
            position = next_id % self.capacity
            ok = ~stop & (next_id >= 0) & (self._row_id[position] == next_id)
            if not ok.any():
                break
            last = np.where(ok, position, last)
            reward += np.where(ok, gamma**k * col["reward"][last], 0.0)
            costs += np.where(ok[:, None], cost_gamma**k * col["costs"][last], 0.0)
            steps += ok
            stop |= ~ok | col["terminated"][last] | col["truncated"][last]
        batch = {"state": col["state"][rows], "next_state": col["next_state"][last]}
        for aid in self.agent_ids:
            batch[f"obs/{aid}"] = col[f"obs/{aid}"][rows]
            batch[f"actions/{aid}"] = col[f"actions/{aid}"][rows]
            batch[f"next_obs/{aid}"] = col[f"next_obs/{aid}"][last]
        batch["reward"] = reward.astype(np.float32)
        batch["costs"] = costs.astype(np.float32)
        batch["terminated"] = col["terminated"][last].astype(np.float32)
        batch["discount"] = (gamma**steps).astype(np.float32)
        batch["cost_discount"] = (cost_gamma**steps).astype(np.float32)
        batch["n_steps"] = steps
        return batch

    # ------------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: the stored rows, their links, the open episodes and the RNG."""
        size = len(self)
        return {
            "capacity": self.capacity,
            "num_added": self._num_added,
            "columns": {k: v[:size] for k, v in self._columns.items()},
            "row_id": self._row_id[:size],
            "next_id": self._next_id[:size],
            "open": dict(self._open),
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict` (the capacity and the column layout must match)."""
        if state["capacity"] != self.capacity or set(state["columns"]) != set(self._columns):
            raise ValueError(
                f"Replay buffer state does not fit this buffer (capacity {state['capacity']} vs {self.capacity}, "
                f"columns {sorted(state['columns'])} vs {sorted(self._columns)})."
            )
        size = len(state["row_id"])
        for key, column in self._columns.items():
            column[:size] = state["columns"][key]
        self._row_id[:size] = state["row_id"]
        self._next_id[:size] = state["next_id"]
        self._num_added = int(state["num_added"])
        self._open = dict(state["open"])
        self._rng.bit_generator.state = state["rng"]
