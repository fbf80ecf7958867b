"""Unit tests of the off-policy family without Ray: the quantile Huber loss (Eq. 16) and its gradient, CVaR_ω from
quantiles (Definition 1), the tanh-squashed Gaussian's log-probability, the attention cost critic, the joint replay
buffer (alignment, n-step windows across a truncation, a termination and chunk boundaries), the budget rule, the
sequential re-sampling of HASAC, and config validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ray.rllib.env.multi_agent_episode import MultiAgentEpisode

from rllib_safe.algorithms.constrained_hasac import ConstrainedHASACConfig
from rllib_safe.algorithms.hasac import HASACConfig
from rllib_safe.algorithms.hasac.torch.hasac_torch_learner import HASACTorchLearner
from rllib_safe.algorithms.sequential.sequential import probe_env
from rllib_safe.algorithms.wcmasac import WCMASACConfig
from rllib_safe.algorithms.wcmasac.torch.wcmasac_torch_learner import (
    cost_budget,
    cvar_from_quantiles,
    quantile_huber_loss,
    quantile_levels,
)
from rllib_safe.core.columns import CRITIC_ID
from rllib_safe.core.sac_modules import (
    QuantileAttentionCostCritic,
    SquashedGaussianActorTorchRLModule,
    squashed_gaussian_sample,
)
from rllib_safe.envs.toy import SafeMAToy
from rllib_safe.utils.replay_buffers import JointReplayBuffer


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small tensors: one torch thread (two threads on a loaded 2-core machine are many times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------------------------
# Eq. 16: quantile Huber loss.
# ---------------------------------------------------------------------------------------------------------------------
def test_quantile_huber_loss_and_gradient_match_hand_values():
    # N = 2 quantiles at levels 0.25 and 0.75; two target samples. u_ij = T_j - theta_i:
    #   i=0 (tau .25): u = 0.5, 3.0     i=1 (tau .75): u = -0.5, 2.0
    # Huber (kappa 1): 0.125, 2.5 | 0.125, 1.5; weights |tau - 1{u<0}|: .25, .25 | .25, .75
    # rho: 0.03125, 0.625 (mean 0.328125) | 0.03125, 1.125 (mean 0.578125) -> loss = 0.90625
    # d rho / d theta_i = -w * clip(u, -1, 1): i=0: -.125, -.25 (mean -.1875); i=1: +.125, -.75 (mean -.3125)
    theta = torch.tensor([[0.0, 1.0]], requires_grad=True)
    target = torch.tensor([[0.5, 3.0]])
    np.testing.assert_allclose(quantile_levels(2).numpy(), [0.25, 0.75])
    loss = quantile_huber_loss(theta, target, kappa=1.0)
    assert loss.item() == pytest.approx(0.90625)
    loss.backward()
    np.testing.assert_allclose(theta.grad.numpy(), [[-0.1875, -0.3125]], rtol=1e-6)
    # kappa = 0: the plain quantile (pinball) loss |tau - 1{u<0}| |u|: (0.125 + 0.75)/2 + (0.125 + 1.5)/2 = 1.25
    assert quantile_huber_loss(theta.detach(), target, kappa=0.0).item() == pytest.approx(1.25)
    # Rows are averaged: a second identical row leaves the loss unchanged.
    assert quantile_huber_loss(theta.detach().repeat(2, 1), target.repeat(2, 1)).item() == pytest.approx(0.90625)


def test_minimising_the_quantile_loss_recovers_the_quantiles_of_a_distribution():
    torch.manual_seed(0)
    samples = torch.distributions.Exponential(1.0).sample((1, 1000))
    theta = torch.zeros(1, 4, requires_grad=True)
    optim = torch.optim.Adam([theta], lr=0.05)
    for _ in range(400):
        optim.zero_grad()
        quantile_huber_loss(theta, samples, kappa=0.0).backward()
        optim.step()
    expected = torch.quantile(samples[0], quantile_levels(4))  # the minimiser: the samples' tau-quantiles
    np.testing.assert_allclose(theta.detach()[0].numpy(), expected.numpy(), atol=0.05)


# ---------------------------------------------------------------------------------------------------------------------
# Definition 1: CVaR_omega from quantiles.
# ---------------------------------------------------------------------------------------------------------------------
def test_cvar_of_hand_quantiles():
    theta = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert cvar_from_quantiles(theta, 1.0).item() == pytest.approx(2.5)  # omega = 1: the mean
    assert cvar_from_quantiles(theta, 0.5).item() == pytest.approx(3.5)  # the upper two quantiles
    assert cvar_from_quantiles(theta, 0.25).item() == pytest.approx(4.0)
    # 1 - omega = 0.625 cuts the third bin [0.5, 0.75]: (3 * 0.125 + 4 * 0.25) / 0.375
    assert cvar_from_quantiles(theta, 0.375).item() == pytest.approx((3 * 0.125 + 4 * 0.25) / 0.375)


@pytest.mark.parametrize("omega", [1.0, 0.5, 0.1, 0.02])
def test_cvar_from_quantiles_matches_the_closed_form_of_an_exponential(omega):
    # Exp(1): F^-1(u) = -ln(1 - u); the upper omega-tail mean is CVaR_omega = 1 + ln(1 / omega).
    closed_form = 1.0 + math.log(1.0 / omega)
    n = 1000
    edges = torch.arange(n + 1, dtype=torch.float64) / n

    def antiderivative(u):  # d/du [(1 - u) ln(1 - u) - (1 - u) + 1] = -ln(1 - u)
        v = (1 - u).clamp(min=0)
        return torch.where(v > 0, v * torch.log(v.clamp(min=1e-300)), torch.zeros_like(v)) - v + 1

    bin_means = (antiderivative(edges[1:]) - antiderivative(edges[:-1])) * n  # exact quantile-bin averages
    assert cvar_from_quantiles(bin_means, omega).item() == pytest.approx(closed_form, rel=1e-9)
    midpoints = -torch.log(1 - quantile_levels(n).double())  # quantiles at the levels, as a critic outputs
    assert cvar_from_quantiles(midpoints, omega).item() == pytest.approx(closed_form, rel=1e-2)


def test_cost_budget_is_wcsac_rule():
    # d (1 - g^T) / ((1 - g) T): the discounted return from the first state of d/T per step over T steps.
    d, gamma, steps = 25.0, 0.99, 1000
    expected = sum(gamma**t * d / steps for t in range(steps))
    assert cost_budget(np.array([d]), gamma, steps)[0] == pytest.approx(expected)
    assert cost_budget(np.array([d]), 1.0, steps)[0] == pytest.approx(d)


# ---------------------------------------------------------------------------------------------------------------------
# Actor: tanh-squashed Gaussian with the exact log-probability correction.
# ---------------------------------------------------------------------------------------------------------------------
def _actor(obs_dim=3, act_dim=2):
    import gymnasium as gym

    return SquashedGaussianActorTorchRLModule(
        observation_space=gym.spaces.Box(-1, 1, (obs_dim,)),
        action_space=gym.spaces.Box(-1, 1, (act_dim,)),
        model_config={"hiddens": [8], "activation": "relu"},
    )


def test_squashed_gaussian_log_probability_is_exact():
    torch.manual_seed(0)
    actor = _actor()
    obs = torch.randn(64, 3)
    with torch.no_grad():
        mean, log_std = actor.mean_log_std(obs)
    noise = torch.randn(64, 2)
    action, logp = squashed_gaussian_sample(mean, log_std, noise)
    u = (mean + log_std.exp() * noise).double()
    np.testing.assert_allclose(action.numpy(), torch.tanh(u).numpy(), atol=1e-6)
    # Brute force in float64: Gaussian density of u minus log|da/du| = log(1 - tanh(u)^2).
    exact = torch.distributions.Normal(mean.double(), log_std.exp().double()).log_prob(u) - torch.log1p(
        -(torch.tanh(u) ** 2)
    )
    np.testing.assert_allclose(logp.numpy(), exact.sum(-1).numpy(), rtol=1e-5, atol=1e-4)
    # Far in the tail the naive float32 log(1 - tanh(u)^2) is log(0) = -inf; the stable form stays exact.
    _, far = squashed_gaussian_sample(torch.zeros(1, 1), torch.zeros(1, 1), torch.full((1, 1), 9.0))
    assert torch.isfinite(far).all()
    assert far.item() == pytest.approx(-0.5 * 81 - 0.5 * math.log(2 * math.pi) - 2 * (math.log(2) - 9), abs=1e-4)
    # The module's sample is this function with reparameterised gradients into the policy.
    a, lp = actor.sample(obs)
    lp.sum().backward()
    assert all(p.grad is not None for p in actor.pi.parameters())


def test_squashed_gaussian_density_integrates_to_one():
    mean, log_std = torch.tensor([[0.3]]), torch.tensor([[-0.2]])
    a = torch.linspace(-1 + 1e-7, 1 - 1e-7, 400_001, dtype=torch.float64).reshape(-1, 1)
    noise = (torch.atanh(a) - mean) / log_std.exp()  # the noise that yields each action
    _, logp = squashed_gaussian_sample(mean.double(), log_std.double(), noise)
    assert torch.trapezoid(logp.exp(), a[:, 0]).item() == pytest.approx(1.0, abs=1e-3)


def test_exploration_noise_does_not_depend_on_the_order_modules_are_called():
    torch.manual_seed(0)
    first, second = _actor(), _actor()
    obs = {"obs": torch.zeros(4, 3)}
    states = (first.exploration_rng.get_state(), second.exploration_rng.get_state())
    a1, b1 = first.forward_exploration(obs)["actions"], second.forward_exploration(obs)["actions"]
    first.exploration_rng.set_state(states[0])
    second.exploration_rng.set_state(states[1])
    b2, a2 = second.forward_exploration(obs)["actions"], first.forward_exploration(obs)["actions"]
    torch.testing.assert_close(a1, a2)
    torch.testing.assert_close(b1, b2)
    assert not torch.allclose(a1, b1)  # two agents, two streams


def test_uniform_exploration_during_warm_up():
    actor = _actor()
    actor.uniform_exploration = True
    torch.manual_seed(0)
    out = actor.forward_exploration({"obs": torch.zeros(5000, 3)})
    actions = out["actions"]
    assert actions.min() >= -1 and actions.max() <= 1 and abs(actions.mean().item()) < 0.03
    np.testing.assert_allclose(out["action_logp"].numpy(), -2 * math.log(2))


# ---------------------------------------------------------------------------------------------------------------------
# The attention cost critic.
# ---------------------------------------------------------------------------------------------------------------------
def test_attention_cost_critic_ignores_agent_order_and_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    obs_dims, act_dims = {"a": 3, "b": 5, "c": 2}, {"a": 1, "b": 2, "c": 1}
    critic = QuantileAttentionCostCritic(obs_dims, act_dims, state_dim=6, num_quantiles=7, embed_dim=8, num_heads=2)
    state = torch.randn(16, 6)
    obs = {k: torch.randn(16, d) for k, d in obs_dims.items()}
    actions = {k: torch.randn(16, d) for k, d in act_dims.items()}
    out = critic(state, obs, actions, agent_order=["a", "b", "c"])
    assert out.shape == (16, 7)
    for order in (["c", "a", "b"], ["b", "c", "a"]):
        torch.testing.assert_close(critic(state, obs, actions, agent_order=order), out, rtol=1e-5, atol=1e-6)
    # Each agent's input matters (the output is not constant in it).
    changed = {**actions, "b": actions["b"] + 1.0}
    assert not torch.allclose(critic(state, obs, changed), out)
    out.pow(2).mean().backward()
    for name, p in critic.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------------------------------------------------
# The joint replay buffer.
# ---------------------------------------------------------------------------------------------------------------------
AGENTS = ["a", "b"]


def _step(ep, tag, t, reward, cost, *, terminated=False, truncated=False):
    """One env step of a two-agent episode whose observations, actions and state all encode (episode tag, t)."""
    ep.add_env_step(
        observations={"a": np.full(2, tag + t + 1, np.float32), "b": np.full(3, -(tag + t + 1), np.float32)},
        actions={"a": np.array([tag + t], np.float32), "b": np.array([-(tag + t)], np.float32)},
        rewards={"a": reward, "b": reward},
        infos={aid: {"state": np.full(4, tag + t + 1.0), "cost": cost} for aid in AGENTS},
        terminateds={"__all__": terminated},
        truncateds={"__all__": truncated},
    )


def _episode(tag):
    ep = MultiAgentEpisode()
    ep.add_env_reset(
        observations={"a": np.full(2, tag, np.float32), "b": np.full(3, -tag, np.float32)},
        infos={aid: {"state": np.full(4, float(tag))} for aid in AGENTS},
    )
    return ep


def _buffer(capacity=100, seed=0):
    return JointReplayBuffer(
        capacity,
        agent_ids=AGENTS,
        observation_dims={"a": 2, "b": 3},
        action_dims={"a": 1, "b": 1},
        state_dim=4,
        seed=seed,
    )


def test_rows_of_different_agents_come_from_the_same_env_step():
    buffer = _buffer()
    episodes = []
    for tag in (100, 200, 300):
        ep = _episode(tag)
        for t in range(5):
            _step(ep, tag, t, 1.0, 0.0)
        episodes.append(ep)
    assert buffer.add_episodes(episodes) == 15
    batch = buffer.sample(15)
    # Every column of a row encodes the same (episode, t): obs_a = tag + t, obs_b = -(tag + t), state = tag + t, ...
    key = batch["actions/a"][:, 0]
    np.testing.assert_array_equal(batch["actions/b"][:, 0], -key)
    np.testing.assert_array_equal(batch["obs/a"][:, 0], key)
    np.testing.assert_array_equal(batch["obs/b"][:, 0], -key)
    np.testing.assert_array_equal(batch["state"][:, 0], key)
    np.testing.assert_array_equal(batch["next_obs/a"][:, 0], key + 1)
    np.testing.assert_array_equal(batch["next_state"][:, 0], key + 1)
    assert sorted(key.tolist()) == sorted(tag + t for tag in (100, 200, 300) for t in range(5))


def test_n_step_returns_stop_at_truncation_and_termination_and_cross_chunks():
    gamma, cost_gamma = 0.5, 0.9
    buffer = _buffer()
    # Episode A (tag 100): rewards 1, 2, 3, 4, truncated after the 4th step (time limit).
    a = _episode(100)
    for t, r in enumerate([1.0, 2.0, 3.0, 4.0]):
        _step(a, 100, t, r, cost=0.1 * (t + 1), truncated=(t == 3))
    # Episode B (tag 200): rewards 10, 20, 30, terminated after the 3rd step.
    b = _episode(200)
    for t, r in enumerate([10.0, 20.0, 30.0]):
        _step(b, 200, t, r, cost=1.0, terminated=(t == 2))
    # Episode C (tag 300): two steps now, the next chunk (two more steps) arrives with the next add.
    c = _episode(300)
    for t, r in enumerate([5.0, 6.0]):
        _step(c, 300, t, r, cost=0.0)
    buffer.add_episodes([a, b, c])
    continuation = c.cut()
    for t, r in [(2, 7.0), (3, 8.0)]:
        _step(continuation, 300, t, r, cost=0.0)

    def row(batch, action_a):
        i = int(np.flatnonzero(batch["actions/a"][:, 0] == action_a)[0])
        return {k: v[i] for k, v in batch.items()}

    # Before the continuation arrives, C's newest step bootstraps after one step.
    early = buffer.sample(len(buffer), n_step=3, gamma=gamma, cost_gamma=cost_gamma)
    c1 = row(early, 301)
    assert (c1["reward"], c1["n_steps"], c1["terminated"]) == (6.0, 1, 0.0)
    buffer.add_episodes([continuation])
    batch = buffer.sample(len(buffer), n_step=3, gamma=gamma, cost_gamma=cost_gamma)

    a0 = row(batch, 100)  # three full steps
    assert a0["reward"] == pytest.approx(1 + 0.5 * 2 + 0.25 * 3)
    assert a0["costs"][0] == pytest.approx(0.1 + 0.9 * 0.2 + 0.81 * 0.3)
    assert (a0["n_steps"], a0["terminated"], a0["discount"]) == (3, 0.0, 0.125)
    assert a0["cost_discount"] == pytest.approx(0.9**3)
    assert a0["next_state"][0] == 103 and a0["next_obs/a"][0] == 103  # after step t = 2
    a2 = row(batch, 102)  # truncation inside the window: two steps, then bootstrap (terminated = 0)
    assert a2["reward"] == pytest.approx(3 + 0.5 * 4)
    assert (a2["n_steps"], a2["terminated"], a2["discount"]) == (2, 0.0, 0.25)
    assert a2["next_state"][0] == 104  # the final observation of the truncated episode
    b1 = row(batch, 201)  # termination inside the window: no bootstrap
    assert b1["reward"] == pytest.approx(20 + 0.5 * 30)
    assert (b1["n_steps"], b1["terminated"]) == (2, 1.0)
    b2 = row(batch, 202)
    assert (b2["reward"], b2["n_steps"], b2["terminated"]) == (30.0, 1, 1.0)
    c1 = row(batch, 301)  # the window now runs into the next chunk
    assert c1["reward"] == pytest.approx(6 + 0.5 * 7 + 0.25 * 8)
    assert (c1["n_steps"], c1["terminated"]) == (3, 0.0) and c1["next_state"][0] == 304
    # n_step = 1 is the plain one-step transition.
    one = row(buffer.sample(len(buffer), n_step=1, gamma=gamma), 100)
    assert (one["reward"], one["n_steps"], one["discount"], one["next_state"][0]) == (1.0, 1, 0.5, 101)


def test_ring_buffer_overwrites_and_breaks_stale_links():
    buffer = _buffer(capacity=4)
    ep = _episode(100)
    for t in range(6):  # rows t = 2..5 survive
        _step(ep, 100, t, float(t), 0.0)
    buffer.add_episodes([ep])
    assert len(buffer) == 4 and buffer.num_added == 6
    batch = buffer.sample(4, n_step=3, gamma=1.0)
    assert sorted(batch["actions/a"][:, 0].tolist()) == [102, 103, 104, 105]
    i = int(np.flatnonzero(batch["actions/a"][:, 0] == 105)[0])
    assert batch["n_steps"][i] == 1  # the episode's newest step: nothing after it yet


def test_buffer_state_round_trip_continues_identically():
    buffer = _buffer(seed=3)
    ep = _episode(100)
    for t in range(20):
        _step(ep, 100, t, float(t), 0.1)
    buffer.add_episodes([ep])
    state = buffer.state_dict()
    copy = _buffer(seed=99)
    copy.load_state_dict(state)
    for _ in range(3):
        x, y = buffer.sample(8, n_step=4), copy.sample(8, n_step=4)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert buffer.nbytes == 20 * buffer.row_nbytes


def test_joint_replay_rejects_agents_that_skip_steps_and_non_finite_values():
    buffer = _buffer()
    ep = _episode(100)
    ep.add_env_step(
        observations={"a": np.ones(2, np.float32)},
        actions={"a": np.zeros(1, np.float32)},
        rewards={"a": 1.0},
        infos={"a": {"state": np.ones(4), "cost": 0.0}},
    )
    with pytest.raises(ValueError, match="every agent to act at every env step"):
        buffer.add_episodes([ep])
    ep = _episode(100)
    _step(ep, 100, 0, float("nan"), 0.0)
    with pytest.raises(ValueError, match="Non-finite value in column 'reward'"):
        buffer.add_episodes([ep])


# ---------------------------------------------------------------------------------------------------------------------
# HASAC's sequential re-sampling (two agents) and config validation.
# ---------------------------------------------------------------------------------------------------------------------
class RecordingLearner(HASACTorchLearner):
    """Records the joint action each agent's actor loss sees (through the cost hook every loss calls)."""

    def cost_penalty(self, module_id, critics, batch, joint_actions):
        self.seen[module_id] = {aid: a.detach().clone() for aid, a in joint_actions.items()}
        return super().cost_penalty(module_id, critics, batch, joint_actions)


