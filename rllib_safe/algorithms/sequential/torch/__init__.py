"""Torch learners of the sequential base."""
