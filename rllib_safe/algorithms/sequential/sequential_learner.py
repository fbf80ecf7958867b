"""Framework-agnostic part of the sequential learner: connector pipeline, dual variables and their checkpointing.

Mirrors RLlib's split (``ppo_learner.py`` / ``torch/ppo_torch_learner.py``): :class:`SafeLearner` owns the learner-side
state that RLlib's ``Learner.get_state`` does not save (the dual variables) and is shared with the off-policy family;
:class:`SequentialLearner` adds the on-policy connector pipeline;
:class:`~rllib_safe.algorithms.sequential.torch.sequential_torch_learner.SequentialTorchLearner` does the updates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.connectors.learner import AddOneTsToEpisodesAndTruncate
from ray.rllib.core.learner.learner import Learner

from rllib_safe.algorithms.sequential.sequential import probe_env
from rllib_safe.connectors.learner import AddCostsAndStateFromInfos, CentralizedGAE
from rllib_safe.duals import DualVariable, make_dual


class SafeLearner(Learner):
    """The learner state every rllib_safe algorithm shares: agents, cost limits and dual variables (checkpointed).

    The on-policy :class:`SequentialLearner` and the off-policy HASAC learners extend it.

    Attributes:
        agent_ids: The agents (= actor module ids), in the task's order.
        cost_limits: ``{agent: (m,) array}``, the limits d.
        duals: ``{agent: DualVariable}`` for algorithms with Lagrange multipliers (see :meth:`make_duals`), else {}.
    """

    #: Name under which the multipliers are logged (``lagrange_multiplier`` for λ, ``nu`` for MAFOCOPS' ν).
    dual_name = "lagrange_multiplier"

    def build(self) -> None:
        """Builds modules and optimisers; reads the task's agents and cost layout; creates the dual variables."""
        super().build()
        info = probe_env(self.config)
        self.agent_ids = list(info.agent_ids)
        self.num_costs = info.num_costs
        self.cost_limits = self.config.cost_limits(info)
        self.duals: dict[str, DualVariable] = self.make_duals()
        #: The last known J_c of every agent measured so far (set by each ``update``; read by hooks and logging).
        self.known_episode_costs: dict[str, Any] = {}

    def make_duals(self) -> dict[str, DualVariable]:
        """The dual variables of the algorithm, one per agent with m entries; none in the unconstrained base."""
        return {}

    def _make_config_duals(self) -> dict[str, DualVariable]:
        """One dual per agent from the config's ``dual_rule``/``dual_lr``/``dual_init``/``dual_max``."""
        return {
            aid: make_dual(self.config.dual_rule, **self.config.dual_kwargs(self.num_costs)) for aid in self.agent_ids
        }

    def remember_episode_costs(self, fresh: dict[str, Any], last: dict[str, Any] | None) -> None:
        """Sets :attr:`known_episode_costs`: the last known J_c of every agent (``last``), the fresh ones on top.

        Args:
            fresh: J_c measured since the previous update (the agents whose episodes ended).
            last: The last known J_c of every agent measured so far, or None (then the fresh ones only).
        """
        self.known_episode_costs = {**(last if last is not None else {}), **fresh}

    def update_dual(self, module_id: str, episode_cost: Any) -> bool:
        """Updates agent ``module_id``'s multipliers from a fresh exact mean episode cost J_c.

        Args:
            module_id: The agent.
            episode_cost: J_c measured in this iteration, or None when none of the agent's episodes ended in it
                (then the multipliers stay: a dual moves once per fresh measurement).

        Returns:
            Whether the multipliers moved.
        """
        dual = self.duals.get(module_id)
        if dual is None or episode_cost is None or self.steps_dual_per_minibatch(module_id):
            return False  # per-minibatch duals step in the epochs
        dual.update(np.asarray(episode_cost, dtype=np.float64), self.cost_limits[module_id])
        return True

    def steps_dual_per_minibatch(self, module_id: str) -> bool:
        """Whether agent ``module_id``'s dual steps after every minibatch rather than once per measurement.

        True for rules that step per minibatch (the "macpo" rule); the on-policy family adds ``dual_schedule``.
        """
        dual = self.duals.get(module_id)
        return dual is not None and dual.per_minibatch

    def dual_value(self, module_id: str) -> np.ndarray:
        """The current multipliers of an agent as a length-m array (zeros without duals)."""
        dual = self.duals.get(module_id)
        return np.zeros(self.num_costs) if dual is None else np.atleast_1d(np.asarray(dual.value, dtype=np.float64))

    def get_state(self, *args: Any, **kwargs: Any) -> dict:
        """RLlib's learner state plus the dual variables (RLlib's Learner does not save them)."""
        state = super().get_state(*args, **kwargs)
        state["duals"] = {aid: dual.state_dict() for aid, dual in self.duals.items()}
        return state

    def set_state(self, state: dict) -> None:
        """Restores RLlib's learner state and the dual variables."""
        super().set_state(state)
        for aid, dual_state in state.get("duals", {}).items():
            self.duals[aid].load_state_dict(dual_state)


class SequentialLearner(SafeLearner):
    """Learner of the on-policy family (see the torch subclass for the update itself): adds the connector pipeline."""

    def steps_dual_per_minibatch(self, module_id: str) -> bool:
        """Also True for every dual under ``dual_schedule="per_minibatch"`` (MAFOCOPS' default)."""
        return super().steps_dual_per_minibatch(module_id) or (
            module_id in self.duals and self.config.dual_schedule == "per_minibatch"
        )

    def build(self) -> None:
        """Builds modules, optimisers, the dual variables and the connector pipeline (costs, state, GAE)."""
        super().build()
        #: The J_c measured in the current update only (no entry for an agent none of whose episodes ended).
        self._fresh_episode_costs: dict[str, Any] = {}
        if self._learner_connector is not None and self.config.add_default_connectors_to_learner_pipeline:
            self._learner_connector.prepend(AddOneTsToEpisodesAndTruncate())
            self._learner_connector.insert_after(
                AddOneTsToEpisodesAndTruncate, AddCostsAndStateFromInfos(num_costs=self.num_costs)
            )
            self._learner_connector.append(
                CentralizedGAE(
                    gamma=self.config.gamma,
                    lambda_=self.config.lambda_,
                    cost_gamma=self.config.cost_gamma,
                    cost_lambda=self.config.cost_lambda,
                    cost_advantage_normalization=self.config.cost_advantage_normalization,
                )
            )
