"""The pieces of the lock-step EnvRunner against RLlib's own code: action mapping, action drawing, episode buffers,
row blocks."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.spaces.space_utils import clip_action, unsquash_action

from rllib_safe.env_runners.actions import draw_diag_gaussian, env_action_fn, group_env_action_fn
from rllib_safe.env_runners.rows import Rows, aligned_zeros, extend_buffer


@pytest.mark.parametrize(
    "space",
    [
        gym.spaces.Box(-1.0, 1.0, (4,), np.float32),
        gym.spaces.Box(np.array([-0.4, -2.0, 0.0], np.float32), np.array([2.5, 1.0, 0.3], np.float32)),
        gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
    ],
)
def test_env_actions_are_bitwise_rllibs_normalize_and_clip(space):
    rng = np.random.default_rng(0)
    actions = (2 * rng.standard_normal((500, *space.shape))).astype(np.float32)
    actions[0, 0] = -0.0
    for normalize, clip, rllib in ((True, False, unsquash_action), (False, True, clip_action)):
        expected = np.stack([rllib(a, space) for a in actions])
        got = env_action_fn(space, normalize, clip)(actions.copy())
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    assert env_action_fn(space, False, False)(actions) is actions


def test_group_env_actions_map_each_agent_with_its_own_space():
    spaces = [gym.spaces.Box(-1.0, 1.0, (2,), np.float32), gym.spaces.Box(0.0, 4.0, (2,), np.float32)]
    actions = np.array([[[0.5, -3.0]], [[0.5, -3.0]]], np.float32)
    mapped = group_env_action_fn(spaces, normalize=True, clip=False)(actions)
    np.testing.assert_array_equal(mapped[0], [[0.5, -1.0]])
    np.testing.assert_array_equal(mapped[1], [[3.0, 0.0]])  # 0 + (0.5 + 1) * 4 / 2; -3 clipped to the low bound


def test_draw_diag_gaussian_is_bitwise_rllibs_sample_and_logp():
    inputs = torch.randn(5, 6)
    torch.manual_seed(3)
    dist = TorchDiagGaussian.from_logits(inputs)
    expected_actions = dist.sample()
    expected_logp = dist.logp(expected_actions)
    torch.manual_seed(3)
    out = {Columns.ACTION_DIST_INPUTS: inputs}
    draw_diag_gaussian(out)
    assert torch.equal(out[Columns.ACTIONS], expected_actions)
    assert torch.equal(out[Columns.ACTION_LOGP], expected_logp)


def test_aligned_rows_start_on_64_bytes_and_share_memory():
    a = aligned_zeros((7, 3, 63), np.float32)
    assert a.shape == (7, 3, 63) and all(a[k].ctypes.data % 64 == 0 for k in range(7))
    assert all(a[k].flags.c_contiguous for k in range(7))
    a[2, 1, 5] = 4.0
    assert a[2, 1, 5] == 4.0 and a.sum() == 4.0


def test_extend_buffer_gives_what_to_numpy_gives():
    """A chunk that starts with a lookback item (RLlib's cut) and gets 3 steps appended in bulk."""
    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    reference = SingleAgentEpisode(observations=[rows[0], rows[1]], actions=[rows[0][:2]], rewards=[0.5])
    for k in (2, 3):
        reference.add_env_step(rows[k], rows[k][:2], float(k))
    reference.to_numpy()
    bulk = SingleAgentEpisode(observations=[rows[0], rows[1]], actions=[rows[0][:2]], rewards=[0.5])
    extend_buffer(bulk.observations, rows[2:])
    extend_buffer(bulk.actions, rows[2:, :2])
    extend_buffer(bulk.rewards, np.array([2.0, 3.0]))
    for name in ("observations", "actions", "rewards"):
        ours, theirs = getattr(bulk, name), getattr(reference, name)
        assert ours.finalized and (ours.lookback, ours.data.dtype) == (theirs.lookback, theirs.data.dtype)
        np.testing.assert_array_equal(ours.data, theirs.data)


def test_rows_grow_and_pad_grouped_observations():
    first = {"a": np.zeros(3, np.float32), "b": np.zeros(2, np.float32), "c": np.zeros(4, np.float32)}
    rows = Rows(first, num_envs=2, capacity=2, groups=[["a", "b"], ["c"]])
    rows.obs["a"][1, 0] = [1, 2, 3]
    rows.obs["b"][1, 1] = [4, 5]
    rows.write(0, Columns.ACTIONS, 1, np.arange(2), True, np.ones((2, 2, 1), np.float32))
    rows.ensure(5)
    assert rows.capacity >= 6
    np.testing.assert_array_equal(rows.blocks[0][1], [[[1, 2, 3], [0, 0, 0]], [[0, 0, 0], [4, 5, 0]]])
    np.testing.assert_array_equal(rows.column("b", Columns.ACTIONS)[1], [[1], [1]])
    assert rows.keys("a") == [Columns.ACTIONS] and rows.keys("c") == []
    rows.move_row(1, 0)
    np.testing.assert_array_equal(rows.obs["b"][0, 1], [4, 5])
