"""Torch learners of mappo_lagrangian."""
