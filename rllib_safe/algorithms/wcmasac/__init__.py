"""WCMASAC (seed paper 003): HASAC with a quantile cost critic over attention and a CVaR constraint."""

from rllib_safe.algorithms.wcmasac.wcmasac import WCMASAC, WCMASACConfig

__all__ = ["WCMASAC", "WCMASACConfig"]
