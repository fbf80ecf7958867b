"""The shared on-policy base of rllib_safe: config and Algorithm for sequential (HAPPO-style) safe MARL.

Every on-policy algorithm of the package (MAPPO, HAPPO, MAPPO-Lagrangian, MAFOCOPS, MACPO) is a
:class:`SequentialConfig` / :class:`SequentialAlgorithm` pair plus a learner that overrides one narrow hook of
:class:`~rllib_safe.algorithms.sequential.torch.sequential_torch_learner.SequentialTorchLearner`.

Data flow of one iteration (DESIGN.md): EnvRunners sample episodes whose infos carry ``cost`` and ``state``; the
:class:`~rllib_safe.callbacks.SafeCostCallback` logs exact per-agent episode cost sums and counts; the Algorithm turns
them into the exact mean episode cost of the iteration, draws a seeded agent permutation (identical on every
Learner) and calls ``learner_group.update(...)``; the Learner adds costs, global state, reward GAE and cost GAE,
trains the critics, then the agents one after another with the HAPPO factor M.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray._common.deprecation import DEPRECATED_VALUE  # what AlgorithmConfig.get_state filters on
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.env.env_context import EnvContext
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)

from rllib_safe.algorithms.sequential.lost_env_runners import sample_with_bounded_wait
from rllib_safe.callbacks import SafeCostCallback, mean_episode_costs
from rllib_safe.core.columns import CRITIC_ID
from rllib_safe.core.rl_modules import CentralCriticTorchRLModule, SafeActorTorchRLModule
from rllib_safe.env_runners import (
    FusedLockstepEnvRunner,
    LockstepMultiAgentEnvRunner,
    check_lockstep_config,
    env_runner_class,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnvInfo:
    """What the algorithms need to know about a task before any actor starts."""

    agent_ids: tuple[str, ...]
    observation_spaces: dict
    action_spaces: dict
    state_space: gym.spaces.Box
    num_costs: int
    cost_limit: float | tuple[float, ...]
    max_episode_steps: int | None = None


@functools.lru_cache(maxsize=32)
def _probe(env: Any, env_config_items: tuple) -> EnvInfo:
    from ray.tune.registry import ENV_CREATOR, _global_registry

    env_config = EnvContext(dict(env_config_items), worker_index=0)
    if isinstance(env, str):
        if not _global_registry.contains(ENV_CREATOR, env):
            from rllib_safe.envs import task_names

            raise ValueError(f"Unknown task {env!r}. Known tasks: {', '.join(task_names())}.")
        instance = _global_registry.get(ENV_CREATOR, env)(env_config)
    else:
        instance = env(env_config)
    try:
        state_space = getattr(instance, "state_space", None)
        if state_space is None:
            raise ValueError(
                f"Environment {env!r} exposes no `state_space`: rllib_safe algorithms need a global state "
                "(follow rllib_safe.envs.SafeMultiAgentEnv's contract)."
            )
        return EnvInfo(
            agent_ids=tuple(instance.possible_agents),
            observation_spaces=dict(instance.observation_spaces),
            action_spaces=dict(instance.action_spaces),
            state_space=state_space,
            num_costs=int(getattr(instance, "num_costs", 1)),
            cost_limit=_limit(getattr(instance, "cost_limit", 25.0)),
            max_episode_steps=getattr(instance, "max_episode_steps", None),
        )
    finally:
        instance.close()


def _limit(value: Any) -> float | tuple[float, ...]:
    """A task's default cost limit: one number, or one per cost index."""
    return float(value) if np.ndim(value) == 0 else tuple(float(v) for v in np.asarray(value).reshape(-1))


def probe_env(config: AlgorithmConfig) -> EnvInfo:
    """Builds the configured task once in this process (cached) and reads its agents, spaces and cost layout."""
    if config.env is None:
        raise ValueError("`config.environment(...)` is not set: give a task name, e.g. 'Safety2x4AntVelocity-v0'.")
    from ray.tune.registry import ENV_CREATOR, _global_registry

    if isinstance(config.env, str) and not _global_registry.contains(ENV_CREATOR, config.env):
        # Tune's registry lives in the running Ray cluster: after a Ray restart the names must be registered again.
        import rllib_safe

        rllib_safe.register()
    return _probe(config.env, tuple(sorted((config.env_config or {}).items(), key=lambda kv: kv[0])))


