"""The on-policy configs without Ray actors: the state round trip keeps every field (issue 8, bug 3)."""

from __future__ import annotations

import math

import pytest
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.algorithms.ppo import PPOConfig

from rllib_safe.algorithms.macpo import MACPOConfig
from rllib_safe.algorithms.mafocops import MAFOCOPSConfig
from rllib_safe.algorithms.mappo_lagrangian import MAPPOLagrangianConfig
from rllib_safe.algorithms.sequential.sequential import SequentialConfig

CONFIGS = [SequentialConfig, MAPPOLagrangianConfig, MAFOCOPSConfig, MACPOConfig]


@pytest.mark.parametrize("config_class", CONFIGS)
@pytest.mark.parametrize("value", [-1.0, -1])
def test_state_round_trip_keeps_fields_equal_to_minus_one(config_class, value):
    """RLlib's get_state drops attributes equal to -1; Algorithm.__init__ rebuilds its config from that state."""
    config = config_class()
    own = sorted(set(vars(config)) - set(vars(PPOConfig())))
    assert "init_log_std" in own and len(own) > 15
    for key in own:
        setattr(config, key, value)
    config.lr = value  # an RLlib field that is not deprecated
    restored = AlgorithmConfig.from_state(config.get_state())
    assert type(restored) is config_class
    for key in [*own, "lr"]:
        assert getattr(restored, key) == value, key


def test_state_round_trip_of_the_model_fields():
    config = MAPPOLagrangianConfig().training(
        init_log_std=-1.0, actor_hiddens=[7], critic_hiddens=[5, 3], activation="relu", use_value_norm=False
    )
    restored = AlgorithmConfig.from_state(config.get_state())
    assert restored.init_log_std == -1.0
    assert restored.actor_hiddens == [7] and restored.critic_hiddens == [5, 3]
    assert restored.activation == "relu" and restored.use_value_norm is False


def test_default_rollout_is_safepos_ten_envs_by_one_thousand_steps():
    config = MAPPOLagrangianConfig()
    assert config.train_batch_size_per_learner == 10_000 and config.batch_mode == "truncate_episodes"
    assert config.num_env_runners * config.num_envs_per_env_runner == 10
    assert all(config.get_rollout_fragment_length(worker_index=i) == 1000 for i in (1, 2))  # one episode per env


@pytest.mark.parametrize(
    "batch, batch_mode, warns",
    [(10_000, "truncate_episodes", False), (200, "truncate_episodes", True), (200, "complete_episodes", False)],
)
def test_validate_warns_when_an_env_samples_less_than_one_episode_per_iteration(batch, batch_mode, warns, caplog):
    config = (
        MAPPOLagrangianConfig()
        .environment("SafeMAToy-v0", env_config={"max_episode_steps": 100})
        .env_runners(batch_mode=batch_mode)
        .training(train_batch_size_per_learner=batch, minibatch_size=100)
    )
    with caplog.at_level("WARNING", logger="rllib_safe.algorithms.sequential.sequential"):
        config.validate()
    assert ("fewer than one 100-step episode" in caplog.text) is warns


def test_per_cost_limits_of_a_two_cost_task():
    config = MAPPOLagrangianConfig().environment("SafeMAToy2Cost-v0")
    assert {aid: d.tolist() for aid, d in config.cost_limits().items()} == {
        "agent_0": [5.0, 2.5],  # the task's default limits
        "agent_1": [5.0, 2.5],
    }
    assert config.training(cost_limit=[4.0, 1.0]).cost_limits()["agent_1"].tolist() == [4.0, 1.0]
    assert config.training(cost_limit=3.0).cost_limits()["agent_0"].tolist() == [3.0, 3.0]
    limits = config.training(cost_limit={"agent_0": [1.0, 2.0], "agent_1": 7.0}).cost_limits()
    assert limits["agent_0"].tolist() == [1.0, 2.0] and limits["agent_1"].tolist() == [7.0, 7.0]
    for bad in ([1.0, 2.0, 3.0], [1.0, -2.0], {"agent_0": 1.0}):
        with pytest.raises(ValueError, match="`cost_limit`"):
            config.training(cost_limit=bad).cost_limits()
    with pytest.raises(ValueError, match=r"^`cost_limit` must be finite and >= 0, got -1.0.$"):
        config.training(cost_limit=-1.0).cost_limits()
    with pytest.raises(ValueError, match=r"^`cost_limit` for agent_1 must be finite"):
        config.training(cost_limit={"agent_0": 1.0, "agent_1": -1.0}).cost_limits()


def test_mappo_lagrangian_starts_at_safepos_action_sigma():
    # SafePO / MACPO code: σ_0 = std_y_coef · sigmoid(1) = 0.5 / (1 + e^-1) = 0.36553
    assert math.exp(MAPPOLagrangianConfig().init_log_std) == pytest.approx(0.365529, abs=1e-6)
    assert MAFOCOPSConfig().init_log_std == -0.5  # the FOCOPS code's, as the base's
    module = MAPPOLagrangianConfig().environment("SafeMAToy-v0").get_multi_rl_module_spec().build()["agent_0"]
    assert float(module.log_std[0]) == pytest.approx(math.log(0.365529), abs=1e-5)


@pytest.mark.parametrize("bad", ["abc", float("nan"), float("inf"), None, True])
def test_init_log_std_must_be_a_finite_number_before_any_actor_starts(bad):
    with pytest.raises(ValueError, match="`init_log_std` must be a finite number"):
        MAPPOLagrangianConfig().environment("SafeMAToy-v0").training(init_log_std=bad).validate()
