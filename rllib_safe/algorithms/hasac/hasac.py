"""HASAC, the off-policy base of rllib_safe: config and Algorithm (HARL's heterogeneous-agent soft actor-critic).

Source: Liu et al. 2023, "Maximum Entropy Heterogeneous-Agent Reinforcement Learning" (HASAC) and its code in HARL
(``harl/runners/off_policy_ha_runner.py``, ``harl/algorithms/critics/soft_twin_continuous_q_critic.py``,
``harl/configs/algos_cfgs/hasac.yaml``). Constrained-HASAC and WCMASAC (seed paper ``003``) extend it through the
learner's cost-critic hooks (see ``torch/hasac_torch_learner.py``).

Data flow of one iteration (DESIGN.md, "off-policy"):

1. EnvRunners host the actors only (tanh-squashed Gaussians) and sample ``env_steps_per_iteration`` env steps;
   during the warm-up (``num_steps_sampled_before_learning_starts``) they act uniformly at random (HARL's warm-up);
   :class:`~rllib_safe.callbacks.SafeCostCallback` logs exact episode cost sums and counts.
2. The driver appends the episodes' joint transitions to a
   :class:`~rllib_safe.utils.replay_buffers.JointReplayBuffer` (one row = one env step of the whole team).
3. After the warm-up, ``updates_per_env_step`` gradient updates are due per sampled env step (fractions carry over).
   The driver draws, per update, a minibatch of ``train_batch_size_per_learner`` aligned rows with n-step returns for
   every Learner and one agent permutation (seeded, the same for every Learner), and calls the Learners once.
4. Each gradient update on the Learner: the centralized twin soft Q (and the cost critics), then the actors one
   after another with HASAC's re-sampling of the already-updated agents, the temperatures α_i, the multipliers (where
   the algorithm has them), and the Polyak-averaged targets.
5. The actors' weights go back to the EnvRunners.

Checkpoints hold the module weights (actors, critics, targets, log α), the optimisers, the dual variables, the
permutation RNG, the replay buffer with its sampling RNG (``store_buffer_in_checkpoints``, default True) and the
update-scheduling counters; with ``reseed_each_iteration=True`` checkpoint → restore → train gives exactly the
numbers of an uninterrupted run.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)

from rllib_safe.algorithms.sequential.sequential import (
    EnvInfo,
    SequentialAlgorithm,
    SequentialConfig,
    actors_and_critic_spec,
    agent_to_module,
    check_dual_fields,
    check_positive,
    check_unit,
    probe_env,
)
from rllib_safe.callbacks import SafeCostCallback
from rllib_safe.core.columns import CRITIC_ID
from rllib_safe.core.sac_modules import JointCriticsTorchRLModule, SquashedGaussianActorTorchRLModule
from rllib_safe.utils.replay_buffers import JointReplayBuffer


class HASACConfig(AlgorithmConfig):
    """Configuration of HASAC and the off-policy safe family (RLlib ``AlgorithmConfig`` builder style).

    Set through :meth:`training` (defaults and their sources; HARL = ``harl/configs/algos_cfgs/hasac.yaml``):

    * ``train_batch_size_per_learner`` (1000, HARL ``batch_size``): rows per minibatch and gradient update
      (RLlib SAC's meaning of the field), per Learner.
    * ``env_steps_per_iteration`` (1000, HARL: ``train_interval`` 50 vector steps × ``n_rollout_threads`` 20).
    * ``updates_per_env_step`` (0.05, HARL: ``update_per_train`` 1 × ``train_interval`` 50 updates every
      50 × 20 env steps).
    * ``num_steps_sampled_before_learning_starts`` (10 000, HARL ``warmup_steps``) and ``warmup_random_actions``
      (True: uniform random actions during the warm-up, as HARL; False: the initial policy, as RLlib's SAC).
    * ``replay_buffer_config`` (``{"capacity": 1_000_000}``, HARL ``buffer_size``) and
      ``store_buffer_in_checkpoints`` (True here; RLlib's SAC field, whose default is False): whether checkpoints
      hold the replay buffer (needed for an exact resume; a full buffer weighs capacity × row size, see
      :attr:`~rllib_safe.utils.replay_buffers.JointReplayBuffer.row_nbytes`).
    * ``n_step`` (20, HARL ``n_step``; HARL's tuned Ant 2x4 config uses 5), ``gamma`` (0.99, HARL).
    * ``tau`` (0.005, HARL ``polyak``): Polyak coefficient of the target critics, applied after every update.
    * ``actor_lr`` (5e-4, HARL ``lr``), ``critic_lr`` (5e-4, HARL ``critic_lr``), ``alpha_lr`` (3e-4, HARL).
    * ``initial_alpha`` (0.001, HARL ``alpha``), ``auto_alpha`` (False, HARL): per-agent temperatures α_i, tuned
      to ``target_entropy`` (``"auto"`` = −|A_i|, HARL/SAC; or a number) when ``auto_alpha``.
    * ``actor_hiddens`` / ``critic_hiddens`` ([256, 256], HARL ``hidden_sizes``), ``activation`` ("relu", HARL).
    * ``critic_loss`` ("huber", HARL ``use_huber_loss``; or "mse"), ``huber_delta`` (10, HARL).
    * ``sequential`` (True): update the actors one after another in a fresh seeded random permutation per update,
      each seeing the already-updated agents' re-sampled actions (HASAC; HARL ``fixed_order: False``); False: every
      actor sees the other agents' actions from their pre-update policies (simultaneous updates).
    * ``grad_clip`` (None, HARL's HASAC clips nothing): clip each step's gradient norm.
    * ``cost_limit`` (None → the task's), ``cost_gamma`` (0.99, = HARL's γ, as WCSAC uses one γ),
      ``cost_critic_lr`` (5e-4, HARL ``critic_lr``), ``cost_critic_hiddens`` (None → ``critic_hiddens``):
      the cost side, used by the constrained variants (HASAC only reports the cost).
    * ``dual_rule`` ("adam"), ``dual_lr`` (0.035), ``dual_init`` (0.001), ``dual_max`` (inf), ``dual_options``
      ({}): the per-agent multipliers of the constrained variants, as in the on-policy family
      (:mod:`rllib_safe.duals`; OmniSafe ``Lagrange`` defaults).
    * ``reseed_each_iteration`` (False): as in the on-policy family, seeds every iteration's sampling from
      ``(seed, iteration, EnvRunner)``, so that checkpoint → restore → train is exact.

    ``lr`` is unused (None, as in RLlib's SAC); ``rollout_fragment_length="auto"`` splits
    ``env_steps_per_iteration`` over the EnvRunners and their envs.
    """

    #: The cost limits and the dual-variable arguments follow the on-policy family's rules (one implementation).
    cost_limits = SequentialConfig.cost_limits
    dual_kwargs = SequentialConfig.dual_kwargs

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or HASAC)
        self.lr = None
        self.gamma = 0.99
        self.train_batch_size_per_learner = 1000
        self.callbacks_class = SafeCostCallback
        self.rollout_fragment_length = "auto"
        self.env_steps_per_iteration = 1000
        self.updates_per_env_step = 0.05
        self.num_steps_sampled_before_learning_starts = 10_000
        self.warmup_random_actions = True
        self.replay_buffer_config = {"capacity": 1_000_000}
        self.store_buffer_in_checkpoints = True
        self.n_step = 20
        self.tau = 0.005
        self.actor_lr = 5e-4
        self.critic_lr = 5e-4
        self.alpha_lr = 3e-4
        self.initial_alpha = 0.001
        self.auto_alpha = False
        self.target_entropy = "auto"
        self.actor_hiddens = [256, 256]
        self.critic_hiddens = [256, 256]
        self.activation = "relu"
        self.critic_loss = "huber"
        self.huber_delta = 10.0
        self.sequential = True
        self.grad_clip = None
        self.cost_limit = None
        self.cost_gamma = 0.99
        self.cost_critic_lr = 5e-4
        self.cost_critic_hiddens = None
        self.dual_rule = "adam"
        self.dual_lr = 0.035
        self.dual_init = 0.001
        self.dual_max = float("inf")
        self.dual_options = {}
        self.reseed_each_iteration = False

    #: The fields :meth:`training` sets (besides RLlib's own).
    TRAINING_FIELDS = (
        "env_steps_per_iteration",
        "updates_per_env_step",
        "num_steps_sampled_before_learning_starts",
        "warmup_random_actions",
        "replay_buffer_config",
        "store_buffer_in_checkpoints",
        "n_step",
        "tau",
        "actor_lr",
        "critic_lr",
        "alpha_lr",
        "initial_alpha",
        "auto_alpha",
        "target_entropy",
        "actor_hiddens",
        "critic_hiddens",
        "activation",
        "critic_loss",
        "huber_delta",
        "sequential",
        "cost_limit",
        "cost_gamma",
        "cost_critic_lr",
        "cost_critic_hiddens",
        "dual_rule",
        "dual_lr",
        "dual_init",
        "dual_max",
        "dual_options",
        "reseed_each_iteration",
    )

    def training(
        self,
        *,
        env_steps_per_iteration: int = NotProvided,
        updates_per_env_step: float = NotProvided,
        num_steps_sampled_before_learning_starts: int = NotProvided,
        warmup_random_actions: bool = NotProvided,
        replay_buffer_config: dict = NotProvided,
        store_buffer_in_checkpoints: bool = NotProvided,
        n_step: int = NotProvided,
        tau: float = NotProvided,
        actor_lr: float = NotProvided,
        critic_lr: float = NotProvided,
        alpha_lr: float = NotProvided,
        initial_alpha: float = NotProvided,
        auto_alpha: bool = NotProvided,
        target_entropy: Any = NotProvided,
        actor_hiddens: list[int] = NotProvided,
        critic_hiddens: list[int] = NotProvided,
        activation: str = NotProvided,
        critic_loss: str = NotProvided,
        huber_delta: float = NotProvided,
        sequential: bool = NotProvided,
        cost_limit: Any = NotProvided,
        cost_gamma: float = NotProvided,
        cost_critic_lr: float = NotProvided,
        cost_critic_hiddens: list[int] | None = NotProvided,
        dual_rule: str = NotProvided,
        dual_lr: float = NotProvided,
        dual_init: float = NotProvided,
        dual_max: float = NotProvided,
        dual_options: dict = NotProvided,
        reseed_each_iteration: bool = NotProvided,
        **kwargs: Any,
    ) -> HASACConfig:
        """Sets the training options (see the class docstring); RLlib's options pass through ``kwargs``."""
        ours = {k: v for k, v in locals().items() if k in self.TRAINING_FIELDS and v is not NotProvided}
        for key in [k for k in kwargs if k in self.TRAINING_FIELDS]:  # subclass fields handed on by name
            ours[key] = kwargs.pop(key)
        super().training(**kwargs)
        for key, value in ours.items():
            setattr(self, key, value)
        return self

    # ------------------------------------------------------------------------------------------------------------
    # Validation: every bad value raises ValueError naming the field, before any Ray actor starts.
    # ------------------------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Checks every field, then fills in the per-agent module setup from the task."""
        self._validate_safe_fields()
        info = probe_env(self)
        self.cost_limits(info)  # raises on a malformed cost_limit
        for aid, space in info.action_spaces.items():
            if not isinstance(space, gym.spaces.Box):
                raise ValueError(f"HASAC needs Box action spaces; agent {aid!r} has {space}.")
        if set(self.policies or ()) != set(info.agent_ids) | {CRITIC_ID}:
            self.multi_agent(policies=set(info.agent_ids) | {CRITIC_ID}, policy_mapping_fn=agent_to_module)
        super().validate()

    def _validate_safe_fields(self) -> None:
        positive, unit = functools.partial(check_positive, self), functools.partial(check_unit, self)

        def integer(name: str, minimum: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")

        for name in ("actor_lr", "critic_lr", "alpha_lr", "cost_critic_lr", "initial_alpha", "huber_delta"):
            positive(name)
        positive("updates_per_env_step", allow_zero=True)
        for name in ("gamma", "cost_gamma", "tau"):
            unit(name)
        for name, minimum in (
            ("train_batch_size_per_learner", 1),
            ("env_steps_per_iteration", 1),
            ("num_steps_sampled_before_learning_starts", 0),
            ("n_step", 1),
        ):
            integer(name, minimum)
        if not isinstance(self.replay_buffer_config, dict) or set(self.replay_buffer_config) != {"capacity"}:
            raise ValueError(
                "`replay_buffer_config` must be a dict with exactly the key 'capacity', "
                f"got {self.replay_buffer_config!r}."
            )
        capacity = self.replay_buffer_config["capacity"]
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < self.train_batch_size_per_learner:
            raise ValueError(
                "`replay_buffer_config['capacity']` must be an integer >= `train_batch_size_per_learner` "
                f"({self.train_batch_size_per_learner}), got {capacity!r}."
            )
        if not (self.target_entropy == "auto" or isinstance(self.target_entropy, (int, float))):
            raise ValueError(f"`target_entropy` must be 'auto' or a number, got {self.target_entropy!r}.")
        if self.critic_loss not in ("huber", "mse"):
            raise ValueError(f"`critic_loss` must be 'huber' or 'mse', got {self.critic_loss!r}.")
        if self.activation not in ("tanh", "relu", "elu", "silu"):
            raise ValueError(f"`activation` must be one of tanh, relu, elu, silu; got {self.activation!r}.")
        for name in ("actor_hiddens", "critic_hiddens", "cost_critic_hiddens"):
            value = getattr(self, name)
            if name == "cost_critic_hiddens" and value is None:
                continue
            if not (isinstance(value, (list, tuple)) and value and all(isinstance(h, int) and h > 0 for h in value)):
                raise ValueError(f"`{name}` must be a list of positive integers, got {value!r}.")
        for name in ("auto_alpha", "warmup_random_actions", "store_buffer_in_checkpoints", "sequential"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be True or False, got {getattr(self, name)!r}.")
        if self.grad_clip is not None:
            positive("grad_clip")
        check_dual_fields(self)

    # ------------------------------------------------------------------------------------------------------------
    def get_rollout_fragment_length(self, worker_index: int = 0) -> int:
        """``"auto"``: ``env_steps_per_iteration`` spread over the EnvRunners and their envs (rounded up)."""
        if self.rollout_fragment_length != "auto":
            return self.rollout_fragment_length
        envs = self.num_envs_per_env_runner * max(1, self.num_env_runners)
        return max(1, math.ceil(self.env_steps_per_iteration / envs))

    def target_entropies(self, info: EnvInfo) -> dict[str, float]:
        """The target entropy H̄_i per agent (``"auto"``: −|A_i|)."""
        if self.target_entropy == "auto":
            return {aid: -float(np.prod(info.action_spaces[aid].shape)) for aid in info.agent_ids}
        return {aid: float(self.target_entropy) for aid in info.agent_ids}

    def cost_critic_model_config(self) -> dict[str, Any]:
        """The cost-critic part of the critic module's ``model_config`` (HASAC: none; the hook of the variants)."""
        return {"cost_critic": None}

    def get_multi_rl_module_spec(self, *, env=None, spaces=None, inference_only: bool = False, **kwargs):
        """One actor module per agent plus the learner-only critic module (dropped when ``inference_only``)."""
        info = probe_env(self)
        actor_config = {"hiddens": list(self.actor_hiddens), "activation": self.activation}
        critic_config = {
            "agent_ids": list(info.agent_ids),
            "obs_dims": {a: int(np.prod(info.observation_spaces[a].shape)) for a in info.agent_ids},
            "act_dims": {a: int(np.prod(info.action_spaces[a].shape)) for a in info.agent_ids},
            "num_costs": info.num_costs,
            "hiddens": list(self.critic_hiddens),
            "cost_hiddens": list(self.cost_critic_hiddens or self.critic_hiddens),
            "activation": self.activation,
            "initial_alpha": self.initial_alpha,
            **self.cost_critic_model_config(),
        }
        return actors_and_critic_spec(
            info,
            SquashedGaussianActorTorchRLModule,
            actor_config,
            JointCriticsTorchRLModule,
            critic_config,
            inference_only,
        )

    def get_default_rl_module_spec(self) -> MultiRLModuleSpec:
        """The full module setup with spaces."""
        return self.get_multi_rl_module_spec()

    def get_default_learner_class(self) -> type:
        """HASAC's learner."""
        from rllib_safe.algorithms.hasac.torch.hasac_torch_learner import HASACTorchLearner

        return HASACTorchLearner


class HASAC(SequentialAlgorithm):
    """HASAC as an RLlib Algorithm (registered as ``"HASAC"``); the off-policy training step of the family.

    It reuses the on-policy base's seeded agent permutation, exact episode costs, EnvRunner reseeding and the
    checkpointing of that state, and adds the joint replay buffer and the update schedule.
    """

    @classmethod
    def get_default_config(cls) -> HASACConfig:
        """The default config."""
        return HASACConfig()

    def setup(self, config: AlgorithmConfig) -> None:
        """RLlib's parts, the permutation RNG, the last known episode costs, and the joint replay buffer."""
        super().setup(config)
        info = probe_env(self.config)
        self.replay_buffer = JointReplayBuffer(
            self.config.replay_buffer_config["capacity"],
            agent_ids=list(info.agent_ids),
            observation_dims={a: int(np.prod(info.observation_spaces[a].shape)) for a in info.agent_ids},
            action_dims={a: int(np.prod(info.action_spaces[a].shape)) for a in info.agent_ids},
            state_dim=int(np.prod(info.state_space.shape)),
            num_costs=info.num_costs,
            seed=self.config.seed,
        )
        self._update_credit = 0.0  # gradient updates due but not yet run (fractions carry over)
        # J_c measured since the last gradient updates, not yet seen by the duals: a dual moves once per fresh
        # measurement (iterations without updates, e.g. in the warm-up, pass theirs on; the newest one counts).
        self._fresh_episode_costs: dict[str, np.ndarray] = {}
        self._num_updates_lifetime = 0
        self._uniform_exploration: bool | None = None  # what the EnvRunners were last told

    def _create_local_replay_buffer_if_necessary(self, config: Any) -> None:
        """No RLlib buffer: the joint replay buffer is built in :meth:`setup`."""
        return None

    # ------------------------------------------------------------------------------------------------------------
    def _foreach_actor(self, func: Any) -> None:
        """Applies ``func(actor_module)`` to every agent's actor on every EnvRunner."""
        agent_ids = list(self._agent_ids)

        def apply(env_runner: Any) -> None:
            module = getattr(env_runner, "module", None)
            for aid in agent_ids if module is not None else ():
                func(module[aid])

        self.env_runner_group.foreach_env_runner(apply, local_env_runner=True)

    def _set_uniform_exploration(self, uniform: bool) -> None:
        """Tells the EnvRunners' actors whether to act uniformly at random (HARL's warm-up)."""
        if uniform != self._uniform_exploration:
            self._foreach_actor(lambda actor: setattr(actor, "uniform_exploration", uniform))
            self._uniform_exploration = uniform

    def reseed_env_runners(self) -> None:
        """The base's reseeding, then the actors' exploration generators from the freshly seeded torch RNG."""
        super().reseed_env_runners()
        self._foreach_actor(lambda actor: actor.reseed())

    def training_step(self) -> None:
        """Sample → replay → (after the warm-up) the due gradient updates → weight sync."""
        config = self.config
        if config.reseed_each_iteration:
            self.reseed_env_runners()
        lifetime = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
        warming_up = lifetime < config.num_steps_sampled_before_learning_starts
        self._set_uniform_exploration(warming_up and config.warmup_random_actions)

        start = time.perf_counter()
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, env_runner_results = synchronous_parallel_sample(
                worker_set=self.env_runner_group,
                max_env_steps=config.env_steps_per_iteration,
                sample_timeout_s=config.sample_timeout_s,
                _uses_new_env_runners=True,
                _return_metrics=True,
            )
            self.metrics.aggregate(env_runner_results, key=ENV_RUNNER_RESULTS)
        sampled = time.perf_counter()
        num_added = self.replay_buffer.add_episodes(episodes)
        self._fresh_episode_costs.update(self.measure_episode_costs())

        num_updates = 0
        lifetime = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
        if lifetime >= config.num_steps_sampled_before_learning_starts:
            self._update_credit += config.updates_per_env_step * num_added
            if len(self.replay_buffer) >= config.train_batch_size_per_learner:
                num_updates = int(self._update_credit)
                self._update_credit -= num_updates
        if num_updates:
            self._learn(num_updates)
        self._log_iteration(num_updates, sampled - start, time.perf_counter() - sampled)

    def _learn(self, num_updates: int) -> None:
        """``num_updates`` gradient updates on every Learner, then the actors' weights go to the EnvRunners."""
        config = self.config
        num_learners = max(1, config.num_learners)
        batches = [
            self._sample_minibatches(num_updates, config.train_batch_size_per_learner) for _ in range(num_learners)
        ]
        agent_orders = [self.draw_agent_order() for _ in range(num_updates)]
        update_start = time.perf_counter()
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            learner_results = self.learner_group.update(
                batches=batches,
                timesteps={
                    NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                        (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0
                    ),
                },
                num_updates=num_updates,
                agent_orders=agent_orders,
                episode_costs={aid: c.tolist() for aid, c in self._fresh_episode_costs.items()},
                last_episode_costs={aid: c.tolist() for aid, c in self._last_episode_costs.items()},
            )
            self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        self._fresh_episode_costs = {}
        update_seconds = time.perf_counter() - update_start
        self._num_updates_lifetime += num_updates
        self.metrics.log_value("gradient_updates_per_s", num_updates / max(update_seconds, 1e-9), window=1)
        self.metrics.log_value("agent_order", ",".join(agent_orders[-1]), reduce="item")
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group,
                policies=set(self._agent_ids),
                inference_only=True,
            )

    def _sample_minibatches(self, num_updates: int, batch_size: int) -> dict[str, np.ndarray]:
        """``num_updates`` independent minibatches (each of distinct rows), stacked along the rows."""
        minibatches = [
            self.replay_buffer.sample(
                batch_size, n_step=self.config.n_step, gamma=self.config.gamma, cost_gamma=self.config.cost_gamma
            )
            for _ in range(num_updates)
        ]
        return {key: np.concatenate([mb[key] for mb in minibatches]) for key in minibatches[0]}

    def _log_iteration(self, num_updates: int, sample_seconds: float, update_seconds: float) -> None:
        self.metrics.log_dict(
            {
                "size": len(self.replay_buffer),
                "num_added_lifetime": self.replay_buffer.num_added,
                "memory_mib": self.replay_buffer.nbytes / 2**20,
            },
            key="replay_buffer",
            window=1,
        )
        self.metrics.log_value("num_gradient_updates", num_updates, window=1)
        self.metrics.log_value("num_gradient_updates_lifetime", self._num_updates_lifetime, window=1)
        # Exact seconds of this iteration's phases (RLlib's timers are smoothed across iterations).
        self.metrics.log_value((TIMERS, "sample_s"), sample_seconds, reduce="sum")
        self.metrics.log_value((TIMERS, "update_and_sync_s"), update_seconds, reduce="sum")

    # ------------------------------------------------------------------------------------------------------------
    def get_state(self, *args: Any, **kwargs: Any) -> dict:
        """The base's state plus the update schedule and (``store_buffer_in_checkpoints``) the replay buffer."""
        state = super().get_state(*args, **kwargs)
        state["rllib_safe"]["update_credit"] = self._update_credit
        state["rllib_safe"]["num_updates_lifetime"] = self._num_updates_lifetime
        state["rllib_safe"]["fresh_episode_costs"] = {aid: c.tolist() for aid, c in self._fresh_episode_costs.items()}
        if self.config.store_buffer_in_checkpoints:
            state["rllib_safe"]["replay_buffer"] = self.replay_buffer.state_dict()
        return state

    def set_state(self, state: dict) -> None:
        """Restores the base's state, the update schedule and the replay buffer (when the checkpoint has it)."""
        super().set_state(state)
        ours = state.get("rllib_safe") or {}
        self._update_credit = ours.get("update_credit", self._update_credit)
        self._num_updates_lifetime = ours.get("num_updates_lifetime", self._num_updates_lifetime)
        if "fresh_episode_costs" in ours:
            self._fresh_episode_costs = {aid: np.asarray(c) for aid, c in ours["fresh_episode_costs"].items()}
        if "replay_buffer" in ours:
            self.replay_buffer.load_state_dict(ours["replay_buffer"])


__all__ = ["HASAC", "HASACConfig"]
