"""MAPPO (Yu et al. 2022, "The Surprising Effectiveness of PPO in Cooperative Multi-Agent Games").

All agents update simultaneously from the same batch (no permutation, no factor: M = 1) with PPO's clipped surrogate
on the joint advantage of the centralized critic V(s). Separate (non-shared) actors per agent, as in the MACPO and
SafePO baselines. Defaults as HAPPO's (HARL/SafePO), see :class:`~rllib_safe.algorithms.sequential.SequentialConfig`.
"""

from __future__ import annotations

from rllib_safe.algorithms.sequential.sequential import SequentialAlgorithm, SequentialConfig


class MAPPOConfig(SequentialConfig):
    """MAPPO's config: the base with ``sequential=False``."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or MAPPO)
        self.sequential = False


class MAPPO(SequentialAlgorithm):
    """MAPPO as an RLlib Algorithm (registered as ``"MAPPO"``)."""

    @classmethod
    def get_default_config(cls) -> MAPPOConfig:
        """The default config."""
        return MAPPOConfig()
