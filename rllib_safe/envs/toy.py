"""Placeholder: the small constrained task for fast tests (issue 3)."""

from typing import Any


def task_factories() -> dict[str, Any]:
    """The registry entries of this module."""
    return {}
