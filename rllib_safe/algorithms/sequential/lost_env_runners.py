"""Sampling that survives dead EnvRunners for a bounded time, then stops with a clear error and a checkpoint.

What RLlib 2.60 already does (``restart_failed_env_runners=True``, its default): Ray restarts a crashed EnvRunner actor
(on any node with room for it), ``Algorithm.restore_env_runners`` pings it back to health and re-syncs its weights,
and sampling meanwhile uses the healthy EnvRunners. A crashed EnvRunner's unfinished ``sample()`` call is lost whole:
its episodes and its metrics (the episode-cost sums among them) never reach the Algorithm, so the cost sums that drive
the dual variables still cover exactly the episodes that are trained on.

What it leaves open: when *no* EnvRunner returns anything (every one is dead, e.g. their node died, and none can be
restarted), ``synchronous_parallel_sample`` returns nothing, and every iteration reports NaN metrics without end.
:func:`sample_with_bounded_wait` waits instead, probing for restarted EnvRunners, for at most
``lost_env_runners_timeout_s`` seconds (plus at most one health probe, ``env_runner_health_probe_timeout_s``); if
none comes back it saves a checkpoint of the last completed iteration and raises :class:`EnvRunnersLostError`, whose
message names the checkpoint and how to resume from it.

Where the checkpoint goes: ``<trial dir>/checkpoint_env_runners_lost`` on the Tune storage (shared directory,
``s3://``, ``gs://``) when the Algorithm runs as a Tune trial, else ``<algo.logdir>/checkpoint_env_runners_lost``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ray.rllib.execution.rollout_ops import synchronous_parallel_sample

logger = logging.getLogger(__name__)

#: Seconds between two attempts to sample while no EnvRunner answers.
RETRY_INTERVAL_S = 2.0
#: Name of the checkpoint saved when the EnvRunners are lost.
CHECKPOINT_NAME = "checkpoint_env_runners_lost"


class EnvRunnersLostError(RuntimeError):
    """No EnvRunner returned samples within ``lost_env_runners_timeout_s``; ``checkpoint`` resumes the run."""

    def __init__(self, message: str, checkpoint: str | None = None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint

    def __reduce__(self) -> tuple:
        return type(self), (str(self), self.checkpoint)  # copies and pickles (Ray, Tune) keep the checkpoint


def sample_with_bounded_wait(algo: Any) -> tuple[list, list]:
    """``synchronous_parallel_sample`` of one iteration's batch; while it returns nothing, wait for the EnvRunners.

    Args:
        algo: The running Algorithm (its ``config`` has ``lost_env_runners_timeout_s``).

    Returns:
        The episodes and the EnvRunners' metrics, as ``synchronous_parallel_sample(..., _return_metrics=True)``.

    Raises:
        EnvRunnersLostError: Nothing was sampled for ``lost_env_runners_timeout_s`` seconds.
    """
    config = algo.config
    group = algo.env_runner_group
    start = None
    while True:
        episodes, results = synchronous_parallel_sample(
            worker_set=group,
            max_env_steps=config.total_train_batch_size,
            sample_timeout_s=config.sample_timeout_s,
            _uses_new_env_runners=True,
            _return_metrics=True,
        )
        if episodes:
            if start is not None:
                logger.warning("EnvRunners are sampling again after %.0f s.", time.monotonic() - start)
            return episodes, results
        if start is None:
            start = time.monotonic()
            logger.warning(
                "No EnvRunner returned samples (%d of %d healthy); waiting up to %g s for restarted EnvRunners.",
                group.num_healthy_remote_workers(),
                group.num_remote_workers(),
                config.lost_env_runners_timeout_s,
            )
        waited = time.monotonic() - start
        if waited >= config.lost_env_runners_timeout_s:
            raise_env_runners_lost(algo, waited)
        time.sleep(min(RETRY_INTERVAL_S, config.lost_env_runners_timeout_s - waited))
        restored = algo.restore_env_runners(group)  # pings dead EnvRunners; re-syncs the weights of restarted ones
        if restored:
            algo._make_on_env_runners_recreated_callbacks(
                config=config, env_runner_group=group, restored_env_runner_indices=restored
            )


def checkpoint_location(algo: Any) -> tuple[str, Any, str]:
    """Where the lost-EnvRunners checkpoint goes: ``(path on the filesystem, pyarrow filesystem or None, URI)``."""
    storage = getattr(algo, "_storage", None)
    if storage is not None:  # a Tune trial: the trial directory on the experiment's storage
        path = f"{storage.trial_fs_path}/{CHECKPOINT_NAME}"
        kind = storage.storage_filesystem.type_name
        return path, storage.storage_filesystem, path if kind == "local" else f"{kind}://{path}"
    path = f"{algo.logdir}/{CHECKPOINT_NAME}"
    return path, None, path


def raise_env_runners_lost(algo: Any, waited: float) -> None:
    """Saves the Algorithm's state (the last completed iteration) and raises :class:`EnvRunnersLostError`."""
    group = algo.env_runner_group
    path, filesystem, uri = checkpoint_location(algo)
    try:
        algo.save_to_path(path, filesystem=filesystem)
        saved = f"The state after iteration {algo.iteration} is saved in {uri}: resume with "
        saved += f"`Algorithm.from_checkpoint('{uri}')` or `rllib-safe train --restore {uri}`."
    except Exception as e:  # the learner may have been on the lost node too
        uri = None
        saved = f"Saving a checkpoint failed too ({type(e).__name__}: {e}); resume from the last periodic checkpoint."
    raise EnvRunnersLostError(
        f"No EnvRunner returned samples for {waited:.0f} s (`lost_env_runners_timeout_s` = "
        f"{algo.config.lost_env_runners_timeout_s:g}); {group.num_healthy_remote_workers()} of "
        f"{group.num_remote_workers()} EnvRunners are healthy: their processes or their node died and none could be "
        f"restarted. {saved}",
        checkpoint=uri,
    )


__all__ = ["EnvRunnersLostError", "checkpoint_location", "sample_with_bounded_wait"]