@functools.cache
def _rllib_deprecated_fields() -> frozenset[str]:
    """RLlib's config attributes whose default is ``DEPRECATED_VALUE`` (RLlib's get_state drops them on purpose)."""
    return frozenset(k for k, v in vars(PPOConfig()).items() if isinstance(v, int) and v == DEPRECATED_VALUE)


def agent_to_module(agent_id: str, episode: Any = None, **kwargs: Any) -> str:
    """Policy mapping of the package: one module per agent, named after the agent."""
    return agent_id


def actors_and_critic_spec(
    info: EnvInfo,
    actor_class: type,
    actor_config: dict,
    critic_class: type,
    critic_config: dict,
    inference_only: bool = False,
) -> MultiRLModuleSpec:
    """The package's module layout: one actor per agent (module id = agent id) and the critic module.

    The learner-only critic module :data:`CRITIC_ID` lives on the global state and is left out of the
    ``inference_only`` copy (the EnvRunners').
    """
    specs = {
        aid: RLModuleSpec(
            module_class=actor_class,
            observation_space=info.observation_spaces[aid],
            action_space=info.action_spaces[aid],
            inference_only=inference_only,
            model_config=actor_config,
        )
        for aid in info.agent_ids
    }
    if not inference_only:
        specs[CRITIC_ID] = RLModuleSpec(
            module_class=critic_class,
            observation_space=info.state_space,
            action_space=gym.spaces.Box(-1.0, 1.0, (1,), np.float32),
            learner_only=True,
            model_config=critic_config,
        )
    return MultiRLModuleSpec(rl_module_specs=specs)


def check_positive(config: Any, name: str, allow_zero: bool = False) -> None:
    """Raises ``ValueError`` naming ``config.<name>`` unless it is a finite positive (or non-negative) number."""
    value = getattr(config, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"`{name}` must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}.")


def check_unit(config: Any, name: str) -> None:
    """Raises ``ValueError`` naming ``config.<name>`` unless it is a number in [0, 1]."""
    value = getattr(config, name)
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"`{name}` must be in [0, 1], got {value!r}.")


def check_choice(config: Any, name: str, choices: tuple[str, ...]) -> None:
    """Raises ``ValueError`` naming ``config.<name>`` and listing ``choices`` unless the value is one of them."""
    value = getattr(config, name)
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")


#: When the per-iteration dual rules step (``dual_schedule``; see :class:`SequentialConfig`).
DUAL_SCHEDULES = ("per_iteration", "per_minibatch")


def check_dual_fields(config: Any) -> None:
    """Checks the ``dual_*`` fields of a config with Lagrange multipliers (``dual_kwargs`` builds the rule)."""
    if not (isinstance(config.dual_max, (int, float)) and config.dual_max >= config.dual_init):
        raise ValueError(f"`dual_max` must be >= `dual_init` ({config.dual_init}), got {config.dual_max!r}.")
    from rllib_safe.duals import RULES, make_dual

    if config.dual_rule not in RULES:
        raise ValueError(f"`dual_rule` must be one of {sorted(RULES)}, got {config.dual_rule!r}.")
    try:
        make_dual(config.dual_rule, **config.dual_kwargs(num_costs=1))
    except ValueError as e:
        raise ValueError(f"Invalid dual variable settings (`dual_*` fields): {e}") from None


#: SafePO's / the MACPO code's initial action σ: σ = std_y_coef · sigmoid(log_std / std_x_coef) with log_std started
#: at std_x_coef = 1 and std_y_coef = 0.5 (SafePO ``marl_cfg`` MAMuJoCo block; MACPO ``train_mujoco.sh``; HARL's
#: actor defaults), i.e. σ_0 = 0.5·sigmoid(1) ≈ 0.366; here σ = exp(log_std), started at the same σ_0.
SAFEPO_INIT_LOG_STD = math.log(0.5 / (1.0 + math.exp(-1.0)))


