"""Compatibility fixes for the pinned Ray (2.60), applied once on ``import rllib_safe``.

``MultiAgentEpisode.slice`` drops every agent's infos (it rebuilds the episode from observations, actions, rewards and
extra model outputs only). RLlib slices episodes when ``LearnerGroup.update`` shards them across several Learners
(``TrainingData.shard``), so with ``num_learners > 1`` the costs and global states that rllib_safe tasks return in
their infos would vanish on the way to the Learners. :func:`patch_multi_agent_episode_slice` wraps ``slice`` so that
each sliced single-agent episode gets the infos of exactly its time steps (lookback included) back from the original.
"""

from __future__ import annotations

import functools

from ray.rllib.env.multi_agent_episode import MultiAgentEpisode


def _restore_infos(original: MultiAgentEpisode, sliced: MultiAgentEpisode) -> None:
    for aid, new in sliced.agent_episodes.items():
        old = original.agent_episodes.get(aid)
        if old is None:
            continue
        # Buffer index of global agent step T: (T - t_started) + lookback. One info per observation.
        first = (new.t_started - new.infos.lookback) - old.t_started + old.infos.lookback
        count = len(new.observations.data)
        infos = list(old.infos.data[first : first + count])
        if first < 0 or len(infos) != count:
            raise RuntimeError(f"Cannot restore the infos of a sliced episode for agent {aid!r}.")
        new.infos.data = infos


def patch_multi_agent_episode_slice() -> None:
    """Makes ``MultiAgentEpisode.slice`` keep the infos (idempotent)."""
    if getattr(MultiAgentEpisode.slice, "_rllib_safe_keeps_infos", False):
        return
    original_slice = MultiAgentEpisode.slice

    @functools.wraps(original_slice)
    def slice_keeping_infos(self: MultiAgentEpisode, slice_: slice, **kwargs):
        sliced = original_slice(self, slice_, **kwargs)
        _restore_infos(self, sliced)
        return sliced

    slice_keeping_infos._rllib_safe_keeps_infos = True
    MultiAgentEpisode.slice = slice_keeping_infos
