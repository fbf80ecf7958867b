"""Torch learner of HASAC."""
