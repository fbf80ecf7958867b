"""Utilities of rllib_safe below the algorithms (mirrors ``ray.rllib.utils``)."""
