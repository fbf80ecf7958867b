"""rllib_safe: safe multi-agent reinforcement learning for Ray RLlib (new API stack)."""

__version__ = "0.1.0"

from rllib_safe.compat import patch_multi_agent_episode_slice

patch_multi_agent_episode_slice()


def register() -> None:
    """Registers every task name and algorithm name with Tune; run on import, safe to call again.

    Tune's registry lives in the running Ray cluster, so after ``ray.shutdown()`` and a new ``ray.init()`` the names
    must be registered again: every call registers them (the algorithms' configs call it before building).
    """
    from rllib_safe.algorithms.registry import register_algorithms
    from rllib_safe.envs.registry import register_envs

    register_envs()
    register_algorithms()


register()
