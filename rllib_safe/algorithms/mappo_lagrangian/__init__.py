"""MAPPO-Lagrangian."""

from rllib_safe.algorithms.mappo_lagrangian.mappo_lagrangian import MAPPOLagrangian, MAPPOLagrangianConfig

__all__ = ["MAPPOLagrangian", "MAPPOLagrangianConfig"]
