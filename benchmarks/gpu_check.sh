#!/usr/bin/env bash
# GPU check in one go: the `gpu` tests (one iteration of every algorithm with one GPU learner, two learners where two
# GPUs exist), then one training-throughput row per algorithm with its learner(s) on the GPU(s).
#
# Run on a GPU machine, from the repository root, in a venv with a CUDA build of torch:
#   pip install torch --index-url https://download.pytorch.org/whl/cu128 && pip install -e ".[test]"
#   bash benchmarks/gpu_check.sh            # ~5 min on one GPU and 16 cores
# Env: GPU_CHECK_ENV (task, default Safety2x4AntVelocity-v0), GPU_CHECK_ITERS (timed iterations, default 2),
#      GPU_CHECK_RUNNERS (EnvRunners, default: CPU cores - 2, at most 8).
# Without CUDA it says so, runs the gpu tests (which then skip) and exits 0.
set -uo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL="${MUJOCO_GL:-egl}"

read -r NGPU CUDA_INFO < <(python - <<'PY'
import torch
n = torch.cuda.device_count() if torch.cuda.is_available() else 0
names = ", ".join(torch.cuda.get_device_name(i) for i in range(n)) or "none"
print(n, f"torch {torch.__version__} (CUDA build: {torch.version.cuda or 'no'}); GPUs: {names}")
PY
)
echo "gpu_check: ${CUDA_INFO}"

echo "== gpu tests (pytest -m gpu tests/integration/test_gpu.py)"
python -m pytest -m gpu tests/integration/test_gpu.py -q -rs -p no:cacheprovider
tests_status=$?

if [ "${NGPU}" -eq 0 ]; then
  echo "gpu_check: CUDA is absent (torch.cuda.is_available() is False): the gpu tests skipped, no throughput rows."
  exit "${tests_status}"
fi

runners="${GPU_CHECK_RUNNERS:-$(python -c 'import os; print(max(1, min(8, os.cpu_count() - 2)))')}"
learners=$([ "${NGPU}" -ge 2 ] && echo 2 || echo 1)
echo "== throughput: every algorithm, ${learners} GPU learner(s), ${runners} EnvRunner(s)"
python benchmarks/train_throughput.py --algos MAPPO HAPPO MAPPOLagrangian MAFOCOPS MACPO \
  --env "${GPU_CHECK_ENV:-Safety2x4AntVelocity-v0}" --iters "${GPU_CHECK_ITERS:-2}" \
  --num-env-runners "${runners}" --num-learners "${learners}" --num-gpus-per-learner 1
bench_status=$?
echo "gpu_check: gpu tests exit ${tests_status}, throughput exit ${bench_status}"
exit $(( tests_status != 0 ? tests_status : bench_status ))
