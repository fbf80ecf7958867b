"""The on-policy core with a real local Ray: every algorithm trains, rows align, the HAPPO factor is the product of
the updated agents' ratios, episode costs are exact, checkpoints resume exactly, two learners (DDP) agree."""

import copy
import tempfile

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.training_data import TrainingData

from rllib_safe.callbacks import episode_costs
from rllib_safe.core.columns import CRITIC_ID, SafeColumns
from rllib_safe.envs import make
from rllib_safe.envs.safe_mamujoco import VELOCITY_TASKS
from tests.conftest import small_config

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.mark.parametrize("algo", ["MAPPO", "HAPPO", "MAPPOLagrangian"])
def test_each_algorithm_trains_and_logs_costs(algo):
    a = small_config(algo, env="Safety2x1SwimmerVelocity-v0", cost_limit=1.0).build_algo()  # Swimmer: random play costs
    try:
        first_result = a.train()
        result = a.train()
    finally:
        a.stop()
    env = result["env_runners"]
    learners = result["learners"]
    assert env["num_episodes"] >= 4 and "episode_cost_mean" in env
    assert set(env["episode_cost_count"]) == {"agent_0", "agent_1"}
    # The sums and counts cover this iteration's episodes only (the exact J_c of the dual update).
    assert env["episode_cost_count"]["agent_0"] == env["num_episodes"]
    assert learners["agent_0"]["episode_cost"] == pytest.approx(
        env["episode_cost_sum"]["agent_0"] / env["episode_cost_count"]["agent_0"]
    )
    for aid in ("agent_0", "agent_1"):
        assert np.isfinite(learners[aid]["policy_loss"])
        assert learners[aid]["epochs_trained"] == 2
    assert np.isfinite(learners[CRITIC_ID]["vf_loss"]) and np.isfinite(learners[CRITIC_ID]["cost_vf_loss"])
    first, second = result["agent_order"].split(",")
    assert learners[first]["happo_factor_mean"] == 1.0  # nobody was updated before the first agent
    if algo == "MAPPO":
        assert learners[second]["happo_factor_mean"] == 1.0 and "lagrange_multiplier" not in learners[first]
    else:
        assert learners[second]["happo_factor_mean"] != 1.0
    if algo == "MAPPOLagrangian":
        # The measured cost exceeds the limit of 1 in both iterations -> two Adam ascent steps up from the init
        # 0.001 (Adam's first step has size lr = 0.035 whatever the gradient's scale), recomputed by torch's Adam on
        # the multiplier loss −λ·(J_c − d) with the two measured J_c.
        for aid in ("agent_0", "agent_1"):
            costs = [r["learners"][aid]["episode_cost"] for r in (first_result, result)]
            assert min(costs) > 1.0
            lam = torch.nn.Parameter(torch.tensor(0.001, dtype=torch.float64))
            adam = torch.optim.Adam([lam], lr=0.035)
            for cost in costs:
                adam.zero_grad()
                (-lam * (cost - 1.0)).backward()
                adam.step()
            assert 0.001 + 0.035 < learners[aid]["lagrange_multiplier"]
            assert learners[aid]["lagrange_multiplier"] == pytest.approx(float(lam), abs=1e-12)


@pytest.mark.parametrize("task", sorted(VELOCITY_TASKS))
def test_mappo_lagrangian_trains_on_every_velocity_task(task):
    a = small_config("MAPPOLagrangian", env=task, steps=20, batch=100).build_algo()
    try:
        result = a.train()
    finally:
        a.stop()
    agents = make(task).possible_agents
    assert all(np.isfinite(result["learners"][aid]["policy_loss"]) for aid in agents)


@pytest.fixture(scope="module")
def sampled():
    """An algorithm (MAPPO-Lagrangian on Ant 2x4, local learner) and one sample of episodes from its EnvRunner."""
    a = small_config("MAPPOLagrangian", env="Safety2x4AntVelocity-v0", steps=40, batch=240).build_algo()
    episodes = a.env_runner.sample(num_timesteps=240, random_actions=False)
    metrics = a.env_runner.get_metrics()
    yield a, episodes, metrics
    a.stop()


def test_rows_of_all_agents_line_up_by_env_step(sampled):
    """Local observations are a fixed gather of the global state: obs_i[t] == state[t][idx_i] row by row."""
    a, episodes, _ = sampled
    learner = a.learner_group._learner
    batch = learner._make_batch_if_necessary(TrainingData(episodes=copy.deepcopy(episodes))).policy_batches
    env = make("Safety2x4AntVelocity-v0")
    n = len(batch[CRITIC_ID][Columns.LOSS_MASK])
    for aid in env.possible_agents:
        obs, state = batch[aid][Columns.OBS].numpy(), batch[aid][SafeColumns.STATE].numpy()
        assert len(obs) == n
        np.testing.assert_array_equal(obs, state[:, env.robot.obs_index[aid]])
        np.testing.assert_array_equal(state, batch[CRITIC_ID][SafeColumns.STATE].numpy())


