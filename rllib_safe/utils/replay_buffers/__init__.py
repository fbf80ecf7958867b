"""Replay buffers of rllib_safe (mirrors ``ray.rllib.utils.replay_buffers``)."""

from rllib_safe.utils.replay_buffers.joint_replay_buffer import JointReplayBuffer

__all__ = ["JointReplayBuffer"]
