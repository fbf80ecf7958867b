import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance for one test module (2 CPUs, no dashboard), shut down afterwards."""
    import ray

    import rllib_safe

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    rllib_safe.register()
    yield ray
    ray.shutdown()


def small_config(algo, env="Safety2x3HalfCheetahVelocity-v0", steps=50, batch=200, **training):
    """A config that trains in a few seconds: short episodes, tiny batches, no remote EnvRunners."""
    from rllib_safe.algorithms.registry import get_config

    return (
        get_config(algo)
        .environment(env, env_config={"max_episode_steps": steps})
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1, batch_mode="complete_episodes")
        .training(
            train_batch_size_per_learner=batch,
            minibatch_size=batch // 2,
            num_epochs=2,
            actor_hiddens=[32, 32],
            critic_hiddens=[32, 32],
            **training,
        )
        .debugging(seed=7)
    )
