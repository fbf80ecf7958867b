"""HASAC: the off-policy base (joint replay, twin soft Q, sequential actor updates with re-sampling)."""

from rllib_safe.algorithms.hasac.hasac import HASAC, HASACConfig

__all__ = ["HASAC", "HASACConfig"]
