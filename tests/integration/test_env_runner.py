"""The lock-step EnvRunner returns what RLlib's MultiAgentEnvRunner returns: the same episodes (bitwise, with the
same seeds), callbacks, metrics and state; it refuses what it cannot do; algorithms train through it."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core import COMPONENT_RL_MODULE
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian
from ray.rllib.env.multi_agent_env import MultiAgentEnv
from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner
from ray.rllib.utils.metrics import WEIGHTS_SEQ_NO

from rllib_safe.algorithms.registry import get_config
from rllib_safe.callbacks import SafeCostCallback
from rllib_safe.env_runners import (
    FusedLockstepEnvRunner,
    LockstepError,
    LockstepMultiAgentEnvRunner,
    env_runner_class,
)
from tests.conftest import small_config


def runner_config(task, num_envs, steps=30, batch_mode="truncate_episodes", fragment=20, **env_runners):
    config = (
        get_config("MAPPOLagrangian")
        .environment(task, env_config={"max_episode_steps": steps})
        .env_runners(
            num_env_runners=0,
            num_envs_per_env_runner=num_envs,
            rollout_fragment_length=fragment,
            batch_mode=batch_mode,
            **env_runners,
        )
        .training(actor_hiddens=[32, 32], critic_hiddens=[32, 32])
        .debugging(seed=11)
    )
    config.validate()
    return config


def record(episode):
    """Everything a MultiAgentEpisode chunk carries (ids and wall-clock times aside), as plain values."""
    agents = {}
    for aid, sa in sorted(episode.agent_episodes.items()):
        buffers = {
            "obs": sa.observations,
            "actions": sa.actions,
            "rewards": sa.rewards,
            **{f"extra/{k}": v for k, v in sa.extra_model_outputs.items()},
        }
        agents[aid] = {
            **{name: (b.data, b.lookback, b.finalized) for name, b in buffers.items()},
            "infos": (sa.infos.data, sa.infos.lookback),
            "flags": (sa.is_terminated, sa.is_truncated, sa.t_started, sa.t, sa.module_id),
            "env_t_to_agent_t": (list(episode.env_t_to_agent_t[aid].data), episode.env_t_to_agent_t[aid].lookback),
        }
    flags = (episode.env_t_started, episode.env_t, episode.is_terminated, episode.is_truncated, len(episode))
    return {"episode": flags, "agents": agents, "custom_data": episode.custom_data}


def assert_same(a, b, where="episodes"):
    """Exact equality of nested records: same types, numpy dtypes, shapes and bits."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), where
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"


def metric_values(metrics):
    def value(v):  # numbers as Python floats (one runner sums numpy ints, the other Python ints)
        if isinstance(v, dict):
            return {k: value(x) for k, x in v.items()}
        return float(v.peek() if hasattr(v, "peek") else v)

    keys = (
        "episode_return_mean", "episode_len_mean", "episode_len_max", "num_episodes", "num_env_steps_sampled",
        "num_env_steps_sampled_lifetime", "num_agent_steps_sampled", "num_module_steps_sampled",
        "episode_cost_sum", "episode_cost_count", "episode_return_team", "agent_episode_return_mean", "weights_seq_no",
    )  # fmt: skip
    return {k: value(metrics[k]) for k in keys if k in metrics}


class CountingCallback(SafeCostCallback):
    """SafeCostCallback plus a per-step hook (the runner then appends every step) and a count of each hook."""

    def on_episode_start(self, *, episode, metrics_logger, **kwargs):
        episode.custom_data["steps_seen"] = 0
        metrics_logger.log_value("starts", 1, reduce="sum")

    def on_episode_step(self, *, episode, metrics_logger, **kwargs):
        episode.custom_data["steps_seen"] += 1
        metrics_logger.log_value("step_len_sum", len(episode), reduce="sum")

    def on_episode_end(self, *, episode, metrics_logger, **kwargs):
        super().on_episode_end(episode=episode, metrics_logger=metrics_logger, **kwargs)
        metrics_logger.log_value("ends", 1, reduce="sum")


def sample_calls(runner_cls, config, calls, new_weights=False, **sample_kwargs):
    """Several ``sample()`` calls on a fresh runner (seeded by its constructor); optionally a weight sync first."""
    runner = runner_cls(config=config)
    if new_weights:  # what Algorithm.sync_weights sends: a module state with a newer sequence number
        state = runner.get_state(components=COMPONENT_RL_MODULE)[COMPONENT_RL_MODULE]
        rng = np.random.default_rng(5)
        state = {
            m: {k: v + 0.1 * rng.standard_normal(v.shape).astype(v.dtype) for k, v in s.items()}
            for m, s in state.items()
        }
        runner.set_state({COMPONENT_RL_MODULE: state, WEIGHTS_SEQ_NO: 3})
    try:
        episodes = [runner.sample(**sample_kwargs) for _ in range(calls)]
        return [[record(e) for e in call] for call in episodes], metric_values(runner.get_metrics())
    finally:
        runner.stop()