def _toy_learner(sequential: bool):
    config = (
        HASACConfig()
        .environment("SafeMAToy-v0")
        .training(actor_hiddens=[16], critic_hiddens=[16], actor_lr=0.5, critic_lr=1e-8, sequential=sequential)
        .learners(learner_class=RecordingLearner)
        .debugging(seed=0)
    )
    config.validate()
    learner = config.build_learner()
    learner.seen = {}
    for aid in learner.agent_ids:  # log std -> -20: a sample is tanh(mean) to float precision
        out = learner.module[aid].unwrapped().pi[-1]
        with torch.no_grad():
            out.weight[1:].zero_()
            out.bias[1:] = -20.0
    return learner


def _toy_batch(learner, n=64, seed=0):
    rng = np.random.default_rng(seed)
    info = probe_env(learner.config)
    state_dim = info.state_space.shape[0]
    batch = {
        "state": rng.random((n, state_dim), dtype=np.float32),
        "next_state": rng.random((n, state_dim), dtype=np.float32),
    }
    for aid in learner.agent_ids:
        obs_dim = info.observation_spaces[aid].shape[0]
        batch[f"obs/{aid}"] = rng.random((n, obs_dim), dtype=np.float32)
        batch[f"next_obs/{aid}"] = rng.random((n, obs_dim), dtype=np.float32)
        batch[f"actions/{aid}"] = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    batch.update(
        reward=rng.random(n, dtype=np.float32),
        costs=np.zeros((n, 1), np.float32),
        terminated=np.zeros(n, np.float32),
        discount=np.full(n, 0.99, np.float32),
        cost_discount=np.full(n, 0.99, np.float32),
    )
    return batch


