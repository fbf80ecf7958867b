"""RLModules of the off-policy family (HASAC, Constrained-HASAC, WCMASAC).

* :class:`SquashedGaussianActorTorchRLModule` is one agent's policy, the only part that runs on the EnvRunners:
  an MLP gives the mean and the (state-dependent) log standard deviation of a Gaussian whose sample is squashed by
  tanh into [-1, 1] (HARL ``SquashedGaussianPolicy``; RLlib's ``normalize_actions`` maps it onto the task's bounds).
  Log-probabilities carry the exact change-of-variables correction ``−Σ log(1 − tanh(u)²)`` in its stable form
  ``2(log 2 − u − softplus(−2u))`` (:func:`squashed_gaussian_sample`; Haarnoja et al. 2018, App. C).
* :class:`JointCriticsTorchRLModule` lives only on the Learners (``learner_only=True``, module id
  :data:`~rllib_safe.core.columns.CRITIC_ID`): the centralized twin soft Q(s, a_1..a_n) on the global state and the
  joint action (HARL ``SoftTwinContinuousQCritic``), the cost critics of the constrained variants (one per cost
  index: an expected-cost Q_c(s, a) for Constrained-HASAC, a :class:`QuantileAttentionCostCritic` for WCMASAC),
  Polyak-averaged target copies of all of them (RLlib's ``TargetNetworkAPI``) and the per-agent entropy
  temperatures log α_i. Everything in it is checkpointed with the module state.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import TargetNetworkAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

from rllib_safe.core.columns import SafeColumns
from rllib_safe.core.rl_modules import ACTIVATIONS, mlp

#: Bounds of the actor's log standard deviation (HARL ``squashed_gaussian_policy.py``, SAC/Spinning Up).
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def squashed_gaussian_sample(
    mean: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``a = tanh(u)``, ``u = mean + σ ε``, and the exact ``log π(a) = log N(u; mean, σ) − Σ log(1 − tanh(u)²)``.

    ``log N(u; mean, σ) = Σ (−ε²/2 − log σ − log(2π)/2)`` is written in the standard noise ε (no cancellation in
    ``(u − mean)/σ``); the Jacobian uses ``log(1 − tanh(u)²) = 2 (log 2 − u − softplus(−2u))``, exact where the
    naive form underflows to log 0 (Haarnoja et al. 2018, App. C; HARL and RLlib use the same identity).
    Gradients flow into ``mean`` and ``log_std`` (the reparameterisation trick) when ``noise`` has none.
    """
    u = mean + log_std.exp() * noise
    log_normal = (-0.5 * noise**2 - log_std - 0.5 * math.log(2.0 * math.pi)).sum(-1)
    log_jacobian = (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
    return torch.tanh(u), log_normal - log_jacobian


class SquashedGaussianActorTorchRLModule(TorchRLModule):
    """One agent's tanh-squashed Gaussian policy.

    ``model_config`` keys: ``hiddens`` (default ``[256, 256]``, HARL ``hasac.yaml``), ``activation`` (``"relu"``,
    HARL). Set :attr:`uniform_exploration` to sample actions uniformly from [-1, 1] instead (HARL's warm-up).

    Exploration noise on the EnvRunners comes from the module's own generator :attr:`exploration_rng` (seeded from
    the global torch RNG when the module is built, and again by :meth:`reseed`), so an agent's actions do not depend
    on the order in which RLlib calls the agents' modules (that order follows a Python set and changes with
    ``PYTHONHASHSEED``). The Learner samples with the global torch RNG, which it seeds per update.
    """

    def setup(self) -> None:
        """Builds the network that outputs ``[mean, log_std]`` and the exploration generator."""
        cfg = self.model_config or {}
        if not isinstance(self.action_space, gym.spaces.Box):
            raise ValueError(f"SquashedGaussianActorTorchRLModule needs a Box action space, got {self.action_space}.")
        obs_dim = int(np.prod(self.observation_space.shape))
        self.act_dim = int(np.prod(self.action_space.shape))
        hiddens, act = list(cfg.get("hiddens", [256, 256])), cfg.get("activation", "relu")
        self.pi = mlp(obs_dim, hiddens, 2 * self.act_dim, act, out_gain=0.01)  # HARL: output gain 0.01
        #: Uniform random actions on the EnvRunners (set by the Algorithm during the warm-up); not module state.
        self.uniform_exploration = False
        self.exploration_rng = torch.Generator()
        self.reseed()

    def reseed(self) -> None:
        """Seeds :attr:`exploration_rng` from the global torch RNG."""
        self.exploration_rng.manual_seed(int(torch.randint(0, 2**62, ())))

    def mean_log_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pre-squash Gaussian's mean and log standard deviation (clipped to [-20, 2], HARL/SAC)."""
        mean, log_std = self.pi(obs.float()).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action ``a ~ π(·|o)`` in [-1, 1] and its exact log-probability."""
        mean, log_std = self.mean_log_std(obs)
        noise = torch.randn(mean.shape, generator=generator).to(mean.device)
        return squashed_gaussian_sample(mean, log_std, noise)

    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        mean, _ = self.mean_log_std(batch[Columns.OBS])
        return {Columns.ACTIONS: torch.tanh(mean)}

    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        if self.uniform_exploration:
            actions = torch.rand(obs.shape[0], self.act_dim, generator=self.exploration_rng) * 2.0 - 1.0
            logp = torch.full((obs.shape[0],), -self.act_dim * math.log(2.0))
        else:
            actions, logp = self.sample(obs, generator=self.exploration_rng)
        return {Columns.ACTIONS: actions, Columns.ACTION_LOGP: logp}

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.pi(batch[Columns.OBS].float())}


class QuantileAttentionCostCritic(nn.Module):
    """N quantiles of the joint discounted cost return from attention over the agents (WCMASAC Sec. 3.3).

    Each agent's (observation, action) pair is embedded by its own MLP (agents may be heterogeneous), the global
    state by another; one multi-head self-attention block (residual + LayerNorm) mixes the n + 1 tokens, and the
    state token's output feeds an MLP head with N outputs: the quantiles θ_1..θ_N at the levels τ̂_i = (2i − 1)/2N
    (QR-DQN, Dabney et al. 2018b). There is no positional encoding and only the state token is read out, so the
    output does not depend on the order in which the agent tokens are listed.

    Args:
        obs_dims: ``{agent: observation size}``.
        act_dims: ``{agent: action size}``.
        state_dim: Global state size.
        num_quantiles: N.
        embed_dim: Token size.
        num_heads: Attention heads (must divide ``embed_dim``).
        hiddens: Hidden layers of the embedding MLPs and of the head.
        activation: Activation name.
    """

    def __init__(
        self,
        obs_dims: dict[str, int],
        act_dims: dict[str, int],
        state_dim: int,
        num_quantiles: int,
        embed_dim: int = 64,
        num_heads: int = 4,
        hiddens: list[int] | None = None,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        hiddens = list(hiddens or [64])
        self.agent_ids = list(obs_dims)
        self.embed = nn.ModuleDict(
            {aid: mlp(obs_dims[aid] + act_dims[aid], hiddens, embed_dim, activation) for aid in self.agent_ids}
        )
        self.embed_state = mlp(state_dim, hiddens, embed_dim, activation)
        self.attention = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Sequential(ACTIVATIONS[activation](), mlp(embed_dim, hiddens, num_quantiles, activation))

    def forward(
        self,
        state: torch.Tensor,
        obs: dict[str, torch.Tensor],
        actions: dict[str, torch.Tensor],
        agent_order: list[str] | None = None,
    ) -> torch.Tensor:
        """Quantiles ``(B, N)``; ``agent_order`` only changes the order of the tokens (not the result)."""
        order = agent_order or self.agent_ids
        tokens = [self.embed_state(state)] + [self.embed[aid](torch.cat([obs[aid], actions[aid]], -1)) for aid in order]
        x = torch.stack(tokens, dim=1)
        mixed, _ = self.attention(x, x, x, need_weights=False)
        x = self.norm(x + mixed)
        return self.head(x[:, 0])


class JointCriticsTorchRLModule(TorchRLModule, TargetNetworkAPI):
    """Learner-only critics of the off-policy family (see the module docstring).

    The module's observation space is the task's global state space. ``model_config`` keys: ``agent_ids``,
    ``obs_dims``, ``act_dims`` (required), ``hiddens`` (``[256, 256]``), ``activation`` (``"relu"``),
    ``initial_alpha`` (0.001), ``num_costs`` (m, 1), ``cost_critic`` (None, ``"expected"`` or ``"quantile"``),
    ``num_quantiles`` (20), ``attention_dim`` (64), ``attention_heads`` (4), ``cost_hiddens`` (= ``hiddens``).
    """

    def setup(self) -> None:
        """Builds the twin Q, the cost critics and the temperatures (targets come from ``make_target_networks``)."""
        cfg = self.model_config or {}
        self.agent_ids: list[str] = list(cfg["agent_ids"])
        obs_dims, act_dims = dict(cfg["obs_dims"]), dict(cfg["act_dims"])
        state_dim = int(np.prod(self.observation_space.shape))
        joint_dim = state_dim + sum(act_dims[aid] for aid in self.agent_ids)
        hiddens, act = list(cfg.get("hiddens", [256, 256])), cfg.get("activation", "relu")
        self.q = nn.ModuleList([mlp(joint_dim, hiddens, 1, act) for _ in range(2)])
        self.num_costs = int(cfg.get("num_costs", 1))
        self.cost_critic = cfg.get("cost_critic")
        cost_hiddens = list(cfg.get("cost_hiddens") or hiddens)
        if self.cost_critic == "expected":
            self.cost_q = nn.ModuleList([mlp(joint_dim, cost_hiddens, 1, act) for _ in range(self.num_costs)])
        elif self.cost_critic == "quantile":
            self.cost_q = nn.ModuleList(
                [
                    QuantileAttentionCostCritic(
                        obs_dims,
                        act_dims,
                        state_dim,
                        int(cfg.get("num_quantiles", 20)),
                        int(cfg.get("attention_dim", 64)),
                        int(cfg.get("attention_heads", 4)),
                        cost_hiddens,
                        act,
                    )
                    for _ in range(self.num_costs)
                ]
            )
        elif self.cost_critic is not None:
            raise ValueError(f"cost_critic must be None, 'expected' or 'quantile', got {self.cost_critic!r}.")
        log_alpha = math.log(float(cfg.get("initial_alpha", 0.001)))
        self.log_alpha = nn.ParameterDict({aid: nn.Parameter(torch.tensor(log_alpha)) for aid in self.agent_ids})
        # The targets are built with the module (not later by the Learner, as RLlib's DQN does), so that they are
        # part of the module from the start: in every checkpoint and in DDP's initial broadcast.
        self.make_target_networks()

    # -- target networks (RLlib's TargetNetworkAPI; the Learner Polyak-averages the pairs) --------------------------
    def make_target_networks(self) -> None:
        """Target copies of the twin Q and the cost critics."""
        self.q_target = make_target_network(self.q)
        if self.cost_critic is not None:
            self.cost_q_target = make_target_network(self.cost_q)

    def get_target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(main, target) pairs."""
        pairs = [(self.q, self.q_target)]
        if self.cost_critic is not None:
            pairs.append((self.cost_q, self.cost_q_target))
        return pairs

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Target twin Q values of the batch's state and joint action."""
        return {"q_target": self.twin_q(batch[SafeColumns.STATE], batch[Columns.ACTIONS], target=True)}

    # -- evaluations -------------------------------------------------------------------------------------------------
    def joint_action(self, actions: dict[str, torch.Tensor]) -> torch.Tensor:
        """The agents' actions concatenated in the task's agent order."""
        return torch.cat([actions[aid] for aid in self.agent_ids], dim=-1)

    def twin_q(self, state: torch.Tensor, actions: dict[str, torch.Tensor], target: bool = False) -> torch.Tensor:
        """``(2, B)``: Q_1 and Q_2 of (s, a_1..a_n) (target nets if ``target``)."""
        x = torch.cat([state.float(), self.joint_action(actions)], dim=-1)
        return torch.stack([q(x).squeeze(-1) for q in (self.q_target if target else self.q)])

    def cost_values(
        self,
        state: torch.Tensor,
        obs: dict[str, torch.Tensor],
        actions: dict[str, torch.Tensor],
        target: bool = False,
    ) -> torch.Tensor:
        """Cost critic outputs: ``(B, m)`` expected costs, or ``(B, m, N)`` quantiles (target nets if ``target``)."""
        nets = self.cost_q_target if target else self.cost_q
        if self.cost_critic == "expected":
            x = torch.cat([state.float(), self.joint_action(actions)], dim=-1)
            return torch.cat([net(x) for net in nets], dim=-1)
        return torch.stack([net(state.float(), obs, actions) for net in nets], dim=1)

    def alphas(self) -> dict[str, torch.Tensor]:
        """The temperatures α_i = exp(log α_i), detached."""
        return {aid: self.log_alpha[aid].detach().exp() for aid in self.agent_ids}

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Twin Q values of the batch's state and joint action (``actions`` is a dict per agent)."""
        return {"q": self.twin_q(batch[SafeColumns.STATE], batch[Columns.ACTIONS])}
