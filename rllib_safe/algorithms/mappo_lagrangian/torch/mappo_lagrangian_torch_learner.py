"""MAPPO-Lagrangian's learner: the sequential base with one hook changed, the advantage of the clipped surrogate."""

from __future__ import annotations

import torch
from ray.rllib.core.columns import Columns

from rllib_safe.algorithms.sequential.torch.sequential_torch_learner import SequentialTorchLearner
from rllib_safe.core.columns import SafeColumns
from rllib_safe.duals import DualVariable


class MAPPOLagrangianTorchLearner(SequentialTorchLearner):
    """Per-agent multipliers λ^i (one per cost index) and the Lagrangian advantage ``Â_r − Σ_k λ_k Â_c,k``."""

    def make_duals(self) -> dict[str, DualVariable]:
        """One dual variable per agent, from the config's ``dual_*`` fields."""
        return self._make_config_duals()

    def policy_advantage(self, module_id: str, batch: dict) -> torch.Tensor:
        """``Ã = Â_r − Σ_k λ_k^i Â_c^{i,k}`` (MACPO code: ``adv_targ − lamda_lagr · cost_adv_targ``)."""
        lam = torch.as_tensor(self.dual_value(module_id), dtype=torch.float32, device=self._device)
        reward_advantage = batch[Columns.ADVANTAGES]
        cost_advantage = batch[SafeColumns.COST_ADVANTAGES].reshape(len(reward_advantage), -1)
        return reward_advantage - (cost_advantage * lam).sum(-1)
