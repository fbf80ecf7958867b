"""cluster/: the launcher configs against the schema Ray ships and Ray's own checks, the KubeRay RayJob's structure,
the worker image's Dockerfile (static: no Docker engine here), and the security rules of all of them."""

import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
LAUNCHER_CONFIGS = [CLUSTER / "aws.yaml", CLUSTER / "gcp.yaml"]
RAY_VERSION = re.search(r"^\s*ray\[[^\]]*\]==([\d.]+)$", (ROOT / "setup.cfg").read_text(), re.M).group(1)
# Patterns of things that must never be in a checked-in config: AWS access keys, private keys, W&B keys (40 hex),
# a Ray auth token (64 hex), an inline assignment of a secret variable.
SECRET_PATTERNS = [
    r"AKIA[0-9A-Z]{16}",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"\b[0-9a-f]{40}\b",
    r"\b[0-9a-f]{64}\b",
    r"(WANDB_API_KEY|AWS_SECRET_ACCESS_KEY|AWS_ACCESS_KEY_ID|RAY_AUTH_TOKEN)\s*[=:]\s*['\"]?[A-Za-z0-9/+]{8,}",
]


def load(path):
    return yaml.safe_load(path.read_text())


def test_ray_version_is_read_from_setup_cfg():
    assert RAY_VERSION == "2.60.0"


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_config_validates_against_rays_schema_and_checks(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = load(path)
    jsonschema.validate(config, schema)
    validate_config(prepare_config(load(path)))  # what `ray up` runs before it contacts the cloud

    broken = load(path)
    broken["available_node_types"]["gpu_worker"]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_config_cpu_head_gpu_workers_ray_image_and_bounds(path):
    config = load(path)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"]["GPU"] == 0 and head["resources"]["CPU"] > 0
    gpu_workers = [t for name, t in types.items() if t is not head and t["resources"].get("GPU", 0) >= 1]
    assert gpu_workers, "no GPU worker type"
    for name, node_type in types.items():
        if node_type is head:
            continue
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= config["max_workers"], name
    docker = config["docker"]
    images = [docker["image"], docker["worker_image"]]
    images += [t["docker"]["worker_image"] for t in types.values() if "docker" in t]
    for image in images:
        assert image.startswith(f"rayproject/ray:{RAY_VERSION}-"), image
    assert docker["worker_image"].endswith("-gpu")
    # The checkout is synced to every node and installed with the matching Ray; a CUDA torch where there is a GPU.
    assert config["file_mounts"]["/home/ray/rllib_safe"] == "."
    setup = " ".join(config["setup_commands"])
    assert f'"ray[default]=={RAY_VERSION}" /home/ray/rllib_safe' in setup
    assert "download.pytorch.org/whl/cu" in setup and "nvidia-smi" in setup
    assert ".venv" in config["rsync_exclude"] and ".gitignore" in config["rsync_filter"]


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_config_security(path):
    config = load(path)
    head_start = " ".join(config["head_start_ray_commands"])
    # The dashboard / job server listens on the head's loopback only: reachable through `ray dashboard` (SSH).
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in path.read_text()
    # Token authentication on every node; the token file comes from the user's machine, not from this file.
    for command in [*config["head_start_ray_commands"], *config["worker_start_ray_commands"]]:
        assert command == "ray stop" or "RAY_AUTH_MODE=token ray start" in command
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"


@pytest.mark.parametrize(
    "path", [*LAUNCHER_CONFIGS, CLUSTER / "kuberay" / "rayjob.yaml", CLUSTER / "Dockerfile"], ids=lambda p: p.name
)
def test_no_secret_in_cluster_files(path):
    text = path.read_text()
    for pattern in SECRET_PATTERNS:
        assert not re.search(pattern, text), f"{path.name} matches the secret pattern {pattern!r}"


def test_secret_patterns_catch_secrets():
    leaked = ["AKIAABCDEFGHIJKLMNOP", "WANDB_API_KEY=abcdef0123456789", "RAY_AUTH_TOKEN: " + "ab" * 32]
    for text in leaked:
        assert any(re.search(p, text) for p in SECRET_PATTERNS), text


def test_rayjob_manifest_runs_a_sweep_on_gpu_worker_groups():
    job = load(CLUSTER / "kuberay" / "rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    entrypoint = spec["entrypoint"].split()
    assert entrypoint[:2] == ["rllib-safe", "sweep"] and entrypoint[2].startswith("tune_configs/")
    assert entrypoint[2].endswith(".yaml") and "--storage-path" in entrypoint
    if (ROOT / "tune_configs").is_dir():  # the studies issue adds tune_configs/
        assert (ROOT / entrypoint[2]).exists(), entrypoint[2]
    assert spec["shutdownAfterJobFinishes"] is True and spec["submissionMode"] in ("K8sJobMode", "HTTPMode")
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == RAY_VERSION
    assert cluster["authOptions"] == {"mode": "token"}
    assert cluster["headGroupSpec"]["serviceType"] == "ClusterIP"  # never a public LoadBalancer

    storage = entrypoint[entrypoint.index("--storage-path") + 1]
    groups = cluster["workerGroupSpecs"]
    gpu_groups = []
    for group in [cluster["headGroupSpec"], *groups]:
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"].endswith("rllib-safe:0.1.0-gpu") and container["workingDir"] == "/app"
        assert any(m["mountPath"] == storage for m in container["volumeMounts"])  # the storage path on every pod
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert claims == {"results": "rllib-safe-results"}
        for env in container.get("env", []):
            assert "value" not in env and "secretKeyRef" in env["valueFrom"], env  # keys only from Secrets
        limits = container["resources"]["limits"]
        if int(limits.get("nvidia.com/gpu", 0)) >= 1:
            gpu_groups.append(group)
            assert container["resources"]["requests"]["nvidia.com/gpu"] == limits["nvidia.com/gpu"]
    assert gpu_groups and all("groupName" in g for g in gpu_groups)
    for group in groups:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    pvc = load(CLUSTER / "kuberay" / "results-pvc.yaml")
    assert pvc["metadata"]["name"] == "rllib-safe-results" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_dockerfile_pins_ray_installs_cuda_torch_and_this_package():
    """Static checks only: no Docker engine on this machine builds the image."""
    lines = [line.strip() for line in (CLUSTER / "Dockerfile").read_text().splitlines()]
    froms = [line for line in lines if line.startswith("FROM ")]
    assert froms == [f"FROM rayproject/ray:{RAY_VERSION}-py311-gpu"]
    text = "\n".join(lines)
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu" in text
    assert "pip install --no-cache-dir torch --index-url ${TORCH_INDEX_URL}" in text
    assert "COPY --chown=ray:users . /app" in text and "WORKDIR /app" in text
    assert f'pip install --no-cache-dir "ray[default]=={RAY_VERSION}" .' in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "results", "wandb", ".env"):
        assert entry in ignored, entry