class SequentialConfig(PPOConfig):
    """Configuration of the on-policy safe MARL base (RLlib ``AlgorithmConfig`` builder style).

    Inherits PPO's knobs (``lr``, ``gamma``, ``lambda_``, ``clip_param``, ``entropy_coeff``, ``num_epochs``,
    ``minibatch_size``, ``grad_clip``, ...) and adds, through :meth:`training`:

    * ``sequential`` (True): update agents one after another in a random permutation with the HAPPO factor M
      (HAPPO, Kuba et al. 2022; MAFOCOPS Algorithm 1); False: simultaneous updates without a factor (MAPPO).
    * ``happo_factor_clip`` (None): if set to c, M is clipped to [1 − c, 1 + c] before use.
    * ``cost_limit`` (None → the task's default): the limit d on the expected episode cost, a scalar (every agent,
      every cost index), a list of length m (``[d_1, …, d_m]``, one per cost index), or a dict
      ``{agent: scalar or list}``. It is compared with J_c, the exact *undiscounted* mean episode cost of the
      iteration's finished episodes (MACPO code and SafePO; the papers write J_c discounted and the FOCOPS code
      discounts it, see :mod:`rllib_safe.callbacks`).
    * ``cost_gamma`` (0.99), ``cost_lambda`` (0.95): discount and GAE λ of the cost advantages (SafePO defaults).
    * ``cost_advantage_normalization`` ("standardize", as the MACPO code and SafePO, or "center"): "center" keeps
      Â_c in cost units (subtracts the mean only).
    * ``critic_lr`` (5e-4, HARL/SafePO MAMuJoCo), ``critic_loss`` ("huber" or "mse"), ``huber_delta`` (10, SafePO/HARL).
    * ``critic_update`` ("before_agents"): "before_agents" trains the reward critic and all cost critics once per
      iteration, for ``num_epochs`` × minibatches, before the agent loop (HARL trains its one centralized critic
      once per iteration too; its order relative to the actors does not matter, the advantages are computed
      first). "with_each_agent" steps the reward critic and the agent's cost critics on every minibatch of each
      agent's update, stopping with the agent's early stop (MAFOCOPS Algorithm 1 line 12; the MACPO and FOCOPS
      code, where each agent has its own critics): the shared reward critic then takes n times as many steps.
    * ``actor_hiddens`` / ``critic_hiddens`` ([128, 128], SafePO/HARL MAMuJoCo hidden size), ``activation``
      ("tanh"), ``init_log_std`` (-0.5, the FOCOPS reference code), ``use_value_norm`` (True, MAPPO/HAPPO ValueNorm).
    * ``target_kl`` (None): stop an agent's epochs once the mean KL(π_old‖π) exceeds it (algorithms with a KL rule).
    * ``dual_rule`` ("adam"), ``dual_lr`` (0.035), ``dual_init`` (0.001), ``dual_max`` (inf): the Lagrange
      multiplier update of the Lagrangian algorithms (OmniSafe PPOLag defaults: Adam, lr 0.035, init 0.001);
      ``dual_options`` ({}): further arguments of the rule (e.g. ``kp``/``ki``/``kd`` for "pid", see
      :mod:`rllib_safe.duals`). Rules "projected_gradient", "adam" and "pid" move once per fresh measurement of
      J_c; "macpo" steps after every minibatch of the agent's epochs with that minibatch's ``mean(r·Â_c)`` and the
      last known J_c (the MACPO code; its ``constraint_scale`` defaults to ``1 − gamma``).
    * ``dual_schedule`` ("per_iteration"): when the rules "projected_gradient", "adam" and "pid" step.
      "per_iteration": once per agent and fresh J_c, before the agent's epochs (MAFOCOPS Eq. 10 / Algorithm 1
      line 9 read literally; OmniSafe, SafePO, FOCOPS). "per_minibatch": after every minibatch step of the agent's
      epochs, each step with the iteration's fresh J_c (none when no episode of the agent ended), i.e. the
      MACPO code base's schedule of its Lagrange multiplier; the multiplier then moves
      ``dual_lr·(J_c − d)`` × (the agent's minibatch steps, at most ``num_epochs``·⌈N/``minibatch_size``⌉) per
      iteration. The "macpo" rule always steps per minibatch.
    * ``reseed_each_iteration`` (False): start every iteration's sampling from fresh episodes whose env seeds and
      action-sampling RNGs derive from ``(seed, iteration, EnvRunner)``. Then checkpoint → restore → train gives
      exactly the numbers of an uninterrupted run. Use it with ``env_runners(batch_mode="complete_episodes")`` so
      that no episode is cut at an iteration boundary; with the default "truncate_episodes" an unfinished episode
      is dropped at the boundary (its chunk is still trained on, its cost never counted).

    Other defaults: ``lr`` 5e-4 (HAPPO actor lr, HARL ``happo.yaml``), ``num_epochs`` 5 (HARL ``ppo_epoch``),
    ``clip_param`` 0.2, ``entropy_coeff`` 0.01, ``gamma`` 0.99, ``lambda_`` 0.95, ``grad_clip`` 10
    (HARL/SafePO ``max_grad_norm``), ``minibatch_size`` 1000.

    Rollout defaults: every iteration measures whole episodes. ``train_batch_size_per_learner`` 10,000 sampled by
    ``num_env_runners`` 2 × ``num_envs_per_env_runner`` 5 = 10 envs, i.e. 1,000 steps per env and iteration: the
    SafePO layout for Safe MAMuJoCo (``n_rollout_threads`` 10 × ``episode_length`` 1000 = 10,000 steps per update,
    SafePO ``marl_cfg`` ``mamujoco:`` block; reference notes B4), one whole 1,000-step episode per env. With
    ``batch_mode`` "truncate_episodes" (RLlib's default, kept) an episode of at most 1,000 steps that is running when
    an iteration starts ends within that iteration's 1,000 steps of its env, so every iteration brings a fresh exact
    J_c for every agent and the duals move once per iteration. Rule: keep ``train_batch_size_per_learner`` = ``max(1,
    num_env_runners)`` × ``num_envs_per_env_runner`` × (the task's episode length) or more; :meth:`validate` warns
    when an env's share is shorter (then some iterations end no episode and the duals wait for the next
    measurement). "complete_episodes" is not the default: RLlib 2.60 then stops each EnvRunner's sample once it has
    as many finished episodes as envs, dropping the unfinished ones, which favours short (e.g. fallen) episodes in J_c.

    Sampling: ``env_runner_cls`` defaults to :class:`~rllib_safe.env_runners.FusedLockstepEnvRunner` ("fused"),
    RLlib's multi-agent EnvRunner with a batched loop for tasks in which every agent acts on every step (all
    rllib_safe tasks) that runs the agents with equal actor layers as one stacked batch: the fastest (about 85-95 %
    of the raw env speed with 8 envs on Ant 2x4, ``benchmarks/sampling.py``), and its actions for a seed do not
    depend on ``PYTHONHASHSEED``. RLlib's runner draws the agents' actions in the order of a Python set of agent
    ids, which changes with the hash seed of each process, so with it the same ``config.seed`` gives different runs
    in different processes. ``"lockstep"`` (:class:`~rllib_safe.env_runners.LockstepMultiAgentEnvRunner`) returns
    bitwise RLlib's episodes for a seed within a process (its order included), several times faster than RLlib's;
    ``"stock"`` is RLlib's ``MultiAgentEnvRunner``: ``config.env_runners(env_runner_cls="stock")`` (or a class),
    ``--config env_runner_cls=stock`` on the command line.
    """

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or SequentialAlgorithm)
        # PPO knobs with the safe-MARL references' defaults.
        self.lr = 5e-4
        self.num_epochs = 5
        self.clip_param = 0.2
        self.entropy_coeff = 0.01
        self.gamma = 0.99
        self.lambda_ = 0.95
        self.grad_clip = 10.0
        self.minibatch_size = 1000
        # SafePO's rollout: 10 envs × 1,000 steps per iteration (see "Rollout defaults" above).
        self.train_batch_size_per_learner = 10_000
        self.num_env_runners = 2
        self.num_envs_per_env_runner = 5
        self.use_kl_loss = False
        self.kl_coeff = 0.0
        self.callbacks_class = SafeCostCallback
        self.env_runner_cls = FusedLockstepEnvRunner
        # rllib_safe keys (every key gets its default here).
        self.sequential = True
        self.happo_factor_clip = None
        self.cost_limit = None
        self.cost_gamma = 0.99
        self.cost_lambda = 0.95
        self.cost_advantage_normalization = "standardize"
        self.critic_lr = 5e-4
        self.critic_loss = "huber"
        self.critic_update = "before_agents"
        self.huber_delta = 10.0
        self.actor_hiddens = [128, 128]
        self.critic_hiddens = [128, 128]
        self.activation = "tanh"
        self.init_log_std = -0.5
        self.use_value_norm = True
        self.target_kl = None
        self.dual_rule = "adam"
        self.dual_lr = 0.035
        self.dual_init = 0.001
        self.dual_max = float("inf")
        self.dual_options = {}
        self.dual_schedule = "per_iteration"
        self.reseed_each_iteration = False
        self.lost_env_runners_timeout_s = 600.0

    def fault_tolerance(self, *, lost_env_runners_timeout_s: float = NotProvided, **kwargs: Any) -> SequentialConfig:
        """RLlib's fault-tolerance options plus ``lost_env_runners_timeout_s`` (600).

        ``lost_env_runners_timeout_s``: how long an iteration waits for restarted EnvRunners while none returns
        samples (all dead, e.g. their node died) before it saves a checkpoint and raises
        :class:`~rllib_safe.algorithms.sequential.lost_env_runners.EnvRunnersLostError`. The default leaves time for
        a cluster autoscaler to replace a node (a cloud VM boots and pulls the image in a few minutes).
        """
        super().fault_tolerance(**kwargs)
        if lost_env_runners_timeout_s is not NotProvided:
            self.lost_env_runners_timeout_s = lost_env_runners_timeout_s
        return self

    def training(
        self,
        *,
        sequential: bool = NotProvided,
        happo_factor_clip: float | None = NotProvided,
        cost_limit: Any = NotProvided,
        cost_gamma: float = NotProvided,
        cost_lambda: float = NotProvided,
        cost_advantage_normalization: str = NotProvided,
        critic_lr: float = NotProvided,
        critic_loss: str = NotProvided,
        critic_update: str = NotProvided,
        huber_delta: float = NotProvided,
        actor_hiddens: list[int] = NotProvided,
        critic_hiddens: list[int] = NotProvided,
        activation: str = NotProvided,
        init_log_std: float = NotProvided,
        use_value_norm: bool = NotProvided,
        target_kl: float | None = NotProvided,
        dual_rule: str = NotProvided,
        dual_lr: float = NotProvided,
        dual_init: float = NotProvided,
        dual_max: float = NotProvided,
        dual_options: dict = NotProvided,
        dual_schedule: str = NotProvided,
        reseed_each_iteration: bool = NotProvided,
        **kwargs: Any,
    ) -> SequentialConfig:
        """Sets the training options (see the class docstring); PPO's options pass through ``kwargs``."""
        super().training(**kwargs)
        for key, value in dict(
            sequential=sequential,
            happo_factor_clip=happo_factor_clip,
            cost_limit=cost_limit,
            cost_gamma=cost_gamma,
            cost_lambda=cost_lambda,
            cost_advantage_normalization=cost_advantage_normalization,
            critic_lr=critic_lr,
            critic_loss=critic_loss,
            critic_update=critic_update,
            huber_delta=huber_delta,
            actor_hiddens=actor_hiddens,
            critic_hiddens=critic_hiddens,
            activation=activation,
            init_log_std=init_log_std,
            use_value_norm=use_value_norm,
            target_kl=target_kl,
            dual_rule=dual_rule,
            dual_lr=dual_lr,
            dual_init=dual_init,
            dual_max=dual_max,
            dual_options=dual_options,
            dual_schedule=dual_schedule,
            reseed_each_iteration=reseed_each_iteration,
        ).items():
            if value is not NotProvided:
                setattr(self, key, value)
        return self

    def get_state(self) -> dict[str, Any]:
        """RLlib's config state, plus every field that RLlib's filter dropped only because it equals -1.

        RLlib 2.60's ``AlgorithmConfig.get_state`` leaves out every attribute equal to its ``DEPRECATED_VALUE``
        (-1), and ``Algorithm.__init__`` rebuilds the config from that state, so ``init_log_std=-1.0`` (or any
        field set to -1) silently came back as its default. Here every such attribute is kept, except RLlib's
        genuinely deprecated fields (those whose default is ``DEPRECATED_VALUE``).
        """
        state = super().get_state()
        deprecated = _rllib_deprecated_fields()
        for key, value in vars(self).items():
            if key not in state and key not in ("algo_class", "_is_frozen") and key not in deprecated:
                state[key] = value
        return state

    # ------------------------------------------------------------------------------------------------------------
    # Validation: every bad value raises ValueError naming the field, before any Ray actor starts.
    # ------------------------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Checks every rllib_safe field, then fills in the per-agent module setup from the task."""
        self._validate_safe_fields()
        if isinstance(self.env_runner_cls, str):  # e.g. `--config env_runner_cls=stock`
            self.env_runner_cls = env_runner_class(self.env_runner_cls)
        info = probe_env(self)
        self.cost_limits(info)  # raises on a malformed cost_limit
        if set(self.policies or ()) != set(info.agent_ids) | {CRITIC_ID}:
            self.multi_agent(policies=set(info.agent_ids) | {CRITIC_ID}, policy_mapping_fn=agent_to_module)
        if isinstance(self.env_runner_cls, type) and issubclass(self.env_runner_cls, LockstepMultiAgentEnvRunner):
            check_lockstep_config(self)
        if self.critic_update == "with_each_agent" and (self.num_learners or 0) > 1:
            # During one agent's turn the other agents' cost critics take no part in the loss: DDP must know.
            self.torch_ddp_kwargs = {"find_unused_parameters": True, **self.torch_ddp_kwargs}
        super().validate()
        self._warn_if_iterations_can_miss_episode_ends(info)

    def _warn_if_iterations_can_miss_episode_ends(self, info: EnvInfo) -> None:
        """Warns when an env samples fewer steps per iteration than one episode (see "Rollout defaults")."""
        if self.batch_mode != "truncate_episodes" or not info.max_episode_steps:
            return
        per_env = self.get_rollout_fragment_length(worker_index=max(1, self.num_env_runners or 0))
        if per_env < info.max_episode_steps:
            logger.warning(
                "Each env samples %d steps per iteration, fewer than one %d-step episode: some iterations will end no "
                "episode, and the cost multipliers then wait for the next measured episode cost. For a fresh cost "
                "every iteration use train_batch_size_per_learner >= num_env_runners x num_envs_per_env_runner x %d "
                "(or batch_mode='complete_episodes').",
                per_env,
                info.max_episode_steps,
                info.max_episode_steps,
            )

    def _validate_safe_fields(self) -> None:
        positive, unit = functools.partial(check_positive, self), functools.partial(check_unit, self)

        for name in ("lr", "critic_lr", "huber_delta", "clip_param", "lost_env_runners_timeout_s"):
            positive(name)
        for name in ("entropy_coeff", "dual_lr", "dual_init"):
            positive(name, allow_zero=True)
        for name in ("gamma", "lambda_", "cost_gamma", "cost_lambda"):
            unit(name)
        if not (isinstance(self.num_epochs, int) and self.num_epochs >= 1):
            raise ValueError(f"`num_epochs` must be an integer >= 1, got {self.num_epochs!r}.")
        if not (isinstance(self.minibatch_size, int) and self.minibatch_size >= 1):
            raise ValueError(f"`minibatch_size` must be an integer >= 1, got {self.minibatch_size!r}.")
        if self.cost_advantage_normalization not in ("standardize", "center"):
            raise ValueError(
                "`cost_advantage_normalization` must be 'standardize' or 'center', "
                f"got {self.cost_advantage_normalization!r}."
            )
        if self.critic_loss not in ("huber", "mse"):
            raise ValueError(f"`critic_loss` must be 'huber' or 'mse', got {self.critic_loss!r}.")
        if self.critic_update not in ("before_agents", "with_each_agent"):
            raise ValueError(
                f"`critic_update` must be 'before_agents' or 'with_each_agent', got {self.critic_update!r}."
            )
        if self.activation not in ("tanh", "relu", "elu", "silu"):
            raise ValueError(f"`activation` must be one of tanh, relu, elu, silu; got {self.activation!r}.")
        log_std = self.init_log_std
        if isinstance(log_std, bool) or not isinstance(log_std, (int, float)) or not math.isfinite(log_std):
            raise ValueError(f"`init_log_std` must be a finite number, got {log_std!r}.")
        for name in ("actor_hiddens", "critic_hiddens"):
            value = getattr(self, name)
            if not (isinstance(value, (list, tuple)) and all(isinstance(h, int) and h > 0 for h in value)):
                raise ValueError(f"`{name}` must be a list of positive integers, got {value!r}.")
        if self.happo_factor_clip is not None and not (0 < self.happo_factor_clip < 1):
            raise ValueError(f"`happo_factor_clip` must be None or in (0, 1), got {self.happo_factor_clip!r}.")
        if self.target_kl is not None:
            positive("target_kl")
        check_dual_fields(self)
        check_choice(self, "dual_schedule", DUAL_SCHEDULES)

    def dual_kwargs(self, num_costs: int) -> dict[str, Any]:
        """Constructor arguments of :func:`rllib_safe.duals.make_dual` from the ``dual_*`` fields."""
        kwargs = {"init": self.dual_init, "upper": self.dual_max, "num_costs": num_costs}
        if self.dual_rule != "pid":
            kwargs["lr"] = self.dual_lr
        if self.dual_rule == "macpo":
            kwargs["constraint_scale"] = 1.0 - self.gamma  # the MACPO code's (J_c − d)(1 − γ)
        return {**kwargs, **self.dual_options}

    def cost_limits(self, info: EnvInfo | None = None) -> dict[str, np.ndarray]:
        """The cost limit d per agent as a length-m vector (``cost_limit`` broadcast; None → the task's default)."""
        info = info or probe_env(self)
        m = info.num_costs

        def as_vector(value: Any, where: str) -> np.ndarray:
            vec = np.broadcast_to(np.asarray(value, dtype=np.float64), (m,)) if np.ndim(value) <= 1 else None
            if vec is None or (np.ndim(value) == 1 and len(value) not in (1, m)):
                raise ValueError(f"`cost_limit`{where} must be a number or a list of {m} numbers, got {value!r}.")
            if not np.all(np.isfinite(vec)) or np.any(vec < 0):
                raise ValueError(f"`cost_limit`{where} must be finite and >= 0, got {value!r}.")
            return vec.copy()

        limit = self.cost_limit if self.cost_limit is not None else info.cost_limit
        if isinstance(limit, dict):
            unknown = set(limit) - set(info.agent_ids)
            if unknown or set(limit) != set(info.agent_ids):
                raise ValueError(
                    f"`cost_limit` dict must have exactly the agents {list(info.agent_ids)}, got {sorted(limit)}."
                )
            return {aid: as_vector(limit[aid], f" for {aid}") for aid in info.agent_ids}
        try:
            vec = as_vector(limit, "")
        except (TypeError, ValueError) as e:
            raise ValueError(str(e) if "cost_limit" in str(e) else f"`cost_limit` is malformed: {limit!r}.") from None
        return {aid: vec for aid in info.agent_ids}

    def get_multi_rl_module_spec(self, *, env=None, spaces=None, inference_only: bool = False, **kwargs):
        """One actor module per agent plus the learner-only critic module (dropped when ``inference_only``)."""
        info = probe_env(self)
        actor_config = {"hiddens": list(self.actor_hiddens), "activation": self.activation}
        actor_config["init_log_std"] = self.init_log_std
        critic_config = {
            "agent_ids": list(info.agent_ids),
            "num_costs": info.num_costs,
            "hiddens": list(self.critic_hiddens),
            "activation": self.activation,
            "use_value_norm": self.use_value_norm,
        }
        return actors_and_critic_spec(
            info, SafeActorTorchRLModule, actor_config, CentralCriticTorchRLModule, critic_config, inference_only
        )

    def get_default_rl_module_spec(self) -> MultiRLModuleSpec:
        """The full module setup with spaces (RLlib's connectors read the critic's spaces from it)."""
        return self.get_multi_rl_module_spec()

    def get_default_learner_class(self) -> type:
        """The learner of the plain sequential base (HAPPO's PPO-clip loss)."""
        from rllib_safe.algorithms.sequential.torch.sequential_torch_learner import SequentialTorchLearner

        return SequentialTorchLearner


