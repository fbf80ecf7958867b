"""Actions of :class:`LockstepMultiAgentEnvRunner`: what RLlib's module-to-env pipeline does, batched per agent.

RLlib's default pipeline (``GetActions`` → ... → ``NormalizeAndClipActions``) draws each module's actions from its
action distribution, computes their log-probabilities and maps them into the env's action space, item by item. Here
the same operations run once per agent on the batch of all acting envs, with tensors of the same shapes, so that the
results are bitwise equal (elementwise CPU kernels may round differently for other tensor sizes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian
from ray.rllib.utils.spaces.space_utils import clip_action, unsquash_action

#: ``log(sqrt(2π))``, the constant of ``torch.distributions.Normal.log_prob``.
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


@dataclass(frozen=True)
class AgentPolicy:
    """How one agent acts: its module's forward pass, how actions are drawn, how they become env actions."""

    agent_id: str
    module_id: str
    forward: Callable[..., dict]
    draw: Callable[[dict], None]
    to_env: Callable[[np.ndarray], np.ndarray]


def make_draw(dist_cls: Any, explore: bool) -> Callable[[dict], None]:
    """The function that adds ``actions`` and ``action_logp`` to a module's output, as RLlib's ``GetActions`` does.

    Args:
        dist_cls: The module's exploration (``explore``) or inference action distribution class.
        explore: Whether to sample (True) or take the distribution's deterministic action (False).
    """
    if explore and dist_cls is TorchDiagGaussian:
        return draw_diag_gaussian

    def draw(out: dict) -> None:
        if Columns.ACTIONS in out:
            return
        dist = dist_cls.from_logits(out[Columns.ACTION_DIST_INPUTS])
        if not explore:
            dist = dist.to_deterministic()
        out[Columns.ACTIONS] = dist.sample()
        if Columns.ACTION_LOGP not in out:
            out[Columns.ACTION_LOGP] = dist.logp(out[Columns.ACTIONS])

    return draw


def draw_diag_gaussian(out: dict) -> None:
    """``TorchDiagGaussian.from_logits(...)``, ``.sample()`` and ``.logp(...)``: the same tensor operations in the same
    order (``torch.distributions.Normal.sample`` and ``log_prob``), without building the distribution objects.
    """
    if Columns.ACTIONS in out:
        return
    loc, log_std = out[Columns.ACTION_DIST_INPUTS].chunk(2, dim=-1)
    scale = log_std.exp()
    actions = torch.normal(loc, scale)
    out[Columns.ACTIONS] = actions
    if Columns.ACTION_LOGP not in out:
        var = scale**2
        out[Columns.ACTION_LOGP] = (-((actions - loc) ** 2) / (2 * var) - scale.log() - _LOG_SQRT_2PI).sum(-1)


def env_action_fn(space: gym.Space, normalize: bool, clip: bool) -> Callable[[np.ndarray], np.ndarray]:
    """RLlib's ``NormalizeAndClipActions`` for a batch of one agent's actions.

    Args:
        space: The agent's action space.
        normalize: ``config.normalize_actions`` (unsquash from [-1, 1] to the bounds, then clip).
        clip: ``config.clip_actions`` (clip to the bounds; only without ``normalize``).
    """
    if isinstance(space, gym.spaces.Box) and space.dtype in (np.float32, np.float64):
        low, high = space.low, space.high
        if normalize and np.all(space.bounded_below) and np.all(space.bounded_above):
            width = high - low

            def unsquash(a: np.ndarray) -> np.ndarray:  # space_utils.unsquash_action, same operations
                return np.clip(low + (a + 1.0) * width / 2.0, low, high)

            return unsquash
        if not normalize and clip:
            return lambda a: np.clip(a, low, high)
        return lambda a: a
    if normalize:
        return lambda a: unsquash_action(a, space)
    if clip:
        return lambda a: clip_action(a, space)
    return lambda a: a


__all__ = ["AgentPolicy", "draw_diag_gaussian", "env_action_fn", "make_draw"]
