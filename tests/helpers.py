"""Helpers shared by the task tests."""

import numpy as np
from ray.rllib.utils.pre_checks.env import check_multiagent_environments


def zero_actions(env):
    return {aid: np.zeros(env.action_spaces[aid].shape, np.float32) for aid in env.possible_agents}


def random_actions(env, rng):
    return {aid: rng.uniform(-1, 1, env.action_spaces[aid].shape).astype(np.float32) for aid in env.possible_agents}


def check_contract_and_shapes(env, n, obs_dims, act_dims, state_dim):
    """RLlib's env checker, the agent names, the space sizes, and reset observations inside their spaces."""
    check_multiagent_environments(env)
    assert env.possible_agents == [f"agent_{i}" for i in range(n)]
    assert [env.observation_spaces[a].shape[0] for a in env.possible_agents] == obs_dims
    assert [env.action_spaces[a].shape[0] for a in env.possible_agents] == act_dims
    assert env.state_space.shape == (state_dim,)
    obs, infos = env.reset(seed=1)
    for aid in env.possible_agents:
        assert env.observation_spaces[aid].contains(obs[aid])
    return obs, infos
