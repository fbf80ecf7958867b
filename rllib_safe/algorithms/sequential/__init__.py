"""The shared on-policy base (config, Algorithm, sequential Learner)."""

from rllib_safe.algorithms.sequential.sequential import SequentialAlgorithm, SequentialConfig

__all__ = ["SequentialAlgorithm", "SequentialConfig"]