def test_episode_cost_metric_is_the_exact_sum_of_step_costs(sampled):
    _, episodes, metrics = sampled
    done = [e for e in episodes if e.is_done]
    assert done
    expected = sum(episode_costs(e)["agent_0"][0] for e in done)

    def value(stat):  # EnvRunner.get_metrics() hands out Stats objects
        return stat.peek() if hasattr(stat, "peek") else stat

    assert value(metrics["episode_cost_sum"]["agent_0"]) == pytest.approx(expected)
    assert value(metrics["episode_cost_count"]["agent_0"]) == len(done)


def test_happo_factor_is_the_product_of_earlier_agents_ratios(sampled):
    a, episodes, _ = sampled
    learner = a.learner_group._learner
    seen = {}
    original = learner.update_agent

    def spy(module_id, batch, **kwargs):
        seen[module_id] = {k: v.clone() for k, v in batch.items() if torch.is_tensor(v)}
        original(module_id, batch, **kwargs)

    learner.update_agent = spy
    try:
        learner.update(
            episodes=copy.deepcopy(episodes),
            agent_order=["agent_1", "agent_0"],
            episode_costs={},
            num_epochs=2,
            minibatch_size=60,
        )
    finally:
        del learner.update_agent

    def ratio(aid):  # brute force with the final weights (later agents do not change earlier agents' weights)
        b = seen[aid]
        module = learner.module[aid].unwrapped()
        with torch.no_grad():
            dist = module.get_train_action_dist_cls().from_logits(
                module.forward_train({Columns.OBS: b[Columns.OBS]})[Columns.ACTION_DIST_INPUTS]
            )
            r = torch.exp(dist.logp(b[Columns.ACTIONS]) - b[Columns.ACTION_LOGP])
        return torch.where(b[Columns.LOSS_MASK].bool(), r, torch.ones_like(r))

    np.testing.assert_array_equal(seen["agent_1"][SafeColumns.HAPPO_FACTOR].numpy(), 1.0)
    expected = ratio("agent_1")
    assert not torch.allclose(expected, torch.ones_like(expected))
    torch.testing.assert_close(seen["agent_0"][SafeColumns.HAPPO_FACTOR], expected, rtol=1e-5, atol=1e-6)


def test_checkpoint_restore_then_train_gives_the_same_numbers():
    from rllib_safe.algorithms.mappo_lagrangian import MAPPOLagrangian

    def config():
        return small_config(
            "MAPPOLagrangian", cost_limit=1.0, dual_rule="projected_gradient", dual_lr=0.1, reseed_each_iteration=True
        )

    def numbers(result):
        learners = result["learners"]
        return (
            result["env_runners"]["episode_return_mean"],
            result["env_runners"]["episode_cost_mean"],
            learners["agent_0"]["policy_loss"],
            learners["agent_1"]["lagrange_multiplier"],
            learners[CRITIC_ID]["vf_loss"],
            result["agent_order"],
        )

    with tempfile.TemporaryDirectory() as ckpt:
        a = config().build_algo()
        a.train()
        a.save_to_path(ckpt)
        uninterrupted = [numbers(a.train()) for _ in range(2)]
        state = a.learner_group._learner.get_state()
        a.stop()
        b = MAPPOLagrangian.from_checkpoint(ckpt)
        resumed = [numbers(b.train()) for _ in range(2)]
        duals_after = b.learner_group._learner.get_state()["duals"]
        b.stop()
    assert resumed == uninterrupted
    assert duals_after == state["duals"]
    assert state["duals"]["agent_0"]["value"] != [0.001]  # the multipliers really moved (and were restored)


def test_two_learners_ddp_same_permutation_same_weights():
    # Ant episodes end at random times, so the LearnerGroup slices episodes across the two learners.
    config = small_config("HAPPO", env="Safety2x4AntVelocity-v0", batch=200).learners(num_learners=2)
    a = config.build_algo()
    try:
        result = a.train()
        orders = a.learner_group.foreach_learner(lambda learner: learner.last_agent_order)
        weights = a.learner_group.foreach_learner(
            lambda learner: {k: v.numpy().copy() for k, v in learner.module["agent_0"].unwrapped().state_dict().items()}
        )
    finally:
        a.stop()
    assert np.isfinite(result["learners"]["agent_0"]["policy_loss"])
    w0, w1 = [w.get() if hasattr(w, "get") else w for w in weights]
    for key in w0:
        np.testing.assert_array_equal(w0[key], w1[key])
    o0, o1 = [o.get() if hasattr(o, "get") else o for o in orders]
    assert o0 == o1 == result["agent_order"].split(",")


def test_iterations_without_a_finished_episode_keep_the_last_known_cost():
    """150-step episodes, 100 steps per iteration: episodes end at steps 150, 300, 450, i.e. in iterations 2, 3 and 5;
    iteration 4 ends none (RLlib then reports its empty cost sums as NaN) and must reuse iteration 3's cost."""
    config = small_config("MAPPOLagrangian", env="Safety2x1SwimmerVelocity-v0", steps=150, batch=100, cost_limit=0.0)
    a = config.env_runners(batch_mode="truncate_episodes").build_algo()
    try:
        results = [a.train() for _ in range(4)]
    finally:
        a.stop()
    costs = [r["learners"]["agent_0"].get("episode_cost") for r in results]
    assert costs[0] is None  # nothing known yet: no dual update
    assert np.isfinite(costs[1]) and np.isfinite(costs[2])
    assert costs[3] == costs[2]  # no episode ended in iteration 4: the last known value is used
