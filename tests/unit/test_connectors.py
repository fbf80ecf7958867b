"""GAE against hand values, the cost column offset and bootstrap row, and exact episode cost sums (no Ray)."""

import numpy as np
import pytest
from ray.rllib.connectors.learner import AddOneTsToEpisodesAndTruncate
from ray.rllib.env.multi_agent_episode import MultiAgentEpisode

from rllib_safe.callbacks import SafeCostCallback, episode_costs, mean_episode_costs
from rllib_safe.connectors.learner import AddCostsAndStateFromInfos, gae, standardize
from rllib_safe.core.columns import SafeColumns


def test_gae_terminated_episode_by_hand():
    # One episode of 2 real steps that terminates, plus the artificial bootstrap row (reward 0, value ignored).
    values = np.array([1.0, 2.0, 99.0])
    rewards = np.array([1.0, 3.0, 0.0])
    terminateds = np.array([False, True, False])
    truncateds = np.array([False, False, False])
    g, lam = 0.9, 0.5
    # delta_1 = 3 - 2 = 1 (no bootstrap after the terminal); A_1 = 1
    # delta_0 = 1 + 0.9*2 - 1 = 1.8; A_0 = 1.8 + 0.9*0.5*1 = 2.25
    targets = gae(values, rewards, terminateds, truncateds, g, lam)
    np.testing.assert_allclose(targets[:2], [2.25 + 1.0, 1.0 + 2.0], rtol=1e-6)


def test_gae_truncated_chunk_bootstraps_but_does_not_propagate():
    # Chunk A: 2 real steps, truncated (bootstrap row value 4); chunk B: 1 real step, terminated.
    values = np.array([1.0, 2.0, 4.0, 0.5, 7.0])
    rewards = np.array([1.0, 1.0, 0.0, 2.0, 0.0])
    terminateds = np.array([False, False, False, True, False])
    truncateds = np.array([False, True, False, False, False])
    g, lam = 0.5, 1.0
    # chunk A: delta_1 = 1 + 0.5*4 - 2 = 1; A_1 = 1. delta_0 = 1 + 0.5*2 - 1 = 1; A_0 = 1 + 0.5*1*1 = 1.5
    # bootstrap row 2: delta = 0 + 0.5*0.5 - 4 (value of the next chunk's row; masked out anyway), A_2 = delta
    # chunk B: delta_3 = 2 - 0.5 = 1.5 (terminal)
    targets = gae(values, rewards, terminateds, truncateds, g, lam)
    np.testing.assert_allclose(targets[[0, 1, 3]], [1.5 + 1.0, 1.0 + 2.0, 1.5 + 0.5], rtol=1e-6)


def test_gae_vector_costs_match_per_column():
    rng = np.random.default_rng(0)
    values, costs = rng.normal(size=(6, 2)), rng.uniform(size=(6, 2))
    term = np.array([0, 0, 1, 0, 0, 0], bool)
    trunc = np.array([0, 0, 0, 0, 1, 0], bool)
    both = gae(values, costs, term, trunc, 0.99, 0.95)
    for k in range(2):
        np.testing.assert_allclose(both[:, k], gae(values[:, k], costs[:, k], term, trunc, 0.99, 0.95), rtol=1e-6)


def test_gae_lambda_one_is_discounted_return_minus_nothing():
    # lambda = 1, terminated episode: targets are the discounted returns.
    rewards = np.array([1.0, 2.0, 3.0, 0.0])
    values = np.array([5.0, -1.0, 2.0, 0.0])
    targets = gae(values, rewards, np.array([0, 0, 1, 0], bool), np.zeros(4, bool), 0.5, 1.0)
    np.testing.assert_allclose(targets[:3], [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0], rtol=1e-6)


def test_standardize_uses_valid_rows_only():
    # Valid rows [1, 5]: mean 3, std 2 (the masked-out 1000 would change both).
    x = np.array([1.0, 5.0, 1000.0])
    out = standardize(x, np.array([True, True, False]))
    np.testing.assert_allclose(out[:2], [-1.0, 1.0], rtol=1e-5)


