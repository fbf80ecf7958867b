"""Constrained-HASAC: HASAC with an expected-cost critic and per-agent Lagrange multipliers."""

from rllib_safe.algorithms.constrained_hasac.constrained_hasac import ConstrainedHASAC, ConstrainedHASACConfig

__all__ = ["ConstrainedHASAC", "ConstrainedHASACConfig"]
