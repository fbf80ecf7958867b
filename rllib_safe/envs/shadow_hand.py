"""Placeholder: filled in by the task-suite work (issue 4)."""

from typing import Any


def task_factories() -> dict[str, Any]:
    """The registry entries of this module."""
    return {}