def test_center_only_subtracts_the_mean_and_keeps_the_scale():
    # Valid rows [1, 5, 9]: mean 5, std 3.266; centring keeps cost units, standardising divides by the std.
    x = np.array([[1.0, 10.0], [5.0, 10.0], [9.0, 40.0], [-7.0, 7.0]])
    mask = np.array([True, True, True, False])
    np.testing.assert_allclose(standardize(x, mask, center_only=True)[:3], [[-4.0, -10.0], [0.0, -10.0], [4.0, 20.0]])
    np.testing.assert_allclose(standardize(x, mask)[:3, 0], np.array([-4.0, 0.0, 4.0]) / np.sqrt(32.0 / 3.0), rtol=1e-6)


def _episode(costs, terminated, start_state=0.0):
    """A 2-agent episode; agent_1's costs are twice agent_0's; the state of obs t is start_state + t."""
    n = len(costs)
    obs = [{"a0": np.float32([t]), "a1": np.float32([t])} for t in range(n + 1)]
    infos = [{"a0": {"state": np.float32([start_state])}, "a1": {"state": np.float32([start_state])}}]
    for t in range(n):
        s = np.float32([start_state + t + 1])
        infos.append({"a0": {"cost": costs[t], "state": s}, "a1": {"cost": 2 * costs[t], "state": s}})
    actions = [{"a0": np.float32([0.0]), "a1": np.float32([0.0])} for _ in range(n)]
    rewards = [{"a0": 1.0, "a1": 1.0} for _ in range(n)]
    return MultiAgentEpisode(
        observations=obs,
        infos=infos,
        actions=actions,
        rewards=rewards,
        terminateds={"__all__": terminated, "a0": terminated, "a1": terminated},
        truncateds={"__all__": False, "a0": False, "a1": False},
        agent_module_ids={"a0": "a0", "a1": "a1"},
        len_lookback_buffer=0,
    )


def _columns(episodes):
    batch, shared = {}, {}
    AddOneTsToEpisodesAndTruncate()(rl_module=None, batch=batch, episodes=episodes, shared_data=shared)
    AddCostsAndStateFromInfos(num_costs=1)(rl_module=None, batch=batch, episodes=episodes, shared_data=shared)
    out = {}
    for column in (SafeColumns.COSTS, SafeColumns.STATE):
        for (_, aid, _), items in batch[column].items():
            out.setdefault(column, {}).setdefault(aid, []).append(np.concatenate(items))
    return {c: {aid: np.concatenate(v) for aid, v in per.items()} for c, per in out.items()}


