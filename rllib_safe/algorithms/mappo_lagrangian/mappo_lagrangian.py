"""MAPPO-Lagrangian as published with MACPO.

Source: Gu et al. 2023, "Safe Multi-Agent Reinforcement Learning for Multi-Robot Control", and its code
``MAPPO-Lagrangian/mappo_lagrangian`` (the MACPO repository).

Sequential HAPPO-style updates with the factor M; agent i maximises ``E[M · min(r Ã, clip(r, 1 ± ε) Ã)]`` with the
Lagrangian advantage ``Ã = Â_r − Σ_k λ_k^i Â_c^{i,k}`` (the MACPO code's ``adv_targ − lamda_lagr · cost_adv_targ``).
The multipliers ``λ^i ≥ 0`` follow a selectable rule (``dual_rule``, :mod:`rllib_safe.duals`):

* ``"adam"`` (default; OmniSafe / SafePO PPO-Lag ``Lagrange``: lr 0.035, λ_0 0.001), ``"projected_gradient"`` and
  ``"pid"``: a dual ascent on ``J_c^i − d^i`` (the agent's exact, undiscounted mean episode cost of the iteration
  minus its limit), once per fresh measurement, before the agent's policy update. This is *not* the MACPO code's
  rule; it is the textbook episodic dual ascent of PPO-Lagrangian.
* ``"macpo"``: the MACPO code's rule (``r_mappo_lagr.py`` ``ppo_update``; SafePO ``mappolag.py`` is the same),
  ``λ ← ReLU(λ + lr·[(J_c − d)(1 − γ) + mean(r·Â_c)])`` after every minibatch step of the agent, with the last
  known J_c and the minibatch's ratio (before its step) times its standardised cost advantage. The MACPO code's
  values: ``training(dual_rule="macpo", dual_init=0.78, dual_lr=1e-7)`` (``scripts/train_mujoco.sh``:
  ``lamda_lagr`` 0.78, ``lagrangian_coef_rate`` 1e-7, 1e-6 in later versions of the script; SafePO: 1e-5;
  the MAFOCOPS paper's Table 5 uses ``lamda_lagr`` 0.38 (Ant), 0.46 (HalfCheetah), 0.59/0.52 (ManyAgent Ant
  2x3/2x4) on Safe MAMuJoCo and rates 1e-7/9e-7 on Safe MAIG).
"""

from __future__ import annotations

from rllib_safe.algorithms.sequential.sequential import SAFEPO_INIT_LOG_STD, SequentialAlgorithm, SequentialConfig


class MAPPOLagrangianConfig(SequentialConfig):
    """MAPPO-Lagrangian's config (the sequential base plus the ``dual_*`` fields).

    ``init_log_std`` defaults to :data:`SAFEPO_INIT_LOG_STD` (σ_0 ≈ 0.366, SafePO's MAPPO-L), not the base's −0.5
    (σ_0 ≈ 0.61). Measured (issue 13, ``benchmarks/learning.py``, Safety2x4AntVelocity-v0, 3 seeds to 1M env steps,
    these defaults, ``fused`` runner): median team return 324 / 378 / 440 / 541 / 787 at 100k / 200k / 300k / 500k /
    1M steps against SafePO's MAPPO-L 311 / 367 / 356 / 381 / 417 (its seed-0 progress file), at least SafePO's at
    every 100k; median episode cost ≤ 5.9 (limit 25; SafePO's stays near 0); ``docs/mappolag_vs_safepo_ant2x4vel.png``.
    Under σ_0 ≈ 0.61 the Ant flips over under its own action noise (a policy that only samples N(0, 0.61²) earns −44
    per 182-step episode, N(0, 0.37²) +267 per 591 steps), and MAPPO-L's return was −40 (the sum over the two agents)
    at 100k steps.
    """

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or MAPPOLagrangian)
        self.sequential = True
        self.init_log_std = SAFEPO_INIT_LOG_STD

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
