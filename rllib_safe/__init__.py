"""rllib_safe: safe multi-agent reinforcement learning for Ray RLlib (new API stack)."""

__version__ = "0.1.0"

from rllib_safe.compat import patch_multi_agent_episode_slice

patch_multi_agent_episode_slice()
_registered = False


def register() -> None:
    """Registers every task name (and algorithm name) with Tune; idempotent, also run on import."""
    global _registered
    if _registered:
        return
    from rllib_safe.algorithms.registry import register_algorithms
    from rllib_safe.envs.registry import register_envs

    register_envs()
    register_algorithms()
    _registered = True


register()
