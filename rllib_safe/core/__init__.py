"""RLModules and batch columns of rllib_safe."""

from rllib_safe.core.columns import CRITIC_ID, SafeColumns

__all__ = ["CRITIC_ID", "SafeColumns"]
