"""Torch learner of Constrained-HASAC."""
