"""HAPPO (Kuba et al. 2022, "Trust Region Policy Optimisation in Multi-Agent Reinforcement Learning").

Sequential agent updates in a random permutation; agent i_m maximises
``E[M^{i_{1:m-1}} · min(r Â, clip(r, 1 ± ε) Â)]`` where M is the product of the new/old probability ratios of the agents
already updated (MAFOCOPS paper Eq. 9). This is exactly the sequential base with its default loss; defaults are HARL's
``happo.yaml`` (lr = critic lr 5e-4, 5 epochs, clip 0.2, entropy 0.01, γ 0.99, GAE λ 0.95, max grad norm 10,
hidden [128, 128]) via :class:`~rllib_safe.algorithms.sequential.SequentialConfig`. No cost is optimised; costs are
still measured and logged.
"""

from __future__ import annotations

from rllib_safe.algorithms.sequential.sequential import SequentialAlgorithm, SequentialConfig


class HAPPOConfig(SequentialConfig):
    """HAPPO's config: the sequential base with the HAPPO factor (``sequential=True``)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or HAPPO)
        self.sequential = True


class HAPPO(SequentialAlgorithm):
    """HAPPO as an RLlib Algorithm (registered as ``"HAPPO"``)."""

    @classmethod
    def get_default_config(cls) -> HAPPOConfig:
        """The default config."""
        return HAPPOConfig()
