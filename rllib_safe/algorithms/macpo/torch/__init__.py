"""Torch learner and second-order step of MACPO."""
