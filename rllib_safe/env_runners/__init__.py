"""EnvRunners of rllib_safe: the lock-step multi-agent runner that samples at the simulator's speed.

Select a runner with ``config.env_runners(env_runner_cls=...)``; :func:`env_runner_class` resolves the names
``"fused"`` (:class:`FusedLockstepEnvRunner`, the default of rllib_safe's on-policy configs: the fastest, and its
actions for a seed do not depend on ``PYTHONHASHSEED``), ``"lockstep"`` (:class:`LockstepMultiAgentEnvRunner`: bitwise
RLlib's episodes within a process) and ``"stock"`` (RLlib's ``MultiAgentEnvRunner``), as accepted by the configs'
``env_runner_cls`` field and ``--config``.
"""

from rllib_safe.env_runners.lockstep_env_runner import (
    FusedLockstepEnvRunner,
    LockstepError,
    LockstepMultiAgentEnvRunner,
    check_lockstep_config,
)


def env_runner_class(name: str) -> type:
    """The EnvRunner class registered under ``name`` (``ValueError`` listing the known names otherwise)."""
    from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner

    known = {"lockstep": LockstepMultiAgentEnvRunner, "fused": FusedLockstepEnvRunner, "stock": MultiAgentEnvRunner}
    if name not in known:
        raise ValueError(f"Unknown `env_runner_cls` {name!r}. Known names: {', '.join(known)} (or an EnvRunner class).")
    return known[name]


__all__ = [
    "FusedLockstepEnvRunner",
    "LockstepError",
    "LockstepMultiAgentEnvRunner",
    "check_lockstep_config",
    "env_runner_class",
]