@pytest.mark.parametrize(
    "task, num_envs",
    [
        ("Safety2x4AntVelocity-v0", 1),
        ("Safety2x4AntVelocity-v0", 4),
        ("SafeShadowHandOver-v0", 1),
        ("SafeShadowHandOver-v0", 4),
    ],
)
def test_same_seeds_give_identical_episodes(task, num_envs):
    """Truncated chunks with lookback, terminations and time limits, infos (costs, states), log-probs, metrics."""
    config = runner_config(task, num_envs, steps=25, fragment=12 if num_envs > 1 else 20)
    stock, stock_metrics = sample_calls(MultiAgentEnvRunner, config, calls=3, new_weights=True)
    fast, fast_metrics = sample_calls(LockstepMultiAgentEnvRunner, config, calls=3, new_weights=True)
    assert_same(stock, fast)
    assert_same(stock_metrics, fast_metrics, "metrics")
    chunks = [ep for call in fast for ep in call]
    assert any(ep["episode"][2] for ep in chunks) and any(ep["episode"][0] > 0 for ep in chunks)  # ends and cuts
    assert fast_metrics["weights_seq_no"] == 3
    first = chunks[0]["agents"]["agent_0"]
    assert {"cost", "state"} <= set(first["infos"][0][1])  # infos[1] of the first chunk: a step's info
    assert fast_metrics["episode_cost_count"]["agent_0"] >= 1
    assert "episode_return_team" in fast_metrics  # the team return is among the metrics compared above


def test_whole_episodes_evaluation_and_step_callbacks_are_identical():
    """``complete_episodes``, ``explore=False`` and an ``on_episode_step`` callback (the step-by-step mode)."""
    config = runner_config("Safety2x4AntVelocity-v0", 2, steps=25, batch_mode="complete_episodes")
    config.callbacks(CountingCallback)
    for explore in (True, False):
        stock, stock_metrics = sample_calls(MultiAgentEnvRunner, config, calls=2, explore=explore)
        fast, fast_metrics = sample_calls(LockstepMultiAgentEnvRunner, config, calls=2, explore=explore)
        assert_same(stock, fast)
        assert_same(stock_metrics, fast_metrics, "metrics")
    assert all(ep["custom_data"]["steps_seen"] == ep["episode"][1] for call in fast for ep in call)


def test_bulk_episodes_keep_custom_data_and_callback_counts():
    """Without a per-step hook the episodes are built in bulk; start/end hooks and custom data still match."""

    class StartEnd(SafeCostCallback):
        def on_episode_start(self, *, episode, metrics_logger, env_index, **kwargs):
            episode.custom_data["env_index"] = env_index
            metrics_logger.log_value("starts", 1, reduce="sum")

    config = runner_config("Safety2x4AntVelocity-v0", 2, steps=20, fragment=15).callbacks(StartEnd)
    runner = LockstepMultiAgentEnvRunner(config=config)
    assert not runner._step_episodes
    calls = [runner.sample() for _ in range(3)]
    metrics = runner.get_metrics()
    chunks = [ep for call in calls for ep in call]
    assert {ep.custom_data["env_index"] for ep in chunks} == {0, 1}
    done = sum(ep.is_done for ep in chunks)
    assert metrics["starts"].peek() == done + 2  # every finished episode started, and the two running ones
    assert metrics["num_episodes"].peek() == done