def _mean_action(learner, aid, obs):
    with torch.no_grad():
        return torch.tanh(learner.module[aid].unwrapped().pi(torch.as_tensor(obs))[:, :1])


@pytest.mark.parametrize("sequential", [True, False])
def test_agent_ik_sees_the_new_actions_of_the_agents_updated_before_it(sequential):
    learner = _toy_learner(sequential)
    batch = _toy_batch(learner)
    old = {aid: _mean_action(learner, aid, batch[f"obs/{aid}"]) for aid in learner.agent_ids}
    learner.update(batches=[batch], num_updates=1, agent_orders=[["agent_1", "agent_0"]])
    new = {aid: _mean_action(learner, aid, batch[f"obs/{aid}"]) for aid in learner.agent_ids}
    assert (new["agent_1"] - old["agent_1"]).abs().max() > 1e-3  # agent_1's update really moved its policy
    first, second = learner.seen["agent_1"], learner.seen["agent_0"]
    # The first agent's loss sees the other agent's action from its (not yet updated) policy.
    torch.testing.assert_close(first["agent_0"], old["agent_0"], atol=1e-5, rtol=0)
    # The second agent sees the first agent's action re-sampled from its NEW policy (HASAC); simultaneous
    # updates (sequential=False) keep the old one.
    expected = new["agent_1"] if sequential else old["agent_1"]
    torch.testing.assert_close(second["agent_1"], expected, atol=1e-5, rtol=0)


