"""MAFOCOPS: multi-agent first-order constrained optimisation in policy space (sequential FOCOPS updates)."""

from rllib_safe.algorithms.mafocops.mafocops import MAFOCOPS, PRESETS, MAFOCOPSConfig

__all__ = ["MAFOCOPS", "MAFOCOPSConfig", "PRESETS"]
