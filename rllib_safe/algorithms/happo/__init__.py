"""HAPPO."""

from rllib_safe.algorithms.happo.happo import HAPPO, HAPPOConfig

__all__ = ["HAPPO", "HAPPOConfig"]
