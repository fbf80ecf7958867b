"""Algorithms build again after ray.shutdown() + ray.init() in the same process (Tune's registry lives in the cluster;
the task names must be registered again in the new one)."""

import ray

from tests.conftest import small_config


def test_build_after_a_ray_restart():
    for _ in range(2):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            algo = small_config("MAPPO", batch=100, steps=25).build_algo()
            result = algo.train()
            algo.stop()
        finally:
            ray.shutdown()
        assert result["env_runners"]["num_env_steps_sampled"] >= 100