class TwoCostToy(SafeMAToy):
    """The toy with m = 2 cost indices: the toy's cost and a constant 0 (an always-satisfied second constraint)."""

    num_costs = 2

    def __init__(self, config=None):
        super().__init__(**(config or {}))

    def _step(self, actions):
        obs, state, reward, cost, terminated, extra = super()._step(actions)
        return obs, state, reward, np.array([cost, 0.0]), terminated, extra


def test_two_cost_indices_give_one_critic_and_one_multiplier_each():
    config = (
        WCMASACConfig()
        .environment(TwoCostToy)
        .training(
            actor_hiddens=[16],
            critic_hiddens=[16],
            attention_dim=8,
            attention_heads=2,
            num_quantiles=8,
            cost_limit=[1.0, 1.0],
            dual_rule="projected_gradient",
            dual_lr=0.5,
            cost_critic_lr=0.02,
        )
        .debugging(seed=0)
    )
    config.validate()
    learner = config.build_learner()
    critics = learner.module[CRITIC_ID].unwrapped()
    assert len(critics.cost_q) == 2 and len(critics.cost_q_target) == 2
    batch = _toy_batch(learner, n=64 * 30)
    batch["costs"] = np.stack([np.ones(64 * 30), np.zeros(64 * 30)], axis=1).astype(np.float32)  # index 0 costs
    learner.update(batches=[batch], num_updates=30, _no_metrics_reduce=True)

    def logged(module, key):
        return learner.metrics.peek((module, key))

    for aid in learner.agent_ids:
        lam = learner.dual_value(aid)
        assert lam.shape == (2,) and lam[0] > 0 and lam[1] == 0  # only the violated constraint's multiplier rose
        assert logged(aid, "lagrange_multiplier_0") == pytest.approx(lam[0])
    assert logged(CRITIC_ID, "cvar_0") > logged(CRITIC_ID, "cvar_1")
    budget = 1.0 * (1 - 0.99**25) / (1 - 0.99) / 25
    assert logged(CRITIC_ID, "cvar_budget_0") == pytest.approx(budget)
    with torch.no_grad():
        obs = {aid: torch.as_tensor(batch[f"obs/{aid}"][:5]) for aid in learner.agent_ids}
        actions = {aid: torch.as_tensor(batch[f"actions/{aid}"][:5]) for aid in learner.agent_ids}
        assert critics.cost_values(torch.as_tensor(batch["state"][:5]), obs, actions).shape == (5, 2, 8)


