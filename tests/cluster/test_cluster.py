"""A real two-node Ray cluster on this machine (``ray start --head`` + ``ray start --address``, token authentication,
see :mod:`tests.cluster.local_cluster`), and Ray jobs submitted to it with ``ray job submit --working-dir .``:

* a one-trial Tune run with one EnvRunner on each node, storage on a shared path, W&B offline: SUCCEEDED, checkpoint
  in the storage path, no secret of the driver's environment in anything written;
* an EnvRunner process killed mid-sample: training goes on (RLlib restarts it), and the episode-cost sums that drive
  the dual variables lose no delivered episode and count none twice (checked against a ledger of every episode the
  EnvRunners finished);
* the job's working directory is not deleted under the driver (the reported ``FileNotFoundError`` from
  ``os.getcwd()``: two nodes on one machine sharing one ``--temp-dir``), reproduced and shown gone with own temp dirs;
* the worker node killed mid-run: the run finishes on the head (documented decision, cluster/README.md);
* the real CLI as the entrypoint (``-- rllib-safe train|sweep ...``): the driver joins this cluster (the CLI prints
  its GCS address; the job's EnvRunner actors are in this cluster's state API, one on each node), results and the
  final checkpoint in the storage path; ``sweep tune_configs/smoke.yaml --only HAPPO``; an unknown task ends FAILED
  with our one error line and no traceback in ``ray job logs``;
* every EnvRunner lost through the CLI (the node that alone offers their resource dies): one ``EnvRunnersLostError``
  line naming a checkpoint, and ``rllib-safe train --restore`` of it goes on from its iteration, with its results
  (no ``--output``/``--storage-path`` in a job) at an absolute path under ``~/ray_results/rllib_safe``.
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
    """``ray job submit --working-dir <repo> [--runtime-env-json {env_vars}] -- <entrypoint>``; the returned process
    carries the job's ``submission_id``."""
    submission_id = f"{name}_{time.time_ns()}"
    args = [RAY, "job", "submit", "--submission-id", submission_id, "--working-dir", str(working_dir)]
    if env_vars:
        args += ["--runtime-env-json", json.dumps({"env_vars": env_vars})]
    if not wait:
        args.append("--no-wait")
    proc = cluster.run([*args, "--", *entrypoint], timeout=timeout, cwd=ROOT)
    proc.submission_id = submission_id
    return proc


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
# The real CLI as the job's entrypoint: `ray job submit --working-dir . -- rllib-safe train|sweep ...`.
# ---------------------------------------------------------------------------------------------------------------------
RLLIB_SAFE = "rllib-safe"  # the console script, found on the nodes' PATH as on a cluster with the package installed
TOY = ["--env", "SafeMAToy-v0", "--algo", "MAPPOLagrangian", "--batch-size", "200", "--num-envs-per-env-runner", "1"]
TOY_CONFIG = ["minibatch_size=100", "num_epochs=1", "actor_hiddens=[16]", "critic_hiddens=[16]"]


def job_logs(cluster, submission_id):
    return cluster.run([RAY, "job", "logs", submission_id], timeout=60).stdout


