"""MAFOCOPS with a real local Ray on Safety2x4AntVelocity-v0: one iteration trains and logs, ν follows Eq. 10, the
KL early stop fires, and ν plus every optimiser survive a checkpoint round trip with identical next iterations."""

import math
import tempfile

import numpy as np
import pytest
import torch

from rllib_safe.algorithms.mafocops import MAFOCOPS, MAFOCOPSConfig
from rllib_safe.core.columns import CRITIC_ID

pytestmark = pytest.mark.usefixtures("ray_local")

AGENTS = ("agent_0", "agent_1")


def small_config(**training):
    return (
        MAFOCOPSConfig()
        .environment("Safety2x4AntVelocity-v0", env_config={"max_episode_steps": 50})
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1, batch_mode="complete_episodes")
        .training(
            **{
                "train_batch_size_per_learner": 200,
                "minibatch_size": 100,
                "num_epochs": 3,
                "actor_hiddens": [32, 32],
                "critic_hiddens": [32, 32],
                **training,
            }
        )
        .debugging(seed=7)
    )


def eq10_by_hand(nu: float, lr: float, limit: float, episode_cost: float, steps: int, nu_max: float = 1.3) -> float:
    """``steps`` applications of Eq. 10, ν ← clip(ν − α(b − J_c), 0, ν_max), all with the same J_c."""
    for _ in range(steps):
        nu = min(max(nu - lr * (limit - episode_cost), 0.0), nu_max)
    return nu


@pytest.mark.parametrize("nu_schedule", ["per_iteration", "per_minibatch"])
def test_one_iteration_trains_logs_and_moves_nu_by_eq10(nu_schedule):
    """ "per_iteration": ν takes one Eq. 10 step before the agent's epochs. "per_minibatch" (the default): one step
    after each minibatch step the agent took (3 per epoch: 204 rows in minibatches of 100), all with the iteration's
    J_c. With b = 3 and α = 0.01 the steps are small enough that ν stays inside (0, 1.3)."""
    config = small_config(cost_limit=3.0, nu_init=0.5, nu_lr=0.01)
    if nu_schedule == "per_iteration":
        config.training(nu_schedule="per_iteration")
    assert config.dual_schedule == nu_schedule  # nu_schedule and dual_schedule are one field
    algo = config.build_algo()
    learner = algo.learner_group._learner
    batches = {}
    original = learner.update_agent

    def keep_batch(module_id, batch, **schedule):  # the agent's batch; its weights stay final after its turn
        original(module_id, batch, **schedule)
        batches[module_id] = {k: v.clone() for k, v in batch.items() if torch.is_tensor(v)}

    learner.update_agent = keep_batch
    try:
        result = algo.train()
        learners = result["learners"]
        assert np.isfinite(learners[CRITIC_ID]["vf_loss"]) and np.isfinite(learners[CRITIC_ID]["cost_vf_loss"])
        first, second = result["agent_order"].split(",")
        assert learners[first]["happo_factor_mean"] == 1.0 and learners[second]["happo_factor_mean"] != 1.0
        for aid in AGENTS:
            stats = learners[aid]
            for key in ("policy_loss", "kl_term", "advantage_term"):
                assert np.isfinite(stats[key]), key
            assert 1 <= stats["epochs_trained"] <= 3
            # Eq. 10: once before the agent's update, or once per minibatch step it took.
            steps = 1 if nu_schedule == "per_iteration" else 3 * int(stats["epochs_trained"])
            assert learner.duals[aid].num_steps == steps and stats["dual_updated"] == 1
            expected = eq10_by_hand(0.5, 0.01, 3.0, stats["episode_cost"], steps)
            assert 0.0 < expected < 1.3 and expected != 0.5
            assert stats["nu"] == pytest.approx(expected, abs=1e-12)
            # The logged KL and acceptance at the stop, recomputed from the agent's final policy on its batch.
            batch, module = batches[aid], learner.module[aid].unwrapped()
            dist_cls = module.get_train_action_dist_cls()
            with torch.no_grad():
                new = dist_cls.from_logits(module.forward_train({"obs": batch["obs"]})["action_dist_inputs"])
                state_kl = new.kl(dist_cls.from_logits(batch["action_dist_inputs"]))[batch["loss_mask"].bool()]
            assert state_kl.mean().item() > 0
            assert stats["kl_at_stop"] == pytest.approx(state_kl.mean().item(), rel=1e-5)
            accepted = (state_kl <= 0.0125).double().mean().item()
            assert stats["accept_fraction_at_stop"] == pytest.approx(accepted, abs=1e-6)
    finally:
        del learner.update_agent
        algo.stop()