class SequentialAlgorithm(Algorithm):
    """Sample → exact episode costs → seeded agent permutation → sequential learner update → weight sync."""

    @classmethod
    def get_default_config(cls) -> SequentialConfig:
        """The default config of this algorithm."""
        return SequentialConfig()

    def setup(self, config: AlgorithmConfig) -> None:
        """Sets up RLlib's parts plus the permutation RNG and the last known episode costs."""
        super().setup(config)
        info = probe_env(self.config)
        self._agent_ids = list(info.agent_ids)
        self._num_costs = info.num_costs
        self._order_rng = np.random.default_rng(self.config.seed)
        self._last_episode_costs: dict[str, np.ndarray] = {}

    def draw_agent_order(self) -> list[str]:
        """The agent permutation of this iteration (seeded; identical on every Learner because it is sent to them)."""
        if not self.config.sequential:
            return list(self._agent_ids)
        return [self._agent_ids[i] for i in self._order_rng.permutation(len(self._agent_ids))]

    def reseed_env_runners(self) -> None:
        """Seeds every EnvRunner's envs (next reset) and RNGs from ``(seed, iteration, EnvRunner)``."""
        base = int(self.config.seed or 0) * 1_000_003 + 7919 * self.iteration

        def reseed(env_runner: Any) -> None:
            seed = base + 104_729 * getattr(env_runner, "worker_index", 0)
            env_runner._seed = seed  # RLlib 2.60 MultiAgentEnvRunner: seed of the next initial reset
            env_runner._needs_initial_reset = True
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)

        self.env_runner_group.foreach_env_runner(reseed, local_env_runner=True)

    def measure_episode_costs(self) -> dict[str, np.ndarray]:
        """This iteration's exact mean episode cost J_c per agent (sum / count over all EnvRunners).

        Only the agents that finished an episode in the iteration are in the result: only these fresh measurements
        move a dual. They also update the last known values (``_last_episode_costs``), which go along for logging
        (and for MACPO's step, which, like the MACPO code, uses the last known J_c).
        """
        fresh = mean_episode_costs(
            self.metrics.peek(ENV_RUNNER_RESULTS, default={}, compile=True), self._agent_ids, self._num_costs
        )
        self._last_episode_costs.update(fresh)
        return fresh

    def training_step(self) -> None:
        """One iteration of the DESIGN.md data flow."""
        if self.config.reseed_each_iteration:
            self.reseed_env_runners()
        start = time.perf_counter()
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            # Waits for restarted EnvRunners while none returns samples; raises EnvRunnersLostError after
            # `lost_env_runners_timeout_s` (with a checkpoint) instead of returning empty, NaN iterations.
            episodes, env_runner_results = sample_with_bounded_wait(self)
            self.metrics.aggregate(env_runner_results, key=ENV_RUNNER_RESULTS)

        sampled = time.perf_counter()
        fresh = self.measure_episode_costs()
        agent_order = self.draw_agent_order()

        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            learner_results = self.learner_group.update(
                episodes=episodes,
                timesteps={
                    NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                        (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0
                    ),
                },
                num_epochs=self.config.num_epochs,
                minibatch_size=self.config.minibatch_size,
                shuffle_batch_per_epoch=self.config.shuffle_batch_per_epoch,
                agent_order=agent_order,
                episode_costs={aid: c.tolist() for aid, c in fresh.items()},
                last_episode_costs={aid: c.tolist() for aid, c in self._last_episode_costs.items()},
            )
            self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        self.metrics.log_value("agent_order", ",".join(agent_order), reduce="item")

        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group,
                policies=set(self._agent_ids),
                inference_only=True,
            )
        # Exact seconds of this iteration's phases (RLlib's timers above are smoothed across iterations).
        self.metrics.log_value((TIMERS, "sample_s"), sampled - start, reduce="sum")
        self.metrics.log_value((TIMERS, "update_and_sync_s"), time.perf_counter() - sampled, reduce="sum")

    def get_state(self, *args: Any, **kwargs: Any) -> dict:
        """RLlib's state plus the permutation RNG and the last known episode costs (RLlib saves neither)."""
        state = super().get_state(*args, **kwargs)
        state["rllib_safe"] = {
            "order_rng": self._order_rng.bit_generator.state,
            "last_episode_costs": {aid: c.tolist() for aid, c in self._last_episode_costs.items()},
        }
        return state

    def set_state(self, state: dict) -> None:
        """Restores RLlib's state and ours."""
        super().set_state(state)
        ours = state.get("rllib_safe")
        if ours:
            self._order_rng.bit_generator.state = ours["order_rng"]
            self._last_episode_costs = {aid: np.asarray(c) for aid, c in ours["last_episode_costs"].items()}


__all__ = [
    "EnvInfo",
    "actors_and_critic_spec",
    "SequentialAlgorithm",
    "SequentialConfig",
    "agent_to_module",
    "check_choice",
    "check_dual_fields",
    "check_positive",
    "check_unit",
    "probe_env",
]
