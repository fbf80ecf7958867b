"""Helpers shared by the task tests."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
from ray.rllib.utils.pre_checks.env import check_multiagent_environments

REPO = Path(__file__).resolve().parents[1]


def load_benchmark(script: str):
    """Imports ``benchmarks/<script>.py`` (not a package) as the module ``<script>_benchmark``."""
    spec = importlib.util.spec_from_file_location(f"{script}_benchmark", REPO / "benchmarks" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def zero_actions(env):
    return {aid: np.zeros(env.action_spaces[aid].shape, np.float32) for aid in env.possible_agents}


def random_actions(env, rng):
    return {aid: rng.uniform(-1, 1, env.action_spaces[aid].shape).astype(np.float32) for aid in env.possible_agents}


def check_contract_and_shapes(env, n, obs_dims, act_dims, state_dim):
    """RLlib's env checker, the agent names, the space sizes, and reset observations inside their spaces."""
    check_multiagent_environments(env)
    assert env.possible_agents == [f"agent_{i}" for i in range(n)]
    assert [env.observation_spaces[a].shape[0] for a in env.possible_agents] == obs_dims
    assert [env.action_spaces[a].shape[0] for a in env.possible_agents] == act_dims
    assert env.state_space.shape == (state_dim,)
    obs, infos = env.reset(seed=1)
    for aid in env.possible_agents:
        assert env.observation_spaces[aid].contains(obs[aid])
    return obs, infos


def render_headless(script: str) -> None:
    """Runs ``script`` with ``MUJOCO_GL=egl``, then ``osmesa``, each in a fresh process (MuJoCo picks its GL backend
    when it is imported); returns on the first backend that renders.

    ``script`` prints ``IMPORTED`` once its imports are done and ``RENDER_OK`` at the end. The test skips only when no
    GL backend can be loaded (MuJoCo's import fails on GL, or a task says "MuJoCo cannot render"); any other failure
    fails the test.
    """
    import os
    import subprocess
    import sys

    import pytest

    gl_errors = []
    for backend in ("egl", "osmesa"):
        proc = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "MUJOCO_GL": backend},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode == 0 and "RENDER_OK" in proc.stdout:
            return
        import_failed = "IMPORTED" not in proc.stdout and any(k in proc.stderr for k in ("OpenGL", "EGL", "OSMesa"))
        if not import_failed and "MuJoCo cannot render" not in proc.stderr:
            pytest.fail(f"rendering with MUJOCO_GL={backend} failed:\n{proc.stderr[-3000:]}")
        gl_errors.append(f"{backend}: {proc.stderr.strip().splitlines()[-1]}")
    pytest.skip("no headless OpenGL backend works here: " + "; ".join(gl_errors))


#: The learning tests' settings for the toy task: SafePO-like epochs, 4 minibatches of a 1,000-step batch, small
#: networks and step sizes large enough to learn in 15-45 iterations.
TOY_LEARNING = dict(
    train_batch_size_per_learner=1000,
    minibatch_size=250,
    num_epochs=5,
    lr=3e-3,
    critic_lr=3e-3,
    actor_hiddens=[32, 32],
    critic_hiddens=[32, 32],
)


def train_and_evaluate_on_toy(config, iterations, env="SafeMAToy-v0"):
    """Trains ``config`` on the toy task ``env`` (seed 0, local sampling, whole episodes), then evaluates the
    deterministic policy (the mean action) on 20 episodes; returns the per-iteration ``env_runners`` results and the
    evaluation's."""
    config = (
        config.environment(env)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1, batch_mode="complete_episodes")
        .evaluation(
            evaluation_interval=10_000,  # only the explicit evaluate() below
            evaluation_duration=20,
            evaluation_duration_unit="episodes",
            evaluation_num_env_runners=0,
            evaluation_config={"explore": False},
        )
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        history = [algo.train()["env_runners"] for _ in range(iterations)]
        return history, algo.evaluate()["env_runners"]
    finally:
        algo.stop()
