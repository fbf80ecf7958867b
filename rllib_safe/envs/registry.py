"""The task registry: every task name of rllib_safe, how to build it, and its registration with Tune.

Each environment module exposes ``task_factories()`` (task name -> constructor accepting the task's keyword options);
this module collects them. ``make(name, **options)`` builds a task; :func:`register_envs` registers every name with
Tune's env registry so that ``config.environment("Safety2x4AntVelocity-v0", env_config={...})`` works in RLlib.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from rllib_safe.envs.base import SafeMultiAgentEnv

#: Modules that contribute tasks, each with a ``task_factories()`` function.
TASK_MODULES: tuple[str, ...] = (
    "rllib_safe.envs.safe_mamujoco",
    "rllib_safe.envs.obstacles",
    "rllib_safe.envs.shadow_hand",
    "rllib_safe.envs.toy",
)

_FACTORIES: dict[str, Callable[..., SafeMultiAgentEnv]] | None = None
#: RLlib's EnvContext attributes that are not task options.
_CONTEXT_KEYS = ("worker_index", "vector_index", "num_workers", "remote", "recreated_worker")


def _factories() -> dict[str, Callable[..., SafeMultiAgentEnv]]:
    global _FACTORIES
    if _FACTORIES is None:
        found: dict[str, Callable[..., SafeMultiAgentEnv]] = {}
        for mod in TASK_MODULES:
            found.update(importlib.import_module(mod).task_factories())
        _FACTORIES = found
    return _FACTORIES


def task_names() -> list[str]:
    """All registered task names, sorted."""
    return sorted(_factories())


def make(name: str, **options: Any) -> SafeMultiAgentEnv:
    """Builds a task by name.

    Args:
        name: A task name from :func:`task_names`.
        **options: The task's keyword options (e.g. ``obs_mode``, ``agent_obsk``, ``max_episode_steps``).

    Raises:
        ValueError: If the name is unknown (the message lists the known names) or an option is invalid.
    """
    factories = _factories()
    if name not in factories:
        raise ValueError(f"Unknown task {name!r}. Known tasks: {', '.join(task_names())}.")
    try:
        return factories[name](**options)
    except TypeError as e:  # an option the task does not take
        raise ValueError(f"Invalid option for task {name!r}: {e}") from e


def env_creator(name: str) -> Callable[[dict], SafeMultiAgentEnv]:
    """Returns the Tune/RLlib env creator of a task (accepts an RLlib ``EnvContext`` or a plain dict)."""

    def create(env_config: dict | None = None) -> SafeMultiAgentEnv:
        options = {k: v for k, v in dict(env_config or {}).items() if k not in _CONTEXT_KEYS}
        return make(name, **options)

    return create


def register_envs() -> None:
    """Registers every task name with Tune's env registry (idempotent)."""
    from ray.tune.registry import register_env

    for name in task_names():
        register_env(name, env_creator(name))