def test_cost_of_transition_t_is_info_of_step_t_and_bootstrap_row_costs_zero():
    cols = _columns([_episode([0.0, 1.0, 0.0], terminated=True)])
    # 3 real rows + 1 bootstrap row; the reset info (which has no cost) is never read as a cost.
    np.testing.assert_array_equal(cols[SafeColumns.COSTS]["a0"], [0.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(cols[SafeColumns.COSTS]["a1"], [0.0, 2.0, 0.0, 0.0])
    # state of obs t = infos[t]["state"]; the bootstrap row repeats the final observation's state.
    np.testing.assert_array_equal(cols[SafeColumns.STATE]["a0"][:, 0], [0.0, 1.0, 2.0, 3.0])


def test_cost_columns_of_two_episodes_keep_their_order():
    cols = _columns([_episode([1.0, 0.0], terminated=False), _episode([0.0, 0.0, 1.0], True, start_state=10.0)])
    np.testing.assert_array_equal(cols[SafeColumns.COSTS]["a0"], [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(cols[SafeColumns.STATE]["a1"][:, 0], [0, 1, 2, 10, 11, 12, 13])


def test_missing_cost_in_infos_is_a_clear_error():
    ep = _episode([0.0, 1.0], terminated=True)
    del ep.agent_episodes["a0"].infos.data[1]["cost"]
    with pytest.raises(ValueError, match="infos\\[agent\\]\\['cost'\\]"):
        _columns([ep])


def test_episode_cost_sums_over_chunks_and_skips_reset_info():
    ep = _episode([1.0, 1.0, 0.0, 1.0], terminated=True)
    totals = episode_costs(ep)
    np.testing.assert_array_equal(totals["a0"], [3.0])
    np.testing.assert_array_equal(totals["a1"], [6.0])
    # The same episode as two chunks: the second chunk's first info is the carried-over one (not a new cost).
    first = _episode([1.0, 1.0], terminated=False)
    second = first.cut()
    for t, c in enumerate([0.0, 1.0]):
        second.add_env_step(
            observations={"a0": np.float32([t]), "a1": np.float32([t])},
            actions={"a0": np.float32([0.0]), "a1": np.float32([0.0])},
            rewards={"a0": 1.0, "a1": 1.0},
            infos={"a0": {"cost": c, "state": np.float32([0])}, "a1": {"cost": 2 * c, "state": np.float32([0])}},
            terminateds={"__all__": t == 1, "a0": t == 1, "a1": t == 1},
        )
    np.testing.assert_array_equal(episode_costs(second, [first])["a0"], [3.0])


def test_mean_episode_costs_is_sum_over_count_not_mean_of_means():
    """Two EnvRunners log their episodes through the callback; the Algorithm aggregates them as in training_step.

    Runner 1 ends episodes costing 10 and 20, runner 2 one episode costing 60 (agent_1's costs are twice agent_0's).
    Exact mean: 90 / 3 = 30; a mean of the runners' means would give (15 + 60) / 2 = 37.5.
    """
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS
    from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

    callback = SafeCostCallback()
    runner_results = []
    for episode_totals in ([10.0, 20.0], [60.0]):
        runner_metrics = MetricsLogger()
        for total in episode_totals:
            episode = _episode([total / 2, total / 2], terminated=True)
            callback.on_episode_end(episode=episode, prev_episode_chunks=[], metrics_logger=runner_metrics)
        runner_results.append(runner_metrics.reduce())
    algorithm_metrics = MetricsLogger(root=True)
    algorithm_metrics.aggregate(runner_results, key=ENV_RUNNER_RESULTS)
    env_runner_results = algorithm_metrics.peek(ENV_RUNNER_RESULTS, compile=True)
    out = mean_episode_costs(env_runner_results, ["a0", "a1"], num_costs=1)
    assert out["a0"] == pytest.approx(np.array([30.0]))
    assert out["a1"] == pytest.approx(np.array([60.0]))


@pytest.mark.parametrize("start, stop, lookback", [(0, 3, 0), (2, 5, 1), (1, 4, 0), (3, 6, 2), (4, 6, 1)])
def test_sliced_episodes_keep_their_infos(start, stop, lookback):
    """RLlib 2.60's MultiAgentEpisode.slice drops infos; rllib_safe.compat puts exactly the right ones back."""
    import rllib_safe  # noqa: F401  (applies the patch)

    ep = _episode([0.0, 1.0, 0.0, 1.0, 1.0, 0.0], terminated=True)  # state of obs t is t, costs differ per step
    sliced = ep.slice(slice(start, stop), len_lookback_buffer=lookback)
    for aid in ("a0", "a1"):
        sa = sliced.agent_episodes[aid]
        states = [
            info["state"][0]
            for info in sa.get_infos(slice(-sa.infos.lookback, len(sa) + 1), neg_index_as_lookback=True)
        ]
        assert states == list(range(start - sa.infos.lookback, stop + 1))
        costs = [info["cost"] for info in sa.get_infos(slice(1, len(sa) + 1))]
        expected = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0][start:stop]
        assert costs == (expected if aid == "a0" else [2 * c for c in expected])


def test_mean_episode_costs_skips_agents_without_finished_episodes():
    # RLlib reduces an empty "sum" window to NaN when no episode ended in the iteration.
    nan = float("nan")
    metrics = {"episode_cost_sum": {"a0": nan, "a1": 4.0}, "episode_cost_count": {"a0": nan, "a1": 2}}
    out = mean_episode_costs(metrics, ["a0", "a1"], num_costs=1)
    assert set(out) == {"a1"} and out["a1"][0] == 2.0
    assert mean_episode_costs({}, ["a0"], num_costs=1) == {}