def test_fused_runner_gives_stock_episodes_up_to_rounding():
    """Six HalfCheetah agents (observations of 8 and 9 numbers) in one stacked batch: same episode layout as RLlib's
    runner (only time limits end these episodes), log-probabilities and distribution inputs of the actors, and
    reproducible for a seed."""
    config = runner_config("Safety6x1HalfCheetahVelocity-v0", 2, steps=15, fragment=10)
    stock, _ = sample_calls(MultiAgentEnvRunner, config, calls=3)
    fused, metrics = sample_calls(FusedLockstepEnvRunner, config, calls=3)
    again, _ = sample_calls(FusedLockstepEnvRunner, config, calls=3)
    assert_same(fused, again)
    runner = FusedLockstepEnvRunner(config=config)
    assert runner.sample(num_timesteps=2) and runner._rows.groups == [[f"agent_{i}" for i in range(6)]]
    for call_stock, call_fused in zip(stock, fused):
        assert [ep["episode"] for ep in call_stock] == [ep["episode"] for ep in call_fused]
        for ep_stock, ep_fused in zip(call_stock, call_fused):
            for aid, a in ep_fused["agents"].items():
                b = ep_stock["agents"][aid]
                assert a["flags"] == b["flags"] and a["env_t_to_agent_t"] == b["env_t_to_agent_t"]
                for name in ("obs", "actions", "rewards", *[key for key in b if key.startswith("extra/")]):
                    assert (a[name][0].dtype, a[name][0].shape, a[name][1:]) == (
                        b[name][0].dtype,
                        b[name][0].shape,
                        b[name][1:],
                    )
                assert set(a["infos"][0][-1]) == set(b["infos"][0][-1])
                adi, actions = a["extra/action_dist_inputs"][0], a["actions"][0]
                logp = TorchDiagGaussian.from_logits(torch.from_numpy(adi)).logp(torch.from_numpy(actions)).numpy()
                np.testing.assert_allclose(a["extra/action_logp"][0], logp, rtol=1e-5, atol=1e-5)
                module = runner.module[aid]
                obs = torch.from_numpy(np.ascontiguousarray(a["obs"][0][:-1]))
                expected = module._forward_exploration({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS].numpy()
                np.testing.assert_allclose(adi, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        stock[0][0]["agents"]["agent_0"]["obs"][0][0], fused[0][0]["agents"]["agent_0"]["obs"][0][0]
    )
    assert metrics["episode_cost_count"]["agent_0"] >= 2

    # An actor whose forward pass is no longer the plain MLP is refused, not silently replaced.
    module = runner.module["agent_3"]
    plain = module._forward
    module._forward = lambda batch, **kw: {k: v * 1.01 for k, v in plain(batch, **kw).items()}
    with torch.no_grad():
        module.log_std.add_(0.1)  # as a weight sync does: the fused runner restacks and checks
    with pytest.raises(ValueError, match="stacked actor of 'agent_3' disagrees"):
        runner.sample(num_timesteps=2)
    runner.stop()


class NotLockstep(MultiAgentEnv):
    """Two agents; agent_1 skips every third step."""

    def __init__(self, config=None):
        super().__init__()
        import gymnasium as gym

        self.possible_agents = self.agents = ["agent_0", "agent_1"]
        self.observation_spaces = {a: gym.spaces.Box(-1, 1, (2,), np.float32) for a in self.agents}
        self.action_spaces = {a: gym.spaces.Box(-1, 1, (1,), np.float32) for a in self.agents}
        self.t = 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return {a: np.zeros(2, np.float32) for a in self.agents}, {}

    def step(self, actions):
        self.t += 1
        acting = self.agents if self.t % 3 else self.agents[:1]
        obs = {a: np.zeros(2, np.float32) for a in acting}
        return obs, {a: 0.0 for a in acting}, {"__all__": False}, {"__all__": self.t >= 10}, {}


class FailsOnce(NotLockstep):
    """Lock-step, 10-step episodes; the third step of the first env instance of the process raises."""

    failures = 0

    def step(self, actions):
        self.t += 1
        if self.t == 3 and FailsOnce.failures == 0:
            FailsOnce.failures += 1
            raise RuntimeError("simulator crashed")
        obs = {a: np.full(2, 0.1 * self.t, np.float32) for a in self.agents}
        done = self.t >= 10
        return obs, {a: 1.0 for a in self.agents}, {"__all__": False}, {a: done for a in [*self.agents, "__all__"]}, {}


@pytest.mark.parametrize("restart", [True, False])
def test_a_failing_env_is_recreated_or_raises_as_rllib_does(restart):
    FailsOnce.failures = 0
    config = (
        PPOConfig()
        .environment(FailsOnce)
        .multi_agent(policies={"agent_0", "agent_1"}, policy_mapping_fn=lambda aid, *a, **k: aid)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=2, env_runner_cls=FusedLockstepEnvRunner)
        .fault_tolerance(restart_failed_sub_environments=restart)
    )
    runner = FusedLockstepEnvRunner(config=config)
    if not restart:
        with pytest.raises(RuntimeError):
            runner.sample(num_timesteps=30)
        return
    episodes = runner.sample(num_timesteps=30)
    assert sum(len(e) for e in episodes) >= 30
    assert all(len(e) == 10 for e in episodes if e.is_done) and any(e.is_done for e in episodes)
    assert runner.get_metrics()["num_env_step_failures"].peek() == 1


