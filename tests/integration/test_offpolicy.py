"""The off-policy family with a real local Ray: remote EnvRunners with several envs fill an aligned joint replay,
every algorithm logs its losses, α, λ, CVaR and buffer size, checkpoints resume exactly (with and without the
buffer), two Learners (DDP) stay identical, and the names work from Tune and ``rllib-safe train``."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch

from rllib_safe.algorithms.registry import get_config
from rllib_safe.core.columns import CRITIC_ID

pytestmark = pytest.mark.usefixtures("ray_local")

AGENTS = ["agent_0", "agent_1"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The local Learner runs in this process; one torch thread (two are many times slower on a loaded 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(algo, env="SafeMAToy-v0", env_config=None, **training):
    """A config that learns from the first iteration on: small nets, small batches, a few updates per iteration."""
    settings = dict(
        num_steps_sampled_before_learning_starts=0,
        train_batch_size_per_learner=32,
        env_steps_per_iteration=100,
        updates_per_env_step=0.05,
        n_step=3,
        actor_hiddens=[16],
        critic_hiddens=[16],
        replay_buffer_config={"capacity": 5000},
        auto_alpha=True,
        initial_alpha=0.1,
    )
    if algo == "WCMASAC":
        settings.update(attention_dim=8, attention_heads=2, num_quantiles=8, cost_critic_hiddens=[16])
    settings.update(training)
    return (
        get_config(algo)
        .environment(env, env_config=env_config or {})
        .env_runners(num_env_runners=0, batch_mode="complete_episodes")
        .training(**settings)
        .debugging(seed=3)
    )


def test_remote_runners_several_envs_and_two_ddp_learners():
    """2 EnvRunners x 2 envs feeding 2 Learners (DDP).

    Alignment: the toy's observation of agent i after step t is [t/T, s_i, s_other, C_t/T] and its state is
    [t/T, s_0, s_1, C_t/T], so a row whose observations, next observations and states agree on all of them for
    both agents holds one env step of one env. DDP: both Learners end with identical weights (actors, critics,
    targets, α), multipliers and agent orders."""
    config = tiny("WCMASAC", cost_limit=1.0, env_steps_per_iteration=200).learners(num_learners=2)
    config.env_runners(
        num_env_runners=2, num_envs_per_env_runner=2, num_cpus_per_env_runner=0, batch_mode="truncate_episodes"
    )
    algo = config.build_algo()
    try:
        results = [algo.train() for _ in range(2)]
        batch = algo.replay_buffer.sample(len(algo.replay_buffer), n_step=1)
        snapshots = algo.learner_group.foreach_learner(
            lambda learner: (
                {
                    mid: {
                        k: v.detach().cpu().numpy().copy()
                        for k, v in learner.module[mid].unwrapped().state_dict().items()
                    }
                    for mid in ("agent_0", "agent_1", "__critic__")
                },
                {aid: dual.state_dict() for aid, dual in learner.duals.items()},
                learner.last_agent_orders,
            )
        )
    finally:
        algo.stop()
    for prefix in ("", "next_"):
        state, obs0, obs1 = batch[f"{prefix}state"], batch[f"{prefix}obs/agent_0"], batch[f"{prefix}obs/agent_1"]
        for obs, own, other in ((obs0, 1, 2), (obs1, 2, 1)):
            np.testing.assert_array_equal(obs[:, 0], state[:, 0])  # t / T
            np.testing.assert_array_equal(obs[:, 1], state[:, own])  # own previous speed
            np.testing.assert_array_equal(obs[:, 2], state[:, other])  # the other agent's
            np.testing.assert_array_equal(obs[:, 3], state[:, 3])  # episode cost so far
    # Rows come from several envs: more distinct episode starts (t = 0 rows) than one env could give.
    assert len(np.unique(batch["state"][batch["state"][:, 0] == 0][:, 1])) >= 4
    last = results[-1]
    assert last["replay_buffer"]["size"] == last["env_runners"]["num_env_steps_sampled_lifetime"] == 400
    critic = last["learners"][CRITIC_ID]
    assert last["num_gradient_updates"] == critic["num_gradient_updates"] == 10
    for key in ("q_loss", "cost_critic_loss", "cvar", "cvar_budget", "gradient_updates_per_s"):
        assert np.isfinite(critic[key]), key
    assert critic["cvar_budget"] == pytest.approx(1.0 * (1 - 0.99**25) / (1 - 0.99) / 25)
    for aid in AGENTS:
        for key in ("policy_loss", "alpha", "entropy", "lagrange_multiplier"):
            assert np.isfinite(last["learners"][aid][key]), (aid, key)
    (w0, d0, o0), (w1, d1, o1) = [s.get() if hasattr(s, "get") else s for s in snapshots]
    assert o0 == o1 and len(o0) == 10
    for mid in w0:
        for key in w0[mid]:
            np.testing.assert_array_equal(w0[mid][key], w1[mid][key], err_msg=f"{mid}/{key}")
    assert d0 == d1 and d0["agent_0"]["value"] != [0.001]


@pytest.mark.parametrize("algo", ["HASAC", "ConstrainedHASAC"])
def test_each_algorithm_trains_and_logs(algo):
    a = tiny(algo, cost_limit=1.0, dual_rule="projected_gradient", dual_lr=0.01).build_algo()
    try:
        results = [a.train() for _ in range(2)]
    finally:
        a.stop()
    learners = results[-1]["learners"]
    assert np.isfinite(learners[CRITIC_ID]["q_loss"])
    if algo == "HASAC":
        assert "cost_critic_loss" not in learners[CRITIC_ID] and "lagrange_multiplier" not in learners["agent_0"]
    else:
        assert np.isfinite(learners[CRITIC_ID]["cost_critic_loss"]) and "cost_value" in learners[CRITIC_ID]
        # One projected-gradient step per iteration from the exact episode cost: λ = 0.001 + 0.01 (J1 - 1) + ...
        costs = [r["learners"]["agent_0"]["episode_cost"] for r in results]
        expected = max(0.0, 0.001 + 0.01 * (costs[0] - 1.0))
        expected = max(0.0, expected + 0.01 * (costs[1] - 1.0))
        assert learners["agent_0"]["lagrange_multiplier"] == pytest.approx(expected)


def test_warm_up_collects_without_learning_and_then_updates_at_the_configured_rate():
    a = tiny("HASAC", num_steps_sampled_before_learning_starts=200, env_steps_per_iteration=100).build_algo()
    try:
        results = [a.train() for _ in range(4)]
    finally:
        a.stop()
    updates = [r["num_gradient_updates"] for r in results]
    # Learning starts once 200 env steps have been sampled (after the 2nd iteration's sampling), then runs
    # 0.05 updates per env step x the 100 env steps of each iteration.
    assert updates == [0, 5, 5, 5]
    assert results[-1]["num_gradient_updates_lifetime"] == 15
    assert [r["replay_buffer"]["size"] for r in results] == [100, 200, 300, 400]


def _numbers(result):
    learners = result["learners"]
    return (
        result["env_runners"]["episode_return_mean"],
        learners[CRITIC_ID]["q_loss"],
        learners[CRITIC_ID]["cost_critic_loss"],
        learners[CRITIC_ID]["cvar"],
        learners["agent_0"]["policy_loss"],
        learners["agent_1"]["alpha"],
        learners["agent_1"]["lagrange_multiplier"],
        result["agent_order"],
        result["replay_buffer"]["size"],
    )


def test_checkpoint_restore_then_train_gives_the_same_numbers():
    from rllib_safe.algorithms.wcmasac import WCMASAC

    config = tiny("WCMASAC", cost_limit=1.0, reseed_each_iteration=True, dual_lr=0.05)
    with tempfile.TemporaryDirectory() as ckpt:
        a = config.build_algo()
        a.train()
        a.train()
        a.save_to_path(ckpt)
        uninterrupted = [_numbers(a.train()) for _ in range(2)]
        state = a.learner_group._learner.get_state()
        a.stop()
        b = WCMASAC.from_checkpoint(ckpt)
        resumed = [_numbers(b.train()) for _ in range(2)]
        restored_state = b.learner_group._learner.get_state()
        b.stop()
    assert resumed == uninterrupted
    assert restored_state["duals"] == state["duals"]
    assert state["duals"]["agent_0"]["value"] != [0.001]  # the multipliers moved (and were restored)


def test_checkpoints_without_the_replay_buffer():
    from rllib_safe.algorithms.hasac import HASAC

    with tempfile.TemporaryDirectory() as path:
        a = tiny("HASAC", store_buffer_in_checkpoints=False).build_algo()
        a.train()
        assert len(a.replay_buffer) == 100 and "replay_buffer" not in a.get_state()["rllib_safe"]
        a.save_to_path(path)
        a.stop()
        b = HASAC.from_checkpoint(path)
        assert len(b.replay_buffer) == 0 and b.replay_buffer.num_added == 0
        b.stop()


def test_tune_runs_the_off_policy_algorithms_by_name(tmp_path):
    from ray import tune

    tuner = tune.Tuner(
        "WCMASAC",
        param_space=tiny("WCMASAC"),
        run_config=tune.RunConfig(stop={"training_iteration": 1}, storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    assert not results.errors
    assert np.isfinite(results[0].metrics["learners"][CRITIC_ID]["cvar"])


def test_cli_trains_wcmasac(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rllib_safe.cli", "train", "--algo", "wcmasac", "--env", "SafeMAToy-v0"]
    cmd += ["--num-env-runners", "0", "--num-cpus", "2", "--stop-iters", "2", "--output", str(out), "--config"]
    cmd += [
        "num_steps_sampled_before_learning_starts=0",
        "train_batch_size_per_learner=32",
        "env_steps_per_iteration=100",
        "actor_hiddens=[16]",
        "critic_hiddens=[16]",
        "attention_dim=8",
        "attention_heads=2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "iter    2 | steps      200 | return" in proc.stdout
    assert "CVaR" in proc.stdout and "buffer 200" in proc.stdout and "λ" in proc.stdout
    rows = [json.loads(line) for line in (out / "run" / "progress.jsonl").read_text().splitlines()]
    assert rows[-1]["critic/cvar"] is not None and rows[-1]["replay_buffer/size"] == 200


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_wcmasac_learner_on_cuda():
    a = tiny("WCMASAC", cost_limit=1.0).learners(num_gpus_per_learner=1).build_algo()
    try:
        result = a.train()
        assert next(a.learner_group._learner.module[CRITIC_ID].parameters()).is_cuda
    finally:
        a.stop()
    assert result["num_gradient_updates"] > 0 and np.isfinite(result["learners"][CRITIC_ID]["cvar"])


def test_constrained_hasac_duals_step_once_per_fresh_measurement():
    """25-step episodes in 10-step iterations: most iterations end no episode. Constrained-HASAC's multipliers must
    move once per fresh J_c (projected gradient by hand), never again on the last known one."""
    lr, limit = 0.05, 0.5
    config = tiny(
        "ConstrainedHASAC",
        env_steps_per_iteration=10,
        updates_per_env_step=0.2,
        train_batch_size_per_learner=8,
        dual_rule="projected_gradient",
        dual_lr=lr,
        dual_init=0.0,
        cost_limit=limit,
    ).env_runners(batch_mode="truncate_episodes", num_envs_per_env_runner=1)
    algo = config.build_algo()
    expected = dict.fromkeys(AGENTS, 0.0)
    fresh = stale = 0
    try:
        for _ in range(8):
            result = algo.train()
            env, learners = result["env_runners"], result["learners"]
            assert result["num_gradient_updates"] > 0  # every iteration updates (so every fresh J_c is used at once)
            is_fresh = env.get("episode_cost_count", {}).get("agent_0", float("nan")) > 0
            fresh, stale = fresh + is_fresh, stale + (not is_fresh)
            for aid in AGENTS:
                if is_fresh:
                    jc = env["episode_cost_sum"][aid] / env["episode_cost_count"][aid]
                    expected[aid] = max(0.0, expected[aid] + lr * (jc - limit))
                assert learners[aid]["lagrange_multiplier"] == pytest.approx(expected[aid], abs=1e-12)
                assert learners[aid]["dual_updated"] == int(is_fresh)
        steps = {aid: dual.num_steps for aid, dual in algo.learner_group._learner.duals.items()}
    finally:
        algo.stop()
    assert fresh >= 2 and stale >= 4
    assert steps == dict.fromkeys(AGENTS, fresh)
