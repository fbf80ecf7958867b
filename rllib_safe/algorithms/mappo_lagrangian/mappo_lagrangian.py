"""MAPPO-Lagrangian as published with MACPO.

Source: Gu et al. 2023, "Safe Multi-Agent Reinforcement Learning for Multi-Robot Control", and its code
``MAPPO-Lagrangian/mappo_lagrangian``.

Sequential HAPPO-style updates with the factor M; agent i maximises ``E[M · min(r Ã, clip(r, 1 ± ε) Ã)]`` with the
Lagrangian advantage ``Ã = Â_r − Σ_k λ_k^i Â_c^{i,k}``, and its multipliers ``λ^i ≥ 0`` follow the dual ascent on
``J_c^i − d^i`` (the agent's exact mean episode cost of the iteration minus its limit), once per iteration before
the agent's policy update. The rule and its learning rate are selectable (``dual_rule``: ``"projected_gradient"``,
``"adam"`` (default, OmniSafe PPOLag: lr 0.035, λ_0 0.001), ``"pid"``). The MACPO/SafePO setting (λ_0 = 0.78,
plain gradient steps with ``lagrangian_coef_rate`` 1e-7 / 1e-5, reference_projects B3/B4) is
``training(dual_rule="projected_gradient", dual_init=0.78, dual_lr=1e-5)``.
"""

from __future__ import annotations

from rllib_safe.algorithms.sequential.sequential import SequentialAlgorithm, SequentialConfig


class MAPPOLagrangianConfig(SequentialConfig):
    """MAPPO-Lagrangian's config (the sequential base plus the ``dual_*`` fields)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or MAPPOLagrangian)
        self.sequential = True

    def get_default_learner_class(self) -> type:
        """The Lagrangian learner."""
        from rllib_safe.algorithms.mappo_lagrangian.torch.mappo_lagrangian_torch_learner import (
            MAPPOLagrangianTorchLearner,
        )

        return MAPPOLagrangianTorchLearner


class MAPPOLagrangian(SequentialAlgorithm):
    """MAPPO-Lagrangian as an RLlib Algorithm (registered as ``"MAPPOLagrangian"``)."""

    @classmethod
    def get_default_config(cls) -> MAPPOLagrangianConfig:
        """The default config."""
        return MAPPOLagrangianConfig()
