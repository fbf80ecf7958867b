"""``rllib-safe evaluate``: episodes of a trained team, their return, cost and cost tail, and a video of the first.

The episodes are sampled by the same EnvRunner class that trained the team (in this process, no Ray actors), with
the checkpoint's connector states and the actors' weights from its Learner, one environment, seeded with the given
seed for the first reset (episode k > 0 continues the env's random stream, as RLlib's own sampling does).
Deterministic by default: every agent takes the mean of its Gaussian (RLlib's ``explore=False``); ``stochastic``
samples from it (``explore=True``).

Return is the team episode return (the mean over agents of each agent's return: the team reward once, as
``team_return_mean`` in the training progress and SafePO's ``EpRet``; not RLlib's ``get_return()``, the sum over
agents); cost is the team episode cost (the mean over agents of each agent's summed cost, as ``episode_cost_mean``);
the tail metrics and the fraction of episodes over the limit come from :func:`rllib_safe.callbacks.tail_metrics`.

The video (``--video FILE.mp4``) shows the first episode, rendered offscreen by MuJoCo with the task's
``render_mode="rgb_array"``; set ``MUJOCO_GL=egl`` for a headless machine (README, "Tasks").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Evaluation:
    """Per-episode numbers and their summary."""

    checkpoint: str
    returns: list[float]
    costs: list[float]
    lengths: list[int]
    cost_limit: float | None
    summary: dict[str, float] = field(default_factory=dict)


def _build_runner(config: Any, checkpoint: Path, render: bool, frames: list, seed: int):
    from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner

    config = config.copy(copy_frozen=False)
    env_config = dict(config.env_config or {})
    if render:
        env_config["render_mode"] = "rgb_array"
        state = {"first": None}

        def record(*, episode: Any, env: Any, env_index: int, **kwargs: Any) -> None:
            if state["first"] is None:
                state["first"] = episode.id_
            if episode.id_ == state["first"]:
                frames.append(np.asarray(env.envs[env_index].render()))

        config.callbacks(on_episode_start=record, on_episode_step=record)
    config.environment(env_config=env_config)
    config.env_runners(num_env_runners=0, num_envs_per_env_runner=1)
    config.debugging(seed=seed)
    runner_cls = config.env_runner_cls or MultiAgentEnvRunner
    runner = runner_cls(config=config)
    if (checkpoint / "env_runner").is_dir():
        runner.restore_from_path(checkpoint / "env_runner")  # connector states (e.g. observation filters)
    modules = checkpoint / "learner_group" / "learner" / "rl_module"
    for module_id in list(runner.module.keys()):
        runner.module[module_id].restore_from_path(modules / module_id)
    return runner


def evaluate(
    checkpoint: str | Path,
    *,
    episodes: int = 10,
    stochastic: bool = False,
    seed: int = 0,
    video: str | Path | None = None,
) -> Evaluation:
    """Runs ``episodes`` episodes of a checkpoint's team (module docstring).

    Raises:
        ValueError: No checkpoint, ``episodes < 1``, or a video of a task that cannot render.
    """
    from rllib_safe.callbacks import episode_costs, episode_returns, tail_metrics, team_cost_limit, team_return
    from rllib_safe.studies.checkpoint import read_checkpoint

    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}.")
    if video is not None and Path(video).suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"--video must end in .mp4 (or .gif), got {str(video)!r}.")
    import rllib_safe

    rllib_safe.register()  # the EnvRunner looks the task up in Tune's registry (also after a ray.shutdown())
    info = read_checkpoint(checkpoint)
    if video is not None:
        _check_renders(info.config)
    frames: list = []
    runner = _build_runner(info.config, info.path, video is not None, frames, seed)
    try:
        sampled = runner.sample(num_episodes=episodes, explore=stochastic, random_actions=False)
        fps = _fps(runner)
    finally:
        runner.stop()
    done = [e for e in sampled if e.is_done][:episodes]
    returns = [team_return(episode_returns(e)) for e in done]
    costs = [float(np.mean([c.sum() for c in episode_costs(e).values()])) for e in done]
    lengths = [int(e.env_steps()) for e in done]
    limit = team_cost_limit(info.config)
    summary = {
        "episodes": len(done),
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "cost_mean": float(np.mean(costs)),
        "length_mean": float(np.mean(lengths)),
        **tail_metrics(costs, limit),
    }
    if video is not None:
        write_video(frames, video, fps)
    return Evaluation(
        checkpoint=str(info.path), returns=returns, costs=costs, lengths=lengths, cost_limit=limit, summary=summary
    )


def _check_renders(config: Any) -> None:
    """Builds the task once with ``render_mode="rgb_array"`` and renders its reset state (a clear error if it can't)."""
    from rllib_safe.envs import make, task_names

    if not isinstance(config.env, str) or config.env not in task_names():
        return
    try:
        env = make(config.env, **{**(config.env_config or {}), "render_mode": "rgb_array"})
    except ValueError as e:
        raise ValueError(f"--video: task {config.env} cannot render ({e}).") from None
    try:
        env.reset(seed=0)
        if env.render() is None:
            raise ValueError(f"--video: task {config.env} returned no image (render_mode='rgb_array').")
    finally:
        env.close()


def _fps(runner: Any) -> float:
    try:
        env = runner.env.unwrapped.envs[0]
        fps = getattr(env, "metadata", {}).get("render_fps") or getattr(env.unwrapped, "metadata", {}).get("render_fps")
        return float(fps) if fps else 30.0
    except Exception:
        return 30.0


def write_video(frames: list, path: str | Path, fps: float) -> Path:
    """Writes frames (``HxWx3`` uint8) as an MP4 (H.264 through imageio-ffmpeg) or a GIF."""
    if not frames:
        raise ValueError("--video: the task returned no frames.")
    try:
        import imageio.v2 as imageio
    except ImportError:
        raise ValueError("--video needs imageio and imageio-ffmpeg: pip install -e '.[video]'") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        imageio.mimsave(path, frames, duration=1.0 / fps)
        return path
    try:
        imageio.mimsave(path, frames, fps=fps, macro_block_size=1)
    except (ImportError, ValueError, RuntimeError) as e:
        raise ValueError(f"--video: cannot write {path} ({e}); pip install imageio-ffmpeg") from None
    return path
