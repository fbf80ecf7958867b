"""RLModules of the on-policy family: per-agent Gaussian actors and a learner-only centralized critic module.

* :class:`SafeActorTorchRLModule` is one agent's policy, the only part that runs on the EnvRunners: an MLP gives the
  mean of a diagonal Gaussian whose log standard deviation is a free, state-independent parameter (HAPPO/MACPO/SafePO
  actors). Action distribution inputs are ``[mean, log_std]`` (RLlib's ``TorchDiagGaussian`` layout).
* :class:`CentralCriticTorchRLModule` lives only on the Learners (``learner_only=True``, module id
  :data:`~rllib_safe.core.columns.CRITIC_ID`). It holds the centralized reward critic ``V(s)`` on the global state
  and one cost critic ``V_c^i(s)`` per agent with one output per cost index, each with its own value normaliser
  (:class:`ValueNorm`): the cost critics never share the reward's statistics.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

from rllib_safe.core.columns import SafeColumns

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU}


def mlp(
    in_dim: int, hiddens: list[int], out_dim: int, activation: str = "tanh", out_gain: float = 1.0
) -> nn.Sequential:
    """An MLP with orthogonal initialisation (gain sqrt(2) on hidden layers, ``out_gain`` on the output layer)."""
    layers: list[nn.Module] = []
    last = in_dim
    for h in hiddens:
        linear = nn.Linear(last, h)
        nn.init.orthogonal_(linear.weight, gain=np.sqrt(2))
        nn.init.zeros_(linear.bias)
        layers += [linear, ACTIVATIONS[activation]()]
        last = h
    out = nn.Linear(last, out_dim)
    nn.init.orthogonal_(out.weight, gain=out_gain)
    nn.init.zeros_(out.bias)
    layers.append(out)
    return nn.Sequential(*layers)


class SafeActorTorchRLModule(TorchRLModule):
    """One agent's diagonal-Gaussian policy.

    ``model_config`` keys: ``hiddens`` (default ``[64, 64]``), ``activation`` (``"tanh"``), ``init_log_std``
    (``-0.5``, the FOCOPS reference code's initial log standard deviation).
    """

    def setup(self) -> None:
        """Builds the mean network and the log-std parameter."""
        cfg = self.model_config or {}
        if not isinstance(self.action_space, gym.spaces.Box):
            raise ValueError(f"SafeActorTorchRLModule needs a Box action space, got {self.action_space}.")
        obs_dim = int(np.prod(self.observation_space.shape))
        act_dim = int(np.prod(self.action_space.shape))
        self.pi = mlp(obs_dim, list(cfg.get("hiddens", [64, 64])), act_dim, cfg.get("activation", "tanh"), 0.01)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(cfg.get("init_log_std", -0.5))))

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        mean = self.pi(batch[Columns.OBS].float())
        return {Columns.ACTION_DIST_INPUTS: torch.cat([mean, self.log_std.expand_as(mean)], dim=-1)}


class ValueNorm(nn.Module):
    """Running normaliser of value targets (the ``ValueNorm`` of MAPPO/HAPPO: debiased EMA of mean and mean square).

    The critic predicts normalised values; GAE denormalises them. Statistics are float32 buffers (as in HARL's
    ``ValueNorm``), so they are part of the module state: checkpointed exactly with the weights (RLlib's module state
    round trip casts float64 to float32).

    With several Learners (DDP) each Learner folds the targets of its own shard into its statistics (in the learner
    connector), then torch's ``DistributedDataParallel`` broadcasts rank 0's buffers at the critic's next forward
    (``broadcast_buffers=True``, RLlib's default): every Learner's normaliser is overwritten by rank 0's, so the
    statistics follow rank 0's shards only, and within one iteration the ranks normalise their targets with
    statistics that differ by their own shard's update.

    Args:
        dim: Number of independent value streams (e.g. cost indices).
        beta: EMA coefficient (MAPPO default ``0.99999``).
        epsilon: Floor of the debiasing term and of the variance.
    """

    def __init__(self, dim: int, beta: float = 0.99999, epsilon: float = 1e-5) -> None:
        super().__init__()
        self.beta, self.epsilon = beta, epsilon
        self.register_buffer("running_mean", torch.zeros(dim, dtype=torch.float32))
        self.register_buffer("running_mean_sq", torch.zeros(dim, dtype=torch.float32))
        self.register_buffer("debiasing_term", torch.zeros((), dtype=torch.float32))

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The debiased mean and variance."""
        debias = self.debiasing_term.clamp(min=self.epsilon)
        mean = self.running_mean / debias
        var = (self.running_mean_sq / debias - mean**2).clamp(min=1e-2)
        return mean, var

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Folds a batch of raw targets ``x`` of shape ``(N, dim)`` into the statistics."""
        x = x.to(torch.float32).reshape(-1, self.running_mean.shape[0])
        w = self.beta
        self.running_mean.mul_(w).add_(x.mean(0) * (1 - w))
        self.running_mean_sq.mul_(w).add_((x**2).mean(0) * (1 - w))
        self.debiasing_term.mul_(w).add_(1 - w)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw -> normalised units."""
        mean, var = self.mean_var()
        return ((x - mean.to(x.dtype)) / var.sqrt().to(x.dtype)).to(x.dtype)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised -> raw units."""
        mean, var = self.mean_var()
        return (x * var.sqrt().to(x.dtype) + mean.to(x.dtype)).to(x.dtype)


class CentralCriticTorchRLModule(TorchRLModule):
    """Learner-only critics on the global state: reward ``V(s)`` and per-agent cost critics ``V_c^i(s)``.

    The module's observation space is the task's global state space. ``model_config`` keys: ``agent_ids`` (required),
    ``num_costs`` (``m``, default 1), ``hiddens`` (``[64, 64]``), ``activation`` (``"tanh"``),
    ``use_value_norm`` (True), ``value_norm_beta`` (0.99999).
    """

    def setup(self) -> None:
        """Builds the reward critic, the cost critics and their normalisers."""
        cfg = self.model_config or {}
        self.agent_ids: list[str] = list(cfg["agent_ids"])
        self.num_costs = int(cfg.get("num_costs", 1))
        hiddens, act = list(cfg.get("hiddens", [64, 64])), cfg.get("activation", "tanh")
        state_dim = int(np.prod(self.observation_space.shape))
        self.use_value_norm = bool(cfg.get("use_value_norm", True))
        beta = float(cfg.get("value_norm_beta", 0.99999))
        self.vf = mlp(state_dim, hiddens, 1, act)
        self.cost_vf = nn.ModuleDict({aid: mlp(state_dim, hiddens, self.num_costs, act) for aid in self.agent_ids})
        self.value_norm = ValueNorm(1, beta)
        self.cost_value_norm = nn.ModuleDict({aid: ValueNorm(self.num_costs, beta) for aid in self.agent_ids})

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Normalised predictions: ``vf_preds`` ``(N,)`` and ``cost_vf_preds/<agent>`` ``(N, m)``."""
        state = batch[SafeColumns.STATE].float()
        out = {Columns.VF_PREDS: self.vf(state).squeeze(-1)}
        for aid in self.agent_ids:
            out[f"cost_vf_preds/{aid}"] = self.cost_vf[aid](state)
        return out

    @torch.no_grad()
    def raw_values(self, state: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Denormalised reward values ``(N,)`` and cost values ``{agent: (N, m)}`` for GAE."""
        out = self._forward({SafeColumns.STATE: state})
        values = out[Columns.VF_PREDS]
        cost_values = {aid: out[f"cost_vf_preds/{aid}"] for aid in self.agent_ids}
        if self.use_value_norm:
            values = self.value_norm.denormalize(values.unsqueeze(-1)).squeeze(-1)
            cost_values = {aid: self.cost_value_norm[aid].denormalize(v) for aid, v in cost_values.items()}
        return values, cost_values
