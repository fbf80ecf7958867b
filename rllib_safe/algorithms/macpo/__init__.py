"""MACPO (Multi-Agent Constrained Policy Optimisation)."""

from rllib_safe.algorithms.macpo.macpo import MACPO, MACPOConfig

__all__ = ["MACPO", "MACPOConfig"]
