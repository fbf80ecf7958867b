"""``critic_update``: the critics train once before the agents, or with each agent's minibatches (issue 8, item 5).

Counted on the critic module's Adam states: a parameter's ``step`` is the number of optimiser steps it took.
"""

from __future__ import annotations

import math

import pytest

from rllib_safe.algorithms.registry import get_config
from rllib_safe.core.columns import CRITIC_ID

pytestmark = pytest.mark.usefixtures("ray_local")

AGENTS = ("agent_0", "agent_1")


def adam_steps(learner) -> dict[str, int]:
    """Optimiser steps of the reward critic and of each agent's cost critic (first weight of each MLP)."""
    critic = learner.module[CRITIC_ID].unwrapped()
    state = learner.get_optimizer(CRITIC_ID).state
    first = {"vf": critic.vf[0].weight, **{aid: critic.cost_vf[aid][0].weight for aid in AGENTS}}
    return {name: int(state[p]["step"]) if p in state else 0 for name, p in first.items()}


@pytest.mark.parametrize(
    "algo, critic_update, num_learners",
    [
        ("MAPPOLagrangian", None, 0),
        # Two Learners (DDP): during one agent's turn the other agents' cost critics are unused in the loss.
        ("MAFOCOPS", None, 2),
        ("MACPO", "with_each_agent", 0),
    ],
)
def test_critic_steps_follow_the_schedule(algo, critic_update, num_learners):
    training = {} if critic_update is None else {"critic_update": critic_update}
    config = (
        get_config(algo)
        .environment("SafeMAToy-v0")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1, batch_mode="complete_episodes")
        .learners(num_learners=num_learners)
        .training(
            train_batch_size_per_learner=100,
            minibatch_size=40,
            num_epochs=3,
            actor_hiddens=[8],
            critic_hiddens=[8],
            **training,
        )
        .debugging(seed=4)
    )
    assert config.critic_update == ("with_each_agent" if algo == "MAFOCOPS" else critic_update or "before_agents")
    a = config.build_algo()
    try:
        learners = a.train()["learners"]
        per_learner = a.learner_group.foreach_learner(adam_steps)
    finally:
        a.stop()
    per_learner = [s.get() if hasattr(s, "get") else s for s in per_learner]
    assert len(per_learner) == max(1, num_learners)
    per_epoch = math.ceil(104 / 40)  # 100 env steps (per Learner) in four 25-step episodes + 4 bootstrap rows
    assert all(steps == per_learner[0] for steps in per_learner)  # the Learners stepped alike
    steps = per_learner[0]
    if config.critic_update == "before_agents":
        assert steps == {"vf": 3 * per_epoch, "agent_0": 3 * per_epoch, "agent_1": 3 * per_epoch}
        return
    # With each agent: the reward critic steps in every agent's minibatches, an agent's cost critic in its own only.
    assert steps["vf"] == steps["agent_0"] + steps["agent_1"] and min(steps["agent_0"], steps["agent_1"]) > 0
    if num_learners == 0:  # (with several Learners RLlib sets the number of minibatches per epoch)
        epochs = {aid: learners[aid].get("epochs_trained", 3) for aid in AGENTS}  # MACPO: the critics' schedule
        assert steps == {"vf": sum(epochs.values()) * per_epoch, **{aid: epochs[aid] * per_epoch for aid in AGENTS}}
