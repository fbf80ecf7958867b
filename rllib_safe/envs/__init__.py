"""Safe multi-agent tasks as RLlib ``MultiAgentEnv``s (see :mod:`rllib_safe.envs.base` for the contract)."""

from rllib_safe.envs.base import NonFiniteError, SafeMultiAgentEnv
from rllib_safe.envs.registry import make, register_envs, task_names

__all__ = ["NonFiniteError", "SafeMultiAgentEnv", "make", "register_envs", "task_names"]