def state(cluster, *args):
    """``ray list ... --format json`` of this cluster (Ray's state API, served by the head's dashboard)."""
    proc = cluster.run([RAY, "list", *args, "--format", "json", "--limit", "10000"], timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def env_runner_nodes(cluster, submission_id):
    """The node IPs of the EnvRunner actors the job created (dead ones included), from the cluster's state API."""
    job_id = next(j["job_id"] for j in state(cluster, "jobs") if j.get("submission_id") == submission_id)
    ips = {n["node_id"]: n["node_ip"] for n in state(cluster, "nodes")}
    actors = state(cluster, "actors", "--detail", "--filter", f"job_id={job_id}")
    return [ips[a["node_id"]] for a in actors if "EnvRunner" in a["class_name"] and a.get("node_id")]


def printed(pattern, text):
    """The first group of the line of ``text`` that matches ``pattern`` (fails the test when none does)."""
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"no line matching {pattern!r} in:\n{text[-5000:]}"
    return match.group(1)


@pytest.fixture(scope="module")
def cli_train(cluster):
    storage = cluster.storage / "cli"
    config = [*TOY_CONFIG, "custom_resources_per_env_runner={env_runner_slot: 1}"]  # one EnvRunner per node
    entrypoint = [RLLIB_SAFE, "train", *TOY, "--stop-iters", "2", "--num-env-runners", "2", "--output", "toy"]
    entrypoint += ["--storage-path", str(storage), "--config", *config]
    return submit(cluster, "cli_train", entrypoint), storage / "toy" / "run"


def test_cli_train_job_joins_the_cluster_and_samples_on_both_nodes(cluster, cli_train):
    proc, _ = cli_train
    out = proc.stdout
    assert proc.returncode == 0 and "succeeded" in out, out[-5000:] + proc.stderr[-3000:]
    # The job's driver joined this cluster (no private Ray): the CLI names its GCS address and both nodes...
    assert printed(r"^rllib-safe: Ray cluster (\S+): 2 node\(s\)", out) == cluster.address
    # ...and the job's EnvRunner actors are in this cluster's state, one on each node.
    assert sorted(env_runner_nodes(cluster, proc.submission_id)) == sorted(n.ip for n in cluster.nodes[:2])
    assert re.search(r"^iter +1 \| ", out, re.MULTILINE) and re.search(r"^iter +2 \| ", out, re.MULTILINE)


def test_cli_train_job_results_and_final_checkpoint_in_the_storage_path(cluster, cli_train):
    proc, trial = cli_train
    rows = [json.loads(line) for line in (trial / "progress.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    results = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
    assert {r["node_ip"] for r in results} <= {n.ip for n in cluster.nodes[:2]}  # the trial ran in this cluster
    checkpoint = Path(printed(r"^checkpoint: (\S+)", proc.stdout))
    assert checkpoint.parent == trial and (checkpoint / "class_and_ctor_args.pkl").exists()
    assert (checkpoint / "learner_group").is_dir()


def test_cli_sweep_job_succeeds_with_results_in_the_storage_path(cluster):
    storage = cluster.storage / "sweep"
    entrypoint = [RLLIB_SAFE, "sweep", "tune_configs/smoke.yaml", "--only", "HAPPO", "--storage-path", str(storage)]
    proc = submit(cluster, "cli_sweep", entrypoint)
    assert proc.returncode == 0 and "succeeded" in proc.stdout, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert printed(r"^rllib-safe: Ray cluster (\S+): 2 node\(s\)", proc.stdout) == cluster.address
    trials = sorted(p.parent for p in (storage / "smoke" / "HAPPO").glob("*/progress.jsonl"))
    assert len(trials) == 2  # smoke.yaml's HAPPO experiment: seeds 0 and 1
    for trial in trials:
        rows = [json.loads(line) for line in (trial / "progress.jsonl").read_text().splitlines()]
        assert [r["iteration"] for r in rows] == [1, 2, 3]
        assert any((c / "class_and_ctor_args.pkl").exists() for c in trial.glob("checkpoint_*"))
    assert not (storage / "smoke" / "MAFOCOPS").exists()


def test_bad_entrypoint_fails_with_our_one_line_error(cluster):
    proc = submit(cluster, "cli_bad", [RLLIB_SAFE, "train", "--env", "NoSuchTask-v0"], timeout=200)
    assert proc.returncode != 0
    assert job_status(cluster, proc.submission_id) == "FAILED"
    logs = job_logs(cluster, proc.submission_id)
    errors = [line for line in logs.splitlines() if "error" in line.lower()]
    assert errors == [line for line in errors if line.startswith("rllib-safe: error: Unknown task 'NoSuchTask-v0'.")]
    assert len(errors) == 1 and "Known tasks: " in errors[0] and "SafeMAToy-v0" in errors[0]
    assert "Traceback" not in logs


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


# ---------------------------------------------------------------------------------------------------------------------
# Every EnvRunner lost (their node died, none can be restarted): one error line naming a checkpoint; --restore resumes.
# ---------------------------------------------------------------------------------------------------------------------
def test_all_env_runners_lost_the_cli_names_a_checkpoint_that_restore_resumes(cluster):
    """A node whose resource only the EnvRunners ask for dies: the run stops after ``lost_env_runners_timeout_s`` with
    one ``EnvRunnersLostError`` line naming its checkpoint; ``rllib-safe train --restore`` (with the EnvRunners placed
    where there is room now) continues from it. The resumed job has neither --output nor --storage-path: its results go
    to an absolute path under ``~/ray_results/rllib_safe`` that outlives the job (HOME: a test directory)."""
    doomed = cluster.add_worker(num_cpus=2, resources={"doomed_slot": 2})
    storage = cluster.storage / "cli"
    config = [*TOY_CONFIG, "custom_resources_per_env_runner={doomed_slot: 1}"]
    config += ["lost_env_runners_timeout_s=5", "env_runner_health_probe_timeout_s=2"]
    entrypoint = [RLLIB_SAFE, "train", *TOY, "--stop-iters", "100", "--num-env-runners", "2", "--output", "lost"]
    entrypoint += ["--storage-path", str(storage), "--config", *config]
    proc = submit(cluster, "cli_lost", entrypoint, wait=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    progress = storage / "lost" / "run" / "progress.jsonl"
    deadline = time.monotonic() + 240
    while not (progress.exists() and progress.read_text().strip()):
        assert time.monotonic() < deadline and job_status(cluster, proc.submission_id) in ("RUNNING", "PENDING")
        time.sleep(1)
    assert sorted(env_runner_nodes(cluster, proc.submission_id)) == [doomed.ip, doomed.ip]
    cluster.kill_node(doomed)
    while job_status(cluster, proc.submission_id) in ("RUNNING", "PENDING"):
        assert time.monotonic() < deadline + 120
        time.sleep(2)
    logs = job_logs(cluster, proc.submission_id)
    assert job_status(cluster, proc.submission_id) == "FAILED", logs[-5000:]
    errors = [line for line in logs.splitlines() if line.startswith("rllib-safe: error:")]
    assert len(errors) == 1 and "EnvRunnersLostError: No EnvRunner returned samples" in errors[0], logs[-5000:]
    assert "Traceback" not in logs  # Tune's copy of it is in the trial's error.txt, which the line names
    checkpoint = printed(r"`rllib-safe train --restore (\S+)`", errors[0])
    assert Path(checkpoint) == storage / "lost" / "run" / "checkpoint_env_runners_lost"
    done = len(progress.read_text().splitlines())  # iterations completed before the node died

    home = cluster.storage / "home"
    entrypoint = [RLLIB_SAFE, "train", "--restore", checkpoint, "--stop-iters", "1"]
    entrypoint += ["--config", "num_env_runners=1", "custom_resources_per_env_runner={}"]  # the head has room for one
    proc = submit(cluster, "cli_restore", entrypoint, env_vars={"HOME": str(home)})
    assert proc.returncode == 0 and "succeeded" in proc.stdout, proc.stdout[-5000:] + proc.stderr[-3000:]
    results = Path(printed(r"\| results -> (\S+)$", proc.stdout))
    assert results.is_absolute() and results.parent == home / "ray_results" / "rllib_safe"
    rows = [json.loads(line) for line in (results / "run" / "progress.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [done + 1]  # went on from the checkpoint's iteration
    assert any((c / "class_and_ctor_args.pkl").exists() for c in (results / "run").glob("checkpoint_*"))
