"""Every model-shaping config field reaches the built modules, on the Learner and on the EnvRunners (issue 8, bug 3).

RLlib 2.60's ``AlgorithmConfig.get_state`` drops every attribute equal to its ``DEPRECATED_VALUE`` (-1), and
``Algorithm.__init__`` rebuilds the config from that state: ``init_log_std=-1.0`` used to come back as the default
-0.5. The values below include -1.0 and the integer -1 on purpose.
"""

from __future__ import annotations

import pytest
from torch import nn

from rllib_safe.algorithms.registry import get_config
from rllib_safe.core.columns import CRITIC_ID
from rllib_safe.core.rl_modules import ACTIVATIONS

pytestmark = pytest.mark.usefixtures("ray_local")

AGENTS = ("agent_0", "agent_1")


def describe(module: nn.Module) -> dict:
    """Hidden sizes and activation of each MLP of a module, its log-std values and whether it normalises values."""
    mlps = {}
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Sequential):
            linears = [m for m in sub if isinstance(m, nn.Linear)]
            kinds = {type(m).__name__ for m in sub if not isinstance(m, nn.Linear)}
            mlps[name] = {"hiddens": [m.out_features for m in linears[:-1]], "activations": sorted(kinds)}
    out = {"mlps": mlps}
    if hasattr(module, "log_std"):
        out["log_std"] = sorted(set(module.log_std.detach().tolist()))
    if hasattr(module, "use_value_norm"):
        out["use_value_norm"] = module.use_value_norm
    return out


def on_learner(learner) -> dict:
    return {mid: describe(learner.module[mid].unwrapped()) for mid in learner.module.keys()}


def on_env_runner(env_runner) -> dict:
    return {mid: describe(env_runner.module[mid]) for mid in env_runner.module.keys()}


CASES = [
    # algorithm, init_log_std, actor_hiddens, critic_hiddens, activation, use_value_norm, num_learners
    ("MAPPOLagrangian", -1.0, [17], [5, 7, 3], "relu", False, 0),
    ("MAFOCOPS", -1, [8, 6], [9], "elu", True, 1),
    ("MACPO", -1.5, [4, 4, 4], [11, 3], "silu", False, 0),
    ("HAPPO", -3.0, [12], [6], "tanh", True, 0),
    ("MAPPO", 0.25, [3], [2, 2], "relu", True, 0),
]


@pytest.mark.parametrize("algo, log_std, actor, critic, activation, value_norm, num_learners", CASES)
def test_model_fields_reach_learner_and_env_runner_modules(
    algo, log_std, actor, critic, activation, value_norm, num_learners
):
    config = (
        get_config(algo)
        .environment("SafeMAToy-v0")
        .env_runners(num_env_runners=1)
        .learners(num_learners=num_learners)
        .training(
            train_batch_size_per_learner=50,
            minibatch_size=50,
            init_log_std=log_std,
            actor_hiddens=actor,
            critic_hiddens=critic,
            activation=activation,
            use_value_norm=value_norm,
        )
    )
    algo_ = config.build_algo()
    try:
        assert algo_.config.init_log_std == log_std  # the Algorithm's own copy of the config
        learners = algo_.learner_group.foreach_learner(on_learner)
        runners = algo_.env_runner_group.foreach_env_runner(on_env_runner, local_env_runner=False)
    finally:
        algo_.stop()
    learners = [r.get() if hasattr(r, "get") else r for r in learners]
    assert len(learners) == max(1, num_learners) and len(runners) == 1
    act = ACTIVATIONS[activation].__name__
    actor_expected = {"mlps": {"pi": {"hiddens": actor, "activations": [act]}}, "log_std": [float(log_std)]}
    for modules in [*learners, *runners]:
        for aid in AGENTS:
            assert modules[aid] == actor_expected, (aid, modules[aid])
    for modules in runners:
        assert CRITIC_ID not in modules  # the critics live on the Learners only
    for modules in learners:
        critic_module = modules[CRITIC_ID]
        assert critic_module["use_value_norm"] is value_norm
        expected_mlp = {"hiddens": critic, "activations": [act]}
        assert critic_module["mlps"] == {
            "vf": expected_mlp,
            **{f"cost_vf.{aid}": expected_mlp for aid in AGENTS},
        }
