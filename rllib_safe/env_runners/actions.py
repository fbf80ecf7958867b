"""How the agents of :class:`LockstepMultiAgentEnvRunner` act: RLlib's module-to-env pipeline, batched.

RLlib's default pipeline (``GetActions`` → ... → ``NormalizeAndClipActions``) draws each module's actions from its
action distribution, computes their log-probabilities and maps them into the env's action space, item by item.

* :class:`ModulePolicy` runs the same operations once per agent on the batch of all acting envs, with tensors of the
  same shapes, so that the results are bitwise equal to RLlib's (CPU kernels may round differently for other sizes).
* :class:`FusedPolicy` runs a group of agents whose modules are :class:`SafeActorTorchRLModule` actors with the same
  layers as one stacked batch in numpy: batched matrix products and one standard-normal draw for the whole group.
  Same distribution of actions, same episode layout; the numbers differ from torch's per-module products in the
  last bits, and the random numbers are others.

Both write the actions and model outputs (``action_dist_inputs``, ``actions``, ``action_logp``) into the runner's
rows and return the actions for the envs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian
from ray.rllib.utils.spaces.space_utils import clip_action, unsquash_action
from torch import nn

from rllib_safe.core.rl_modules import ACTIVATIONS, SafeActorTorchRLModule
from rllib_safe.env_runners.rows import Rows, as_module_input

#: ``log(sqrt(2π))``, the constant of ``torch.distributions.Normal.log_prob``.
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


class ModulePolicy:
    """One agent's module: its forward pass on the acting envs' observations, actions as ``GetActions`` draws them.

    Args:
        agent_id: The agent.
        module: Its RLModule (in eval mode).
        explore: Sample (True) or take the distribution's deterministic action (False).
        to_env: Maps a batch of the agent's actions into its env action space (:func:`env_action_fn`).
    """

    def __init__(self, agent_id: str, module: Any, explore: bool, to_env: Callable) -> None:
        self.agent_ids = [agent_id]
        self.explore = explore
        self.to_env = to_env
        if explore:
            self.forward, dist_cls = module._forward_exploration, module.get_exploration_action_dist_cls()
        else:
            self.forward, dist_cls = module._forward_inference, module.get_inference_action_dist_cls()
        self.draw = make_draw(dist_cls, explore)

    def act(self, rows: Rows, k: int, acting: np.ndarray, everyone: bool, device: Any, t: int) -> dict:
        """Actions of row ``k`` from the observations of row ``k - 1``; returns ``{agent: env actions}``."""
        (aid,) = self.agent_ids
        obs = rows.obs[aid][k - 1] if everyone else rows.obs[aid][k - 1, acting]
        batch = {Columns.OBS: as_module_input(obs, device)}
        out = self.forward(batch, t=t) if self.explore else self.forward(batch)
        self.draw(out)
        block = rows.block_of[aid][0]
        for key, value in out.items():
            rows.write(block, key, k, acting, everyone, value.detach().cpu().numpy()[None])
        actions = rows.column(aid, Columns.ACTIONS)
        return {aid: self.to_env(actions[k] if everyone else actions[k, acting])}


class FusedPolicy:
    """Several agents' :class:`SafeActorTorchRLModule` actors with the same layers, run as one stacked batch in numpy.

    The layers' weights are stacked (the first layer's padded with zero rows up to the largest observation size) and
    restacked by :meth:`refresh` when a parameter changed (a weight sync). Each step is three batched matrix products
    and one standard-normal draw for the whole group, in numpy, whose per-call overhead is a fraction of torch's for
    such small batches. The noise comes from a numpy ``Generator`` that the runner seeds from torch's RNG at the
    start of every ``sample()`` call, so that torch's seed (``config.seed``, ``reseed_env_runners``) fixes it.

    Args:
        agent_ids: The agents of the group (the order of the block).
        modules: Their modules.
        block: Index of the group's observation block in the rows.
        explore: Sample (True) or take the mean action (False).
        to_env: Maps the group's actions ``(group size, envs, action size)`` into the env action spaces.
    """

    def __init__(self, agent_ids: list[str], modules: list[Any], block: int, explore: bool, to_env: Callable) -> None:
        self.agent_ids = list(agent_ids)
        self.modules = list(modules)
        self.block = block
        self.explore = explore
        self.to_env = to_env
        self.noise = np.random.default_rng(0)
        self._params = [p for m in self.modules for p in m.parameters()]
        self._version: tuple | None = None
        self._layers: list = []

    @staticmethod
    def signature(module: Any) -> tuple | None:
        """The layer layout that modules need in common to run together, or None if the module cannot be fused."""
        if type(module) is not SafeActorTorchRLModule:
            return None
        layout = []
        for layer in module.pi:
            if isinstance(layer, nn.Linear):
                layout.append(layer.out_features)
            elif type(layer) in _NUMPY_ACTIVATIONS:
                layout.append(repr(layer))
            else:
                return None
        return tuple(layout)

    def refresh(self, noise: np.random.Generator, probe: np.ndarray) -> None:
        """Takes the noise generator of this ``sample()`` call; restacks the weights if a parameter changed.

        After a restack the stacked actors are checked against each module's own forward pass on ``probe`` (the
        group's current observation block, ``(group size, envs, width)``): a module whose forward is no longer the
        plain MLP mean with a free log-std gets a ``ValueError`` instead of silently different actions.
        """
        self.noise = noise
        version = tuple((id(p), p._version) for p in self._params)
        if version == self._version:
            return
        self._layers = []
        for position, layer in enumerate(self.modules[0].pi):
            if not isinstance(layer, nn.Linear):
                self._layers.append(_NUMPY_ACTIVATIONS[type(layer)](layer))
                continue
            linears = [m.pi[position] for m in self.modules]
            weights = np.zeros((len(linears), max(lin.in_features for lin in linears), layer.out_features), np.float32)
            for g, lin in enumerate(linears):
                weights[g, : lin.in_features] = lin.weight.detach().cpu().numpy().T
            biases = np.stack([lin.bias.detach().cpu().numpy() for lin in linears])[:, None]
            self._layers.append((weights, biases))
        log_std = np.stack([m.log_std.detach().cpu().numpy() for m in self.modules])[:, None]  # (group, 1, actions)
        self._log_std, self._scale = log_std, np.exp(log_std)
        self._logp_offset = (-log_std - _LOG_SQRT_2PI).sum(-1)  # log N(a; μ, σ) = -Σ ε²/2 + Σ(-log σ - log √2π)
        self._version = version
        self._check(probe.astype(np.float32))

    def _check(self, probe: np.ndarray) -> None:
        mean = self._mean(probe)
        for g, (aid, module) in enumerate(zip(self.agent_ids, self.modules)):
            obs = torch.from_numpy(np.ascontiguousarray(probe[g, :, : module.pi[0].in_features]))
            with torch.no_grad():
                expected = module._forward({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS].cpu().numpy()
            fused = np.concatenate([mean[g], np.broadcast_to(self._log_std[g], mean[g].shape)], axis=-1)
            if not np.allclose(fused, expected, rtol=1e-4, atol=1e-5):
                raise ValueError(
                    f"FusedLockstepEnvRunner: the stacked actor of {aid!r} disagrees with its module's forward pass "
                    f"(max difference {np.abs(fused - expected).max():.3g}); the actor module is no longer the MLP "
                    "this runner fuses. Use LockstepMultiAgentEnvRunner (env_runner_cls='lockstep')."
                )

    def _mean(self, h: np.ndarray) -> np.ndarray:
        for layer in self._layers:
            if isinstance(layer, tuple):
                h = np.matmul(h, layer[0])
                h += layer[1]
            else:
                h = layer(h)
        return h

    def act(self, rows: Rows, k: int, acting: np.ndarray, everyone: bool, device: Any, t: int) -> dict:
        """Actions of row ``k`` for every agent of the group; returns ``{agent: env actions}``."""
        block = rows.blocks[self.block]
        mean = self._mean((block[k - 1] if everyone else block[k - 1][:, acting]).astype(np.float32, copy=False))
        if self.explore:  # TorchDiagGaussian: a = μ + σ ε with ε ~ N(0, 1); its log-density from ε
            noise = self.noise.standard_normal(mean.shape, dtype=np.float32)
            actions = mean + self._scale * noise
            logp = np.einsum("gnk,gnk->gn", noise, noise)
            logp *= -0.5
            logp += self._logp_offset
        else:  # TorchDeterministic: the mean, log-probability 0 per action dimension
            actions, logp = mean.copy(), np.zeros_like(mean)
        dist_inputs = np.concatenate([mean, np.broadcast_to(self._log_std, mean.shape)], axis=-1)
        rows.write(self.block, Columns.ACTION_DIST_INPUTS, k, acting, everyone, dist_inputs)
        rows.write(self.block, Columns.ACTIONS, k, acting, everyone, actions)
        rows.write(self.block, Columns.ACTION_LOGP, k, acting, everyone, logp)
        env_actions = self.to_env(actions)
        return {aid: env_actions[g] for g, aid in enumerate(self.agent_ids)}


def _tanh(layer: nn.Module) -> Callable:
    return lambda x: np.tanh(x, out=x)


def _relu(layer: nn.Module) -> Callable:
    return lambda x: np.maximum(x, 0.0, out=x)


def _elu(layer: nn.Module) -> Callable:
    alpha = np.float32(layer.alpha)
    return lambda x: np.where(x > 0, x, alpha * np.expm1(x)).astype(np.float32, copy=False)


def _silu(layer: nn.Module) -> Callable:
    return lambda x: x / (np.float32(1.0) + np.exp(-x))


#: numpy versions of the activations of :data:`rllib_safe.core.rl_modules.ACTIVATIONS`, built from the layer.
_NUMPY_ACTIVATIONS = {nn.Tanh: _tanh, nn.ReLU: _relu, nn.ELU: _elu, nn.SiLU: _silu}
assert set(_NUMPY_ACTIVATIONS) == set(ACTIVATIONS.values()), "an actor activation has no numpy version"


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
    """``TorchDiagGaussian.from_logits``, ``sample`` and ``logp`` without building the distribution objects.

    The same tensor operations in the same order as ``torch.distributions.Normal.sample`` and ``log_prob``.
    """
    if Columns.ACTIONS in out:
        return
    loc, log_std = out[Columns.ACTION_DIST_INPUTS].chunk(2, dim=-1)
    scale = log_std.exp()
    actions = torch.normal(loc, scale)
    out[Columns.ACTIONS] = actions
    if Columns.ACTION_LOGP not in out:
        out[Columns.ACTION_LOGP] = (-((actions - loc) ** 2) / (2 * scale**2) - scale.log() - _LOG_SQRT_2PI).sum(-1)


def group_env_action_fn(spaces: list[gym.Space], normalize: bool, clip: bool) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`env_action_fn` for the actions ``(group size, envs, action size)`` of a group of agents."""
    if all(s == spaces[0] for s in spaces):
        return env_action_fn(spaces[0], normalize, clip)
    per_agent = [env_action_fn(s, normalize, clip) for s in spaces]
    return lambda a: [fn(a[g]) for g, fn in enumerate(per_agent)]


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

            def unsquash(a: np.ndarray) -> np.ndarray:  # space_utils.unsquash_action: the same operations, in place
                out = np.add(a, 1.0)
                np.multiply(out, width, out=out)
                np.divide(out, 2.0, out=out)
                np.add(low, out, out=out)
                np.maximum(out, low, out=out)  # np.clip(out, low, high) for every non-NaN value
                return np.minimum(out, high, out=out)

            return unsquash
        if not normalize and clip:
            return lambda a: np.minimum(np.maximum(a, low), high)
        return lambda a: a
    if normalize:
        return lambda a: unsquash_action(a, space)
    if clip:
        return lambda a: clip_action(a, space)
    return lambda a: a


__all__ = ["FusedPolicy", "ModulePolicy", "draw_diag_gaussian", "env_action_fn", "group_env_action_fn", "make_draw"]
