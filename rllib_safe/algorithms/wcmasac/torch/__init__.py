"""Torch learner of WCMASAC."""