def test_an_env_that_is_not_lockstep_gets_a_clear_error():
    config = (
        PPOConfig()
        .environment(NotLockstep)
        .multi_agent(policies={"agent_0", "agent_1"}, policy_mapping_fn=lambda aid, *a, **k: aid)
        .env_runners(num_env_runners=0, env_runner_cls=LockstepMultiAgentEnvRunner)
    )
    runner = LockstepMultiAgentEnvRunner(config=config)
    with pytest.raises(LockstepError, match="agent_1.*every agent must act on every step.*MultiAgentEnvRunner"):
        runner.sample(num_timesteps=10)


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda c: c.env_runners(gym_env_vectorize_mode="async"), "gym_env_vectorize_mode"),
        (lambda c: c.env_runners(env_to_module_connector=lambda env, spaces, device: []), "env_to_module_connector"),
        (lambda c: c.env_runners(episodes_to_numpy=False), "episodes_to_numpy"),
        (lambda c: c.env_runners(env_runner_cls="nope"), "Known names: lockstep, fused, stock"),
    ],
)
def test_unsupported_settings_fail_in_validate_naming_the_field(change, field):
    config = change(small_config("MAPPO"))
    with pytest.raises(ValueError, match=field):
        config.validate()


def test_the_stock_runner_stays_selectable():
    assert small_config("MAPPO").env_runner_cls is FusedLockstepEnvRunner  # the default
    config = small_config("MAPPO")
    config.env_runner_cls = "stock"  # what `--config env_runner_cls=stock` sets
    config.validate()
    assert config.env_runner_cls is MultiAgentEnvRunner is env_runner_class("stock")


#: Samples 20 steps of the toy with each runner class given on the command line; prints one digest of every agent's
#: actions per runner.
_HASH_SEED_PROBE = """
import hashlib, sys
import numpy as np
from rllib_safe.algorithms.registry import get_config
for name in sys.argv[1:]:
    config = (
        get_config("MAPPOLagrangian").environment("SafeMAToy-v0")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=2, env_runner_cls=name).debugging(seed=3)
    )
    config.validate()
    runner = config.env_runner_cls(config=config)
    digest = hashlib.sha256()
    for episode in runner.sample(num_timesteps=20):
        for aid in sorted(episode.agent_episodes):
            digest.update(np.ascontiguousarray(episode.agent_episodes[aid].get_actions()).tobytes())
    runner.stop()
    print(name, digest.hexdigest())
"""


def test_the_default_runner_samples_the_same_actions_whatever_the_hash_seed():
    """A seed fixes the default runner's actions in every process; RLlib's runner draws the agents' actions in the
    order of a Python set, so its actions change with ``PYTHONHASHSEED`` (which makes this test able to fail)."""
    digests = {}
    for hash_seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        proc = subprocess.run(
            [sys.executable, "-c", _HASH_SEED_PROBE, "fused", "stock"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        digests[hash_seed] = dict(
            line.split() for line in proc.stdout.splitlines() if line.startswith(("fused", "stock"))
        )
    assert len({d["stock"] for d in digests.values()}) > 1, "RLlib's runner no longer depends on the hash seed"
    assert len({d["fused"] for d in digests.values()}) == 1, digests


@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize(
    ("name", "cls"), [(None, "FusedLockstepEnvRunner"), ("lockstep", "LockstepMultiAgentEnvRunner")]
)
def test_training_with_remote_lockstep_runners_and_evaluation(name, cls):
    """Remote runners (weights synced each iteration), RLlib's metrics and cost sums, ``explore=False`` evaluation;
    the default runner (None) and the bitwise one."""
    config = (
        small_config("MAPPOLagrangian", env="Safety2x4AntVelocity-v0", steps=40, batch=160)
        .env_runners(num_env_runners=1, num_envs_per_env_runner=2)
        .evaluation(evaluation_interval=1, evaluation_duration=2, evaluation_num_env_runners=0)
    )
    if name is not None:
        config.env_runners(env_runner_cls=name)
    algo = config.build_algo()
    try:
        first = algo.train()
        result = algo.train()
        runners = algo.env_runner_group.foreach_env_runner(lambda r: type(r).__name__, local_env_runner=False)
    finally:
        algo.stop()
    env = result["env_runners"]
    assert runners == [cls]
    assert env["num_env_steps_sampled_lifetime"] >= 320 > first["env_runners"]["num_env_steps_sampled_lifetime"]
    assert env["num_episodes"] >= 1 and env["episode_len_mean"] <= 40
    assert env["episode_cost_count"]["agent_0"] == env["num_episodes"]
    assert env["num_env_steps_sampled_lifetime_throughput"]["throughput_since_last_reduce"] > 0
    assert env["weights_seq_no"] >= 1  # the learner's weights reached the remote runner
    assert result["evaluation"]["env_runners"]["num_episodes"] >= 2
