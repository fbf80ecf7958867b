"""Torch learners of mafocops."""
