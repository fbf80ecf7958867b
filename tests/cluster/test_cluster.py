"""A real two-node Ray cluster on this machine (``ray start --head`` + ``ray start --address``, token authentication,
see :mod:`tests.cluster.local_cluster`), and Ray jobs submitted to it with ``ray job submit --working-dir .``:

* a one-trial Tune run with one EnvRunner on each node, storage on a shared path, W&B offline: SUCCEEDED, checkpoint
  in the storage path, no secret of the driver's environment in anything written;
* an EnvRunner process killed mid-sample: training goes on (RLlib restarts it), and the episode-cost sums that drive
  the dual variables lose no delivered episode and count none twice (checked against a ledger of every episode the
  EnvRunners finished);
* the job's working directory is not deleted under the driver (the reported ``FileNotFoundError`` from
  ``os.getcwd()``: two nodes on one machine sharing one ``--temp-dir``), reproduced and shown gone with own temp dirs;
* the worker node killed mid-run: the run finishes on the head (documented decision, cluster/README.md).
"""

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.ledger import check_cost_sums, read_ledger
from tests.cluster.local_cluster import RAY, LocalRayCluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SENTINELS = {"WANDB_API_KEY": "sentinel-wandb-4f1c9e2d7a", "AWS_SECRET_ACCESS_KEY": "sentinel-aws-8b3e6d0c5f"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_cluster")
    c = LocalRayCluster(root / "nodes", head_cpus=2)
    try:
        c.start_head(resources={"env_runner_slot": 1})
        c.add_worker(num_cpus=2, resources={"env_runner_slot": 1})
        c.storage = root / "storage"  # the "shared filesystem" every node reaches
        c.storage.mkdir()
        yield c
    finally:
        c.stop()
        c.cleanup()


def submit(cluster, name, entrypoint, env_vars=None, wait=True, timeout=400, working_dir=ROOT):
    """``ray job submit --working-dir <repo> [--runtime-env-json {env_vars}] -- <entrypoint>``."""
    args = [RAY, "job", "submit", "--submission-id", f"{name}_{int(time.time())}", "--working-dir", str(working_dir)]
    if env_vars:
        args += ["--runtime-env-json", json.dumps({"env_vars": env_vars})]
    if not wait:
        args.append("--no-wait")
    return cluster.run([*args, "--", *entrypoint], timeout=timeout, cwd=ROOT)


def job_status(cluster, submission_id):
    out = cluster.run([RAY, "job", "status", submission_id], timeout=60).stdout
    match = re.search(r"Status for job '[^']+': (\w+)", out) or re.search(r"Job '[^']+' (succeeded|failed)", out)
    return match.group(1).upper() if match else out


def test_clients_without_the_token_are_refused(cluster):
    """Token authentication is on: a job client without the token (none, or another one) gets nothing."""
    no_token = {k: v for k, v in cluster.client_env.items() if k != "RAY_AUTH_TOKEN"}
    for env in ({**no_token, "RAY_AUTH_MODE": "disabled"}, {**no_token, "RAY_AUTH_TOKEN": "0" * 64}):
        proc = subprocess.run([RAY, "job", "list"], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "auth" in (proc.stdout + proc.stderr).lower()
    assert cluster.run([RAY, "job", "list"], timeout=60).returncode == 0


# ---------------------------------------------------------------------------------------------------------------------
# The Tune job: EnvRunners on both nodes, an EnvRunner killed mid-sample, secrets.
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tune_job(cluster):
    out = cluster.storage / "tune_job_out"
    ledger = out / "ledger"
    ledger.mkdir(parents=True)
    env_vars = {
        **SENTINELS,  # keys reach the driver and every worker as runtime-env environment variables
        "RLLIB_SAFE_LEDGER_DIR": str(ledger),
        "RLLIB_SAFE_KILL_ENV_RUNNER": "2:1",  # EnvRunner 2 dies in its second sample call
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(out),
    }
    entrypoint = [sys.executable, "-m", "tests.cluster.job_train", "--mode", "tune"]
    entrypoint += ["--storage-path", str(cluster.storage / "tune"), "--out", str(out), "--iters", "4"]
    proc = submit(cluster, "tune", entrypoint, env_vars=env_vars)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else None
    return {"proc": proc, "summary": summary, "out": out, "ledger": read_ledger(ledger), "ledger_dir": ledger}


def test_job_succeeds_with_env_runners_on_both_nodes(cluster, tune_job):
    proc = tune_job["proc"]
    assert proc.returncode == 0 and "succeeded" in proc.stdout, proc.stdout[-5000:] + proc.stderr[-3000:]
    summary = tune_job["summary"]
    head, worker = cluster.nodes[0].ip, cluster.nodes[1].ip
    assert summary["cluster_nodes"] == sorted([head, worker]) and summary["driver_node"] == head
    assert summary["ray_address"] == cluster.address  # the job's driver joined this cluster
    assert summary["cwd_intact"]
    # Where the EnvRunners ran: index 1 and 2 each on its own node, so episodes came from both nodes.
    nodes = {r["worker_index"]: r["node"] for r in tune_job["ledger"]}
    assert set(nodes) == {1, 2} and set(nodes.values()) == {head, worker}


def test_results_and_checkpoint_in_the_storage_path(cluster, tune_job):
    summary = tune_job["summary"]
    storage = cluster.storage / "tune"
    assert Path(summary["trial_path"]).is_relative_to(storage) and Path(summary["checkpoint"]).is_relative_to(storage)
    checkpoint = Path(summary["checkpoint"])
    assert (checkpoint / "algorithm_state.pkl").exists() or any(checkpoint.rglob("*.pkl"))
    iterations = [it["iteration"] for it in summary["iterations"]]
    assert len(iterations) >= 4 and iterations == list(range(1, len(iterations) + 1))
    assert any(Path(summary["trial_path"]).rglob("offline-run-*")) or any(tune_job["out"].rglob("offline-run-*"))


def test_killed_env_runner_training_goes_on_and_cost_sums_are_exact(tune_job):
    ledger, summary = tune_job["ledger"], tune_job["summary"]
    killed = json.loads((tune_job["ledger_dir"] / "killed").read_text())
    pids_of_2 = {r["pid"] for r in ledger if r["worker_index"] == 2}
    assert killed["pid"] in pids_of_2 and len(pids_of_2) == 2  # the killed process and its restarted successor
    successor = (pids_of_2 - {killed["pid"]}).pop()
    assert any(r["pid"] == successor for r in ledger)  # the restarted EnvRunner sampled for later iterations
    assert all(it["env_runners"]["num_episodes"] > 0 for it in summary["iterations"])
    counts = check_cost_sums(ledger, summary["iterations"], lost_call=(killed["pid"], killed["call"]))
    assert counts["lost"] >= 1  # episodes finished in the interrupted call died with it and are in no sum
    assert counts["counted"] == counts["ledger"] - counts["lost"]


def test_no_secret_is_written_to_results_checkpoints_or_logs(cluster, tune_job):
    # The keys did reach the workers (the ledger holds their fingerprint, never the key)...
    from tests.cluster.ledger import sha256

    assert {r["wandb_key_sha256"] for r in tune_job["ledger"]} == {sha256(SENTINELS["WANDB_API_KEY"])}
    # ...and no byte of them is in any file the run wrote: Tune results, params, checkpoints, W&B offline files.
    written = [p for p in cluster.storage.rglob("*") if p.is_file()]
    assert len(written) > 20 and any(p.suffix == ".pkl" for p in written)
    for path in written:
        data = path.read_bytes()
        for value in SENTINELS.values():
            assert value.encode() not in data, f"{value} written to {path}"


# ---------------------------------------------------------------------------------------------------------------------
# The reported bug: the job's working directory vanished under the driver.
# ---------------------------------------------------------------------------------------------------------------------
CWD_PROBE = [
    sys.executable,
    "-c",
    "import os, time, ray; ray.init(); time.sleep(8); print('CWD', 'OK', os.getcwd())",
]


def fresh_working_dir(cluster, name):
    """A working dir no node has seen yet (its package hash is new: every node's agent must extract it)."""
    path = cluster.storage / f"wd_{name}"
    path.mkdir()
    (path / "nonce.txt").write_text(f"{name} {time.time_ns()}")
    return path


def test_working_dir_survives_with_a_temp_dir_per_node(cluster):
    proc = submit(cluster, "cwd_own", CWD_PROBE, timeout=120, working_dir=fresh_working_dir(cluster, "own"))
    assert proc.returncode == 0 and "CWD OK" in proc.stdout, proc.stdout[-3000:]


def test_nodes_sharing_a_temp_dir_delete_the_jobs_working_dir(cluster):
    """Root cause of the reported FileNotFoundError: a node sharing the head's --temp-dir (the default /tmp/ray of two
    `ray start` on one machine) installs the job's runtime env at ``ray.init()`` (``eager_install``), finds the
    working_dir URI missing from *its own* cache and re-extracts it with ``overwrite=True``: ``shutil.rmtree`` of
    the directory that is the driver's cwd on the head."""
    node = cluster.add_worker(num_cpus=1, temp_dir=cluster.temp_root / "head")
    try:
        proc = submit(cluster, "cwd_shared", CWD_PROBE, timeout=120, working_dir=fresh_working_dir(cluster, "shared"))
    finally:
        cluster.stop_node(node)
    assert proc.returncode != 0 and "CWD OK" not in proc.stdout
    assert "FileNotFoundError" in proc.stdout, proc.stdout[-3000:]


# ---------------------------------------------------------------------------------------------------------------------
# The worker node dies mid-run (last: the cluster keeps only its head afterwards).
# ---------------------------------------------------------------------------------------------------------------------
def test_worker_node_killed_mid_run_the_run_finishes_on_the_head(cluster):
    out = cluster.storage / "node_kill_out"
    ledger = out / "ledger"
    ledger.mkdir(parents=True)
    entrypoint = [sys.executable, "-m", "tests.cluster.job_train", "--mode", "node_kill"]
    entrypoint += ["--storage-path", str(cluster.storage), "--out", str(out), "--iters", "4", "--kill-after", "2"]
    proc = submit(cluster, "node_kill", entrypoint, env_vars={"RLLIB_SAFE_LEDGER_DIR": str(ledger)}, wait=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    submission_id = next(w for w in shlex.split(proc.stdout.replace("'", " ")) if w.startswith("node_kill_"))
    deadline = time.monotonic() + 240
    while not (out / "ready_for_kill").exists():
        assert time.monotonic() < deadline and job_status(cluster, submission_id) in ("RUNNING", "PENDING")
        time.sleep(1)
    worker = cluster.nodes[1]
    cluster.kill_node(worker)
    (out / "node_killed").touch()
    while job_status(cluster, submission_id) in ("RUNNING", "PENDING"):
        assert time.monotonic() < deadline + 120
        time.sleep(2)
    logs = cluster.run([RAY, "job", "logs", submission_id], timeout=60).stdout
    assert job_status(cluster, submission_id) == "SUCCEEDED", logs[logs.find("Traceback") :][:6000]
    summary = json.loads((out / "summary.json").read_text())
    assert [it["iteration"] for it in summary["iterations"]] == [1, 2, 3, 4]
    assert summary["healthy_env_runners"][:2] == [2, 2] and summary["healthy_env_runners"][2:] == [1, 1]
    records = read_ledger(ledger)
    assert {r["node"] for r in records} == {cluster.nodes[0].ip, worker.ip}
    check_cost_sums(records, summary["iterations"])  # nothing was in flight when the node died: nothing lost
    assert Path(summary["checkpoint"]).is_relative_to(cluster.storage)
    assert os.path.exists(Path(summary["checkpoint"]) / "class_and_ctor_args.pkl")
