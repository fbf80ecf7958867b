"""GPU learners: one training iteration of every algorithm with its learner(s) on CUDA. Skipped without a GPU.

* one remote GPU learner (``num_learners=1, num_gpus_per_learner=1``): RLlib starts it through Ray Train with a
  NCCL process group (world size 1), so every learner-side collective (the KL early stop, MAFOCOPS' end-of-update
  statistics, MACPO's sums) must run on the learner's device;
* the local learner on a GPU (``num_learners=0, num_gpus_per_learner=1``);
* two GPU learners (DDP over NCCL) where two GPUs exist: both end with the same weights.

``benchmarks/gpu_check.sh`` runs this file and a throughput row per algorithm in one go.
"""

import numpy as np
import pytest
import torch

from rllib_safe.algorithms.registry import ALGORITHMS
from tests.conftest import small_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]


@pytest.fixture(scope="module")
def ray_gpu():
    import ray

    import rllib_safe

    ray.init(num_cpus=4, num_gpus=torch.cuda.device_count(), include_dashboard=False, ignore_reinit_error=True)
    rllib_safe.register()
    yield ray
    ray.shutdown()


def gpu_config(algo: str, num_learners: int):
    # target_kl makes every algorithm take the cross-learner KL mean of the early stop (a collective).
    config = small_config(algo, env="Safety2x1SwimmerVelocity-v0", cost_limit=1.0, target_kl=0.02)
    return config.learners(num_learners=num_learners, num_gpus_per_learner=1)


def learner_facts(learner):
    """On the learner: the device of an actor's parameters and a checksum of all weights."""
    params = list(learner.module["agent_0"].parameters())
    checksum = float(sum(p.detach().double().sum().item() for m in learner.module.values() for p in m.parameters()))
    return str(params[0].device), checksum


def check_result(result):
    for aid in ("agent_0", "agent_1"):
        stats = result["learners"][aid]
        assert "cpo_case" in stats if "policy_loss" not in stats else np.isfinite(stats["policy_loss"])
    assert np.isfinite(result["learners"]["__critic__"]["vf_loss"])


@pytest.mark.usefixtures("ray_gpu")
@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_one_remote_gpu_learner(algo):
    a = gpu_config(algo, num_learners=1).build_algo()
    try:
        result = a.train()
        facts = a.learner_group.foreach_learner(learner_facts)
    finally:
        a.stop()
    check_result(result)
    device, _ = facts.result_or_errors[0].get()
    assert device.startswith("cuda")


@pytest.mark.usefixtures("ray_gpu")
@pytest.mark.parametrize("algo", ["MAPPOLagrangian", "MAFOCOPS"])
def test_local_gpu_learner(algo):
    a = gpu_config(algo, num_learners=0).build_algo()
    try:
        result = a.train()
        device, _ = learner_facts(a.learner_group._learner)
    finally:
        a.stop()
    check_result(result)
    assert device.startswith("cuda")
    if algo == "MAPPOLagrangian":
        assert result["learners"]["agent_0"]["lagrange_multiplier"] > 0.001


@pytest.mark.usefixtures("ray_gpu")
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_two_gpu_learners_ddp(algo):
    a = gpu_config(algo, num_learners=2).build_algo()
    try:
        result = a.train()
        facts = [r.get() for r in a.learner_group.foreach_learner(learner_facts).result_or_errors]
    finally:
        a.stop()
    check_result(result)
    assert all(device.startswith("cuda") for device, _ in facts)
    assert facts[0][1] == pytest.approx(facts[1][1], rel=1e-6)  # DDP: identical weights on both ranks