def test_joint_rows_keep_vector_costs():
    buffer = JointReplayBuffer(
        10, agent_ids=AGENTS, observation_dims={"a": 2, "b": 3}, action_dims={"a": 1, "b": 1}, state_dim=4, num_costs=2
    )
    ep = _episode(100)
    ep.add_env_step(
        observations={"a": np.ones(2, np.float32), "b": np.ones(3, np.float32)},
        actions={"a": np.zeros(1, np.float32), "b": np.zeros(1, np.float32)},
        rewards={"a": 1.0, "b": 1.0},
        infos={aid: {"state": np.ones(4), "cost": np.array([0.5, 2.0])} for aid in AGENTS},
        truncateds={"__all__": True},
    )
    buffer.add_episodes([ep])
    np.testing.assert_array_equal(buffer.sample(1)["costs"], [[0.5, 2.0]])


def test_a_non_finite_loss_is_reported_with_its_name():
    learner = _toy_learner(sequential=True)
    batch = _toy_batch(learner)
    batch["reward"][3] = np.nan
    with pytest.raises(FloatingPointError, match="Non-finite loss __critic__/q_loss"):
        learner.update(batches=[batch], num_updates=1)


@pytest.mark.parametrize(
    "config_cls, field, value, message",
    [
        (HASACConfig, "actor_lr", -1.0, "`actor_lr` must be a positive number"),
        (HASACConfig, "tau", 1.5, "`tau` must be in [0, 1]"),
        (HASACConfig, "n_step", 0, "`n_step` must be an integer >= 1"),
        (HASACConfig, "updates_per_env_step", -0.1, "`updates_per_env_step` must be a non-negative number"),
        (HASACConfig, "replay_buffer_config", {"capacity": 10}, "`replay_buffer_config['capacity']` must be"),
        (HASACConfig, "replay_buffer_config", {"size": 10}, "exactly the key 'capacity'"),
        (HASACConfig, "target_entropy", "high", "`target_entropy` must be 'auto' or a number"),
        (HASACConfig, "critic_loss", "l1", "`critic_loss` must be 'huber' or 'mse'"),
        (HASACConfig, "store_buffer_in_checkpoints", "yes", "`store_buffer_in_checkpoints` must be True or False"),
        (ConstrainedHASACConfig, "dual_rule", "magic", "`dual_rule` must be one of"),
        (ConstrainedHASACConfig, "cost_limit", -2.0, "`cost_limit`"),
        (WCMASACConfig, "risk_level", 0.0, "`risk_level` (ω) must be in (0, 1]"),
        (WCMASACConfig, "num_quantiles", 0, "`num_quantiles` must be an integer >= 1"),
        (WCMASACConfig, "attention_heads", 3, "must be divisible by `attention_heads`"),
        (WCMASACConfig, "quantile_huber_kappa", -1.0, "`quantile_huber_kappa` must be a number >= 0"),
    ],
)
def test_validate_names_the_bad_field(config_cls, field, value, message):
    config = config_cls().environment("SafeMAToy-v0")
    setattr(config, field, value)
    with pytest.raises(ValueError) as info:
        config.validate()
    assert message in str(info.value)


def test_training_sets_fields_of_every_level():
    config = WCMASACConfig().training(risk_level=0.2, n_step=3, gamma=0.9, dual_lr=0.01)
    assert (config.risk_level, config.n_step, config.gamma, config.dual_lr) == (0.2, 3, 0.9, 0.01)
    with pytest.raises(TypeError):
        HASACConfig().training(risk_level=0.2)  # a WCMASAC field on HASAC


def test_critic_module_spec_by_algorithm():
    for config_cls, kind in ((HASACConfig, None), (ConstrainedHASACConfig, "expected"), (WCMASACConfig, "quantile")):
        spec = config_cls().environment("SafeMAToy-v0").get_multi_rl_module_spec()
        assert spec.rl_module_specs[CRITIC_ID].model_config["cost_critic"] == kind
        assert spec.rl_module_specs[CRITIC_ID].learner_only
        inference = config_cls().environment("SafeMAToy-v0").get_multi_rl_module_spec(inference_only=True)
        assert CRITIC_ID not in inference.rl_module_specs  # EnvRunners hold the actors only
