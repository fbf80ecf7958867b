"""Multi-agent EnvRunners for lock-step tasks that sample at the simulator's speed.

RLlib's :class:`~ray.rllib.env.multi_agent_env_runner.MultiAgentEnvRunner` pays per step, per agent and per env for its
generality: two connector pipelines, a module forward per step, a ``MultiAgentEpisode.add_env_step`` per env, a dozen
``MetricsLogger`` calls and a deep copy of every observation. In a lock-step task (every agent acts on every step, the
episode ends for all agents at once — every rllib_safe task) all of that can be batched.
:class:`LockstepMultiAgentEnvRunner` is a ``MultiAgentEnvRunner`` whose sampling loop

* keeps every agent's observations, actions, rewards and model outputs in preallocated numpy rows (row ``k`` = vector
  step ``k`` of this ``sample()`` call, one column per env; :mod:`rllib_safe.env_runners.rows`),
* runs one batched forward pass per agent module per step and draws the actions in torch as RLlib's ``GetActions``
  does, writing them straight into the envs (:mod:`rllib_safe.env_runners.actions`),
* builds each episode chunk in bulk from those rows when it ends or when ``sample()`` returns,
* logs the step counters once per ``sample()`` call instead of once per env step.

Everything downstream sees what the stock runner produces: the same ``MultiAgentEpisode`` chunks (observations,
actions, ``action_logp``, ``action_dist_inputs``, ``weights_seq_no``, rewards, infos, terminated/truncated flags,
lookback buffers and chunk cuts), the same callbacks (``on_episode_created/start/end``, ``on_sample_end``), the same
episode metrics, state, weight sync and checkpoints (it *is* a ``MultiAgentEnvRunner``; only ``_sample`` and
``_reset_envs`` differ). With the same seeds it returns bitwise the same episodes (with one module per agent): it
keeps the stock runner's schedule (an env that finished sits out the next vector step while it resets), its order of
drawing the modules' actions from torch's RNG, and the seeding of ``reset`` (``_seed`` on the first reset after
``_needs_initial_reset``, which ``SequentialAlgorithm.reseed_env_runners`` sets).

:class:`FusedLockstepEnvRunner` (the default of rllib_safe's on-policy configs) also runs the agents whose actors
have the same layers as one stacked batch in numpy: the per-step cost of the policy no longer grows with the number of
agents. Same episodes in layout and distribution, not bitwise (see
:class:`~rllib_safe.env_runners.actions.FusedPolicy`), and reproducible across processes: RLlib's runner (and so the
bitwise lock-step runner) draws the agents' actions in the order of a Python set, which ``PYTHONHASHSEED`` changes
from one process to the next; the fused runner draws them in the env's order of agents.

How to use them::

    config.env_runners(env_runner_cls=FusedLockstepEnvRunner)         # rllib_safe's on-policy configs: the default
    config.env_runners(env_runner_cls=LockstepMultiAgentEnvRunner)    # bitwise RLlib's episodes
    config.env_runners(env_runner_cls=MultiAgentEnvRunner)            # RLlib's stock runner

Limits (checked by :func:`check_lockstep_config` and at run time, each with a ``ValueError`` that names the fallback):
RLlib's default connector pipelines only (no custom env-to-module / module-to-env pieces), stateless modules,
synchronous vectorisation, numpy episodes, and every agent acting on every step. An ``on_episode_step`` callback is
supported: the runner then also appends every step to its episode as the stock runner does (slower, still with
batched forwards).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core.columns import Columns
from ray.rllib.env.env_errors import StepFailedRecreateEnvError
from ray.rllib.env.env_runner import ENV_STEP_FAILURE, NUM_ENV_STEP_FAILURES_LIFETIME
from ray.rllib.env.env_runner import logger as rllib_logger
from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner
from ray.rllib.env.multi_agent_episode import MultiAgentEpisode
from ray.rllib.utils.metrics import (
    ENV_STEP_TIMER,
    NUM_AGENT_STEPS_SAMPLED,
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_SAMPLED,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_EPISODES,
    NUM_EPISODES_LIFETIME,
    NUM_MODULE_STEPS_SAMPLED,
    NUM_MODULE_STEPS_SAMPLED_LIFETIME,
    RLMODULE_INFERENCE_TIMER,
    WEIGHTS_SEQ_NO,
)

from rllib_safe.env_runners.actions import FusedPolicy, ModulePolicy, env_action_fn, group_env_action_fn
from rllib_safe.env_runners.rows import Rows, extend_buffer

#: What to use instead when the lock-step runner does not apply.
FALLBACK = "use RLlib's runner: config.env_runners(env_runner_cls=MultiAgentEnvRunner)"


def check_lockstep_config(config: Any) -> None:
    """Raises ``ValueError`` naming the field if ``config`` asks for something the lock-step runner does not do.

    Args:
        config: An ``AlgorithmConfig``.
    """
    if not config.is_multi_agent:
        raise ValueError(
            f"LockstepMultiAgentEnvRunner needs a multi-agent config (`config.multi_agent(...)`); {FALLBACK}."
        )
    mode = config.gym_env_vectorize_mode
    if str(getattr(mode, "value", mode)).lower() != "sync":
        raise ValueError(
            f"LockstepMultiAgentEnvRunner steps its envs in-process: `gym_env_vectorize_mode` must be 'sync', got "
            f"{mode!r}; or {FALLBACK}."
        )
    for field in ("_env_to_module_connector", "_module_to_env_connector"):
        if getattr(config, field, None) is not None:
            raise ValueError(
                f"LockstepMultiAgentEnvRunner runs no connector pipelines: `{field.lstrip('_')}` must be None; "
                f"{FALLBACK}."
            )
    for field in (
        "add_default_connectors_to_env_to_module_pipeline",
        "add_default_connectors_to_module_to_env_pipeline",
    ):
        if not getattr(config, field, True):
            raise ValueError(
                f"LockstepMultiAgentEnvRunner does what RLlib's default pipelines do: `{field}` must be True."
            )
    if not config.episodes_to_numpy:
        raise ValueError(
            f"LockstepMultiAgentEnvRunner returns numpy episodes: `episodes_to_numpy` must be True; {FALLBACK}."
        )


def needs_step_episodes(callbacks: list, config: Any) -> bool:
    """Whether a callback reads the episode on every step (``on_episode_step``).

    Then the runner appends every step to its episode, as RLlib's runner does, instead of building episodes in bulk.
    """
    if config.callbacks_on_episode_step:
        return True
    return any(type(cb).on_episode_step is not RLlibCallback.on_episode_step for cb in callbacks)


class LockstepMultiAgentEnvRunner(MultiAgentEnvRunner):
    """RLlib's multi-agent EnvRunner with a batched sampling loop for lock-step tasks (see the module docstring)."""

    #: Run agents whose actor modules have the same layers as one stacked batch (:class:`FusedLockstepEnvRunner`).
    fuse_agents: bool = False

    def __init__(self, config: Any, **kwargs: Any) -> None:
        """Checks the config, then builds RLlib's runner (envs, module, connectors, callbacks) unchanged."""
        check_lockstep_config(config)
        self._rows: Rows | None = None
        self._row = 0  # the row that holds the envs' current observations
        self._chunk_start = np.zeros(0, dtype=np.int64)  # per env: row of its episode chunk's last stored observation
        self._pending_reset = np.zeros(0, dtype=bool)  # per env: episode ended, the env resets on the next step
        self._info_rows: list[list[dict]] = []  # per env: the infos returned since the chunk's start row
        self._first_step_time: list[float | None] = []
        self._agents: list[str] = []  # agents in the order in which RLlib's runner draws their actions
        self._done_flags_cache: dict = {}
        self._fused: dict = {}
        self._step_time: float | None = None
        super().__init__(config=config, **kwargs)
        self._step_episodes = needs_step_episodes(self._callbacks, self.config)
        if self.module is not None:
            for mid, module in self.module._rl_modules.items():
                if module.is_stateful():
                    raise ValueError(
                        f"LockstepMultiAgentEnvRunner needs stateless modules; {mid!r} is stateful; {FALLBACK}."
                    )

    # ----------------------------------------------------------------------------------------------------------------
    # Sampling loop.
    # ----------------------------------------------------------------------------------------------------------------
    def _sample(
        self,
        *,
        num_timesteps: int | None = None,
        num_episodes: int | None = None,
        explore: bool,
        random_actions: bool = False,
        force_reset: bool = False,
    ) -> list[MultiAgentEpisode]:
        done_episodes: list[MultiAgentEpisode] = []
        env_ts = agent_ts = eps = 0
        stepped = vector_steps = num_done = 0
        env_time = inference_time = 0.0

        if force_reset or num_episodes is not None or self._needs_initial_reset:
            self._reset_envs_and_episodes(explore)
        if num_episodes is not None:
            self._needs_initial_reset = True
        count_agent_steps = self.config.count_steps_by != "env_steps"
        policy = None if random_actions else self._policy(explore)
        self._rows.begin_call()
        num_runners = self.config.num_env_runners or 1

        with torch.inference_mode():
            while (
                (eps < num_episodes)
                if num_timesteps is None
                else ((agent_ts if count_agent_steps else env_ts) < num_timesteps)
            ):
                k = self._row + 1
                self._rows.ensure(k)
                acting = np.flatnonzero(~self._pending_reset)
                tic = time.perf_counter()
                if random_actions:
                    actions = self._random_actions(k, acting)
                elif len(acting) == 0:  # every env resets on this step
                    actions = []
                else:
                    t = (self.num_env_steps_sampled_lifetime // num_runners + env_ts) * num_runners
                    actions = self._policy_actions(k, acting, policy, explore, t)
                toc = time.perf_counter()
                results = self._try_step_envs(k, actions)
                env_time += time.perf_counter() - toc
                inference_time += toc - tic
                vector_steps += 1
                if results == ENV_STEP_FAILURE:
                    env_ts = agent_ts = 0
                    self._reset_envs_and_episodes(explore)
                    continue
                reset_envs, done_envs = results
                self._row = k
                env_ts += len(acting)
                agent_ts += len(acting) * len(self._agents)
                stepped += len(acting)

                # Callbacks in RLlib's order: start (just reset) or step, then end for the finished episodes.
                for i in range(self.num_envs):
                    if i in reset_envs:
                        self._make_on_episode_callback("on_episode_start", i, self._ongoing_episodes)
                    elif self._step_episodes:
                        self._make_on_episode_callback("on_episode_step", i, self._ongoing_episodes)
                    if i not in done_envs:
                        continue
                    eps += 1
                    num_done += 1
                    episode = self._ongoing_episodes[i]
                    if not self._step_episodes:
                        self._write_chunk(episode, i, k, final=done_envs[i])
                    self._make_on_episode_callback("on_episode_end", i, self._ongoing_episodes)
                    self._prune_zero_len_sa_episodes(episode)
                    done_episodes.append(episode.to_numpy())
                    self._new_episode(i, self._ongoing_episodes)
                    self._pending_reset[i] = True
                    if num_episodes is not None and eps >= num_episodes:
                        break

        self._done_episodes_for_metrics.extend(done_episodes)
        ongoing = self._finish_ongoing_chunks(k=self._row) if num_timesteps is not None else []
        self._start_rows_for_next_call()
        self._log_counts(stepped, num_done, vector_steps, env_time, inference_time)
        return done_episodes + ongoing

    def _finish_ongoing_chunks(self, k: int) -> list[MultiAgentEpisode]:
        """Writes the rows of every unfinished episode into its chunk and cuts it; returns the chunks with steps.

        The successor chunks come from RLlib's ``MultiAgentEpisode.cut`` (with ``episode_lookback_horizon``).
        """
        returned = []
        continuations = []
        for i, episode in enumerate(self._ongoing_episodes):
            if not self._step_episodes and not self._pending_reset[i]:
                self._write_chunk(episode, i, k)
            continuations.append(episode.cut(len_lookback_buffer=self.config.episode_lookback_horizon))
            if episode.env_t == 0:
                continue
            episode.validate()
            self._ongoing_episodes_for_metrics[episode.id_].append(episode)
            self._prune_zero_len_sa_episodes(episode)
            returned.append(episode.to_numpy())
        self._ongoing_episodes = continuations
        return returned

    def _start_rows_for_next_call(self) -> None:
        """Row 0 of the next ``sample()`` call holds the envs' current observations."""
        if self._rows is not None and self._row > 0:
            self._rows.move_row(self._row, 0)
        self._row = 0
        self._chunk_start[:] = 0
        for rows in self._info_rows:
            rows.clear()
        self._first_step_time = [None] * self.num_envs

    # ----------------------------------------------------------------------------------------------------------------
    # Actions.
    # ----------------------------------------------------------------------------------------------------------------
    def _policy(self, explore: bool) -> list:
        """How the agents act in this call.

        One :class:`ModulePolicy` per agent, in the order in which RLlib's runner draws the agents' actions, or (with
        ``fuse_agents``) one :class:`FusedPolicy` per group of agents with the same actor layers.
        """
        episode = self._ongoing_episodes[0]
        modules, spaces = {}, self.env.single_action_spaces
        for aid in self._agents:
            mid = (
                episode.module_for(aid)
                if aid in episode.agent_episodes
                else self.config.policy_mapping_fn(aid, episode)
            )
            modules[aid] = self.module[mid]
            if modules[aid].training:
                modules[aid].eval()  # what RLModule.forward_exploration/inference do around each of their calls
        normalize, clip = self.config.normalize_actions, self.config.clip_actions
        groups = self._rows.groups if self.fuse_agents else [[aid] for aid in self._agents]
        noise = None
        if any(len(group) > 1 for group in groups):  # the fused groups' noise for this call, seeded by torch's RNG
            noise = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        units = []
        for block, group in enumerate(groups):
            if len(group) == 1:
                (aid,) = group
                units.append(ModulePolicy(aid, modules[aid], explore, env_action_fn(spaces[aid], normalize, clip)))
                continue
            cache_key = (tuple(group), explore, tuple(id(modules[aid]) for aid in group))
            if cache_key not in self._fused:  # keeps the stacked weights between calls
                to_env = group_env_action_fn([spaces[a] for a in group], normalize, clip)
                self._fused[cache_key] = FusedPolicy(group, [modules[a] for a in group], block, explore, to_env)
            self._fused[cache_key].refresh(noise, probe=self._rows.blocks[block][self._row])
            units.append(self._fused[cache_key])
        return units

    def _groups(self, first_obs: dict, episode: MultiAgentEpisode) -> list[list[str]] | None:
        """With ``fuse_agents``: the groups of agents with the same actor layers and 1-D observations of one dtype."""
        if not self.fuse_agents or self.module is None:
            return None
        groups: dict = {}
        for aid in first_obs:
            module = self.module[episode.module_for(aid)]
            obs = np.asarray(first_obs[aid])
            signature = FusedPolicy.signature(module)
            key = (signature, obs.dtype, obs.ndim) if signature is not None and obs.ndim == 1 else ("alone", aid)
            groups.setdefault(key, []).append(aid)
        return list(groups.values())

    def _policy_actions(self, k: int, acting: np.ndarray, policy: list, explore: bool, t: int) -> list[dict]:
        """Computes the actions of row ``k`` from the observations in row ``k - 1``.

        One batched forward pass per agent module (or agent group) over the acting envs, actions drawn as RLlib's
        ``GetActions`` draws them; actions and model outputs go into row ``k``. Returns each acting env's action dict.
        """
        everyone = len(acting) == self.num_envs
        env_actions = {}
        for unit in policy:
            env_actions.update(unit.act(self._rows, k, acting, everyone, self._device, t))
        return [{aid: env_actions[aid][j] for aid in self._agents} for j in range(len(acting))]

    def _random_actions(self, k: int, acting: np.ndarray) -> list[dict]:
        """Random actions from each agent's action space, as RLlib's runner draws them (no model outputs)."""
        actions = []
        for i in acting:
            env = self.env.envs[i].unwrapped
            act = {aid: env.get_action_space(aid).sample() for aid in self._ongoing_episodes[i].get_agents_to_act()}
            for aid, a in act.items():
                self._rows.write_one(aid, Columns.ACTIONS, k, i, np.asarray(a))
            actions.append(act)
        return actions

    # ----------------------------------------------------------------------------------------------------------------
    # Env steps.
    # ----------------------------------------------------------------------------------------------------------------
    def _try_step_envs(self, k: int, actions: list[dict]) -> Any:
        """Steps (or, after an episode end, resets) every env once; RLlib's error handling (``_try_env_step``)."""
        try:
            return self._step_envs(k, actions)
        except LockstepError:
            raise
        except Exception as e:
            self.metrics.log_value(NUM_ENV_STEP_FAILURES_LIFETIME, 1, reduce="lifetime_sum")
            if self.config.restart_failed_sub_environments:
                if not isinstance(e, StepFailedRecreateEnvError):
                    rllib_logger.exception(
                        f"RLlib {type(self).__name__}: Environment step failed. Will force reset env(s) in this "
                        f"EnvRunner. The original error is: {e}"
                    )
                self.make_env()
                return ENV_STEP_FAILURE
            rllib_logger.exception(
                f"RLlib {type(self).__name__}: Environment step failed and 'config.restart_failed_sub_environments' "
                f"is False. The original error type: {type(e)}. {e}"
            )
            raise RuntimeError from e

    def _step_envs(self, k: int, actions: list[dict]) -> tuple[set, dict]:
        """Returns the envs that were reset and ``{env: (terminateds, truncateds)}`` of the episodes that ended."""
        rows = self._rows
        agents = self._agents
        obs_rows = [rows.obs[aid][k] for aid in agents]
        reward_rows = [rows.rewards[aid][k] for aid in agents]
        reset_envs, done_envs = set(), {}
        now = time.perf_counter()
        j = 0
        for i, env in enumerate(self.env.envs):
            if self._pending_reset[i]:
                obs, infos = env.reset()
                self._write_reset(i, k, obs, infos)
                reset_envs.add(i)
                continue
            action = actions[j]
            j += 1
            obs, rewards, terminateds, truncateds, infos = env.step(action)
            try:
                for a, aid in enumerate(agents):
                    obs_rows[a][i] = obs[aid]
                    reward_rows[a][i] = rewards[aid]
            except KeyError as e:
                raise LockstepError(f"agent {e} has no observation or reward after a step of env {i}") from None
            if len(obs) != len(agents):
                raise LockstepError(f"env {i} returned observations for {sorted(obs)}, expected {sorted(agents)}")
            self._info_rows[i].append(infos)
            if self._first_step_time[i] is None:
                self._first_step_time[i] = now
            if terminateds["__all__"] or truncateds.get("__all__", False):
                done_envs[i] = (terminateds, truncateds)
            elif True in terminateds.values() or True in truncateds.values():
                raise LockstepError(
                    f"an agent of env {i} is done while the episode goes on: {terminateds} {truncateds}"
                )
            if self._step_episodes:
                self._append_step(i, k, action, obs, rewards, terminateds, truncateds, infos)
        self._step_time = now
        return reset_envs, done_envs

    def _append_step(self, i, k, action, obs, rewards, terminateds, truncateds, infos) -> None:
        """``on_episode_step`` mode: appends the step to the episode exactly as RLlib's runner does."""
        rows = self._rows
        extra = {}
        for aid in self._agents:
            extra[aid] = {}
            for key in rows.keys(aid):
                if key != Columns.ACTIONS:
                    extra[aid][key] = np.copy(rows.column(aid, key)[k, i])
                    extra[aid][WEIGHTS_SEQ_NO] = self._weights_seq_no
        self._ongoing_episodes[i].add_env_step(
            observations={aid: np.copy(rows.obs[aid][k, i]) for aid in self._agents},
            actions={aid: np.copy(rows.column(aid, Columns.ACTIONS)[k, i]) for aid in self._agents},
            rewards=rewards,
            infos=infos,
            terminateds=terminateds,
            truncateds=truncateds,
            extra_model_outputs={aid: e for aid, e in extra.items() if e},
        )

    # ----------------------------------------------------------------------------------------------------------------
    # Resets.
    # ----------------------------------------------------------------------------------------------------------------
    def _reset_envs(self, episodes: list, shared_data: dict, explore: bool) -> None:
        """RLlib's reset of all envs (seeded with ``_seed`` after ``_needs_initial_reset``), without the connector."""
        for i in range(self.num_envs):
            self._new_episode(i, episodes)
        self._ongoing_episodes_for_metrics.clear()
        observations, infos = self._try_env_reset(seed=self._seed if self._needs_initial_reset else None, options=None)
        if self._rows is None or len(self._pending_reset) != self.num_envs:
            self._setup_rows(observations, episodes[0])
        self._pending_reset[:] = False
        for i in range(self.num_envs):
            episodes[i].add_env_reset(observations=observations[i], infos=infos[i])
            self._write_reset(i, self._row, observations[i], infos[i], episode=episodes[i])
        self._agents = self._rng_order(episodes[0])
        self._cached_to_module = None
        for i in range(self.num_envs):
            self._make_on_episode_callback("on_episode_start", i, episodes)

    def _write_reset(self, i: int, k: int, obs: dict, infos: dict, episode: MultiAgentEpisode | None = None) -> None:
        """Stores the reset observations of env ``i`` in row ``k``, where its new episode chunk starts."""
        if episode is None:  # an env that reset inside the loop: its new episode is empty until now
            episode = self._ongoing_episodes[i]
            episode.add_env_reset(observations=obs, infos=infos)
        for aid in self._agents or obs:
            self._rows.obs[aid][k, i] = obs[aid]
        self._pending_reset[i] = False
        self._chunk_start[i] = k
        self._info_rows[i].clear()
        self._first_step_time[i] = None

    def _setup_rows(self, observations: list[dict], episode: MultiAgentEpisode) -> None:
        n = self.num_envs
        first = observations[0]
        capacity = max(8, self.config.get_rollout_fragment_length(self.worker_index or 0) + 2)
        first = {aid: np.asarray(o) for aid, o in first.items()}
        self._rows = Rows(first, num_envs=n, capacity=capacity, groups=self._groups(first, episode))
        self._row = 0
        self._chunk_start = np.zeros(n, dtype=np.int64)
        self._pending_reset = np.zeros(n, dtype=bool)
        self._info_rows = [[] for _ in range(n)]
        self._first_step_time = [None] * n

    def _rng_order(self, episode: MultiAgentEpisode) -> list[str]:
        """The agents in the order in which RLlib's runner draws their actions from torch's RNG.

        RLlib's env-to-module pipeline walks ``episode.get_agents_that_stepped()`` (a set), so the modules come in the
        set's iteration order (fixed within a process; it depends on ``PYTHONHASHSEED`` across processes).
        With ``fuse_agents`` (no bitwise match with RLlib's runner to keep): the env's order of agents.
        """
        if self.fuse_agents:
            return list(episode.agent_episodes)
        return list(episode.get_agents_that_stepped())

    # ----------------------------------------------------------------------------------------------------------------
    # Episodes in bulk.
    # ----------------------------------------------------------------------------------------------------------------
    def _write_chunk(self, episode: MultiAgentEpisode, i: int, k: int, final: tuple | None = None) -> None:
        """Appends the steps in rows ``chunk_start[i] + 1 .. k`` of env ``i`` to ``episode`` in bulk.

        ``episode`` holds the chunk's data up to row ``chunk_start[i]`` (the reset observation, or what RLlib's ``cut``
        carried over). ``final`` = ``(terminateds, truncateds)`` of the last step if the episode ended there.
        """
        start = int(self._chunk_start[i])
        num = k - start
        if num <= 0:
            return
        rows = self._rows
        infos = self._info_rows[i]
        seq_no = self._weights_seq_no
        flags = self._done_flags(*final) if final is not None else None
        for aid, sa in episode.agent_episodes.items():
            new = slice(start + 1, k + 1)
            extend_buffer(sa.observations, rows.obs[aid][new, i])
            extend_buffer(sa.rewards, rows.rewards[aid][new, i])
            extend_buffer(sa.actions, rows.column(aid, Columns.ACTIONS)[new, i])
            # Model outputs in RLlib's column order: the first output, the weights' sequence number, the rest.
            outputs = [key for key in rows.keys(aid) if key != Columns.ACTIONS]
            for n, key in enumerate(outputs):
                self._extend_extra(sa, key, rows.column(aid, key)[new, i])
                if n == 0:
                    self._extend_extra(sa, WEIGHTS_SEQ_NO, np.full(num, seq_no, dtype=np.int64))
            agent_infos = [info.get(aid) or {} for info in infos]
            sa.infos.data.extend(agent_infos)
            sa.t = sa.t_started + len(sa.rewards)
            sa._last_added_observation = sa.observations.data[-1]
            sa._last_added_infos = agent_infos[-1]
            sa._last_step_time = self._step_time
            if sa._start_time is None:
                sa._start_time = self._first_step_time[i]
            agent_t = episode.env_t_to_agent_t[aid]
            last = agent_t.data[-1]
            agent_t.data.extend(range(last + 1, last + num + 1))
            if flags is not None:
                sa.is_terminated, sa.is_truncated = flags[2][aid]
        episode.env_t += num
        episode._last_step_time = self._step_time
        if episode._start_time is None:
            episode._start_time = self._first_step_time[i]
        if flags is not None:
            episode.is_terminated, episode.is_truncated = flags[0], flags[1]
        self._chunk_start[i] = k
        infos.clear()
        episode.validate()

    @staticmethod
    def _extend_extra(sa: Any, key: str, values: np.ndarray) -> None:
        buffer = sa.extra_model_outputs.get(key)
        if buffer is None:
            from ray.rllib.env.utils.infinite_lookback_buffer import InfiniteLookbackBuffer

            buffer = sa.extra_model_outputs[key] = InfiniteLookbackBuffer()
        extend_buffer(buffer, values)

    def _done_flags(self, terminateds: dict, truncateds: dict) -> tuple:
        """The done flags of an episode whose last step returned ``terminateds`` and ``truncateds``.

        Returns ``(episode terminated, episode truncated, {agent: (terminated, truncated)})`` as
        ``MultiAgentEpisode.add_env_step`` decides them: it runs on a one-step scratch episode, so that both runners
        follow RLlib's rules (or a fix of them) in the same way.
        """
        key = (tuple(terminateds.items()), tuple(truncateds.items()))
        flags = self._done_flags_cache.get(key)
        if flags is None:
            zeros = {aid: 0 for aid in self._agents}
            probe = MultiAgentEpisode(agent_to_module_mapping_fn=lambda aid, episode: aid)
            probe.add_env_reset(observations=zeros)
            probe.add_env_step(
                observations=zeros,
                actions=zeros,
                rewards={aid: 0.0 for aid in self._agents},
                terminateds=dict(terminateds),
                truncateds=dict(truncateds),
            )
            per_agent = {aid: (sa.is_terminated, sa.is_truncated) for aid, sa in probe.agent_episodes.items()}
            flags = self._done_flags_cache[key] = (probe.is_terminated, probe.is_truncated, per_agent)
        return flags

    # ----------------------------------------------------------------------------------------------------------------
    # Metrics.
    # ----------------------------------------------------------------------------------------------------------------
    def _log_counts(self, env_steps: int, episodes: int, vector_steps: int, env_time: float, inference_time: float):
        """The step and episode counters RLlib's runner logs per env step, logged once per ``sample()`` call."""
        if vector_steps:
            self._log_env_steps(metric=self._metrics_num_try_env_step, num_steps=vector_steps)
            self.metrics.log_value(ENV_STEP_TIMER, env_time / vector_steps)
            self.metrics.log_value(RLMODULE_INFERENCE_TIMER, inference_time / vector_steps)
        if episodes:
            self.metrics.log_value(NUM_EPISODES, episodes, reduce="sum")
            self.metrics.log_value(NUM_EPISODES_LIFETIME, episodes, reduce="lifetime_sum")
        if env_steps <= 0:
            return
        self.metrics.log_value(NUM_ENV_STEPS_SAMPLED, env_steps, reduce="sum")
        self.metrics.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, env_steps, reduce="lifetime_sum", with_throughput=True)
        episode = self._ongoing_episodes[0]
        for aid in self._rows.obs:  # the env's order of agents, as RLlib's runner logs them
            mid = (
                episode.module_for(aid)
                if aid in episode.agent_episodes
                else self.config.policy_mapping_fn(aid, episode)
            )
            self.metrics.log_value((NUM_AGENT_STEPS_SAMPLED, str(aid)), env_steps, reduce="sum")
            self.metrics.log_value((NUM_AGENT_STEPS_SAMPLED_LIFETIME, str(aid)), env_steps, reduce="lifetime_sum")
            self.metrics.log_value((NUM_MODULE_STEPS_SAMPLED, mid), env_steps, reduce="sum")
            self.metrics.log_value((NUM_MODULE_STEPS_SAMPLED_LIFETIME, mid), env_steps, reduce="lifetime_sum")
        self._log_env_steps(metric=self._metrics_num_env_steps_sampled, num_steps=env_steps)


class LockstepError(ValueError):
    """The env is not lock-step (an agent without an observation, or done alone)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"LockstepMultiAgentEnvRunner: {what}; every agent must act on every step; {FALLBACK}.")


class FusedLockstepEnvRunner(LockstepMultiAgentEnvRunner):
    """:class:`LockstepMultiAgentEnvRunner` that runs agents whose actors have the same layers as one stacked batch.

    Agents with :class:`~rllib_safe.core.rl_modules.SafeActorTorchRLModule` actors of the same hidden sizes and
    activation (observation sizes may differ; the smaller ones are padded with zeros) share one batched forward pass
    and one standard-normal draw per step. Same episodes as RLlib's runner in layout and distribution; the actions of
    a given seed differ from RLlib's (batched matrix products round differently, the random numbers are drawn in
    another order), and they do not depend on ``PYTHONHASHSEED``.
    """

    fuse_agents = True


__all__ = [
    "FusedLockstepEnvRunner",
    "LockstepError",
    "LockstepMultiAgentEnvRunner",
    "check_lockstep_config",
    "needs_step_episodes",
]