def test_per_minibatch_nu_moves_only_on_a_fresh_measurement():
    """An update with no fresh J_c (no episode of the agent ended) leaves ν where it is, though every minibatch step
    runs and a last known J_c exists; the next fresh J_c moves ν by Eq. 10 once per minibatch step (here the
    episode cost 12 is far above b = 3: up by 0.01·9 per step, 2 epochs × 1 minibatch)."""
    algo = small_config(cost_limit=3.0, nu_init=0.5, nu_lr=0.01, kl_threshold=10.0).build_algo()
    try:
        learner = algo.learner_group._learner
        episodes = algo.env_runner.sample(num_timesteps=200, random_actions=False)
        stale = {aid: [12.0] for aid in AGENTS}
        schedule = {"num_epochs": 2, "minibatch_size": 10**4}
        learner.update(episodes=episodes, episode_costs={}, last_episode_costs=stale, **schedule)
        assert {aid: dual.value for aid, dual in learner.duals.items()} == dict.fromkeys(AGENTS, 0.5)
        assert all(dual.num_steps == 0 for dual in learner.duals.values())
        learner.update(episodes=episodes, episode_costs=stale, **schedule)
        values = {aid: dual.value for aid, dual in learner.duals.items()}
        assert all(dual.num_steps == 2 for dual in learner.duals.values())
    finally:
        algo.stop()
    assert values == pytest.approx(dict.fromkeys(AGENTS, 0.5 + 2 * 0.01 * 9.0), abs=1e-12)


def test_early_stop_on_mean_kl_of_new_from_old():
    """δ = 1e-7: the first epoch already leaves the bound, the agent stops after it; the indicator accepted every
    state of the first minibatch (π = π_k there) and few afterwards. δ = 10: nothing stops and nothing is rejected,
    and four full epochs move the policy further from π_k than the stopped one."""
    logged = {}
    for kl_threshold in (1e-7, 10.0):
        algo = small_config(kl_threshold=kl_threshold, num_epochs=4, lr=3e-3).build_algo()
        try:
            logged[kl_threshold] = algo.train()["learners"]
        finally:
            algo.stop()
    for aid in AGENTS:
        stopped, free = logged[1e-7][aid], logged[10.0][aid]
        assert stopped["epochs_trained"] == 1 and free["epochs_trained"] == 4
        assert stopped["kl_at_stop"] > 1e-7
        assert 0.0 < stopped["accept_fraction"] < 1.0 and stopped["accept_fraction_at_stop"] < 1.0
        assert free["accept_fraction"] == 1.0 and free["accept_fraction_at_stop"] == 1.0
        assert free["kl_at_stop"] > stopped["kl_at_stop"]


def _assert_same(a, b, where="state"):
    """Exact equality of nested dicts/lists of tensors, arrays and numbers."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a) or isinstance(a, np.ndarray):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


def test_checkpoint_round_trip_keeps_nu_and_optimisers_and_resumes_exactly():
    def config():
        return small_config(cost_limit=1.0, nu_init=0.2, nu_lr=0.05, reseed_each_iteration=True)

    def numbers(result):
        learners = result["learners"]
        return (
            result["env_runners"]["episode_return_mean"],
            result["env_runners"]["episode_cost_mean"],
            result["agent_order"],
            learners[CRITIC_ID]["vf_loss"],
            *[(learners[aid]["policy_loss"], learners[aid]["nu"], learners[aid]["kl_at_stop"]) for aid in AGENTS],
        )

    with tempfile.TemporaryDirectory() as ckpt:
        a = config().build_algo()
        try:
            a.train()
            a.save_to_path(ckpt)
            saved = a.learner_group._learner.get_state()
            uninterrupted = [numbers(a.train()) for _ in range(2)]
        finally:
            a.stop()
        b = MAFOCOPS.from_checkpoint(ckpt)
        try:
            assert isinstance(b.config, MAFOCOPSConfig) and b.config.nu_lr == 0.05 and b.config.kl_threshold == 0.0125
            restored = b.learner_group._learner.get_state()
            resumed = [numbers(b.train()) for _ in range(2)]
        finally:
            b.stop()
    assert saved["duals"]["agent_0"]["value"] != [0.2]  # ν really moved before the checkpoint
    _assert_same(saved["duals"], restored["duals"], "duals")
    _assert_same(saved["optimizer"], restored["optimizer"], "optimizer")
    assert set(saved["optimizer"]) >= {f"{m}_default_optimizer" for m in (*AGENTS, CRITIC_ID)}
    assert resumed == uninterrupted
