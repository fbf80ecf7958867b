"""GPU smoke test: the learner (critics, GAE, sequential update, duals) runs on CUDA. Skipped without a GPU."""

import numpy as np
import pytest
import torch

from tests.conftest import small_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]


def test_mappo_lagrangian_learner_on_cuda():
    import ray

    import rllib_safe

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, ignore_reinit_error=True)
    rllib_safe.register()
    try:
        config = small_config("MAPPOLagrangian", env="Safety2x1SwimmerVelocity-v0")
        a = config.learners(num_gpus_per_learner=1).build_algo()
        result = a.train()
        learner = a.learner_group._learner
        assert next(learner.module["agent_0"].parameters()).is_cuda
        assert np.isfinite(result["learners"]["agent_0"]["policy_loss"])
        assert result["learners"]["agent_0"]["lagrange_multiplier"] > 0.001
        a.stop()
    finally:
        ray.shutdown()
