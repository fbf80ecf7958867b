"""A real multi-node Ray cluster on this machine: ``ray start --head`` plus worker nodes (``ray start --address``).

Every node is a ``ray start --block`` process started in its own session (``setsid``); all of the node's processes
(GCS, raylet, dashboard, agents, workers) inherit that session, so :meth:`LocalRayCluster.stop` and
:meth:`LocalRayCluster.kill_node` end exactly the processes of this cluster (SIGTERM to the ``ray start`` process,
then SIGKILL to whatever is left in its session) and never touch another Ray instance on the machine (no
``ray stop``).

Addresses: Ray rewrites ``127.0.0.1``/``localhost`` to the machine's routable IP (``resolve_ip_for_localhost`` in
``ray/_private/services.py``), so every node gets its own loopback address instead: the head ``127.0.0.2``, worker
node k ``127.0.0.{k+3}``. All traffic stays on the loopback interface, and the node IP tells on which node an actor
ran. The dashboard / job server listens on ``127.0.0.1`` only.

Authentication: the cluster runs with Ray 2.60's token authentication (``RAY_AUTH_MODE=token``) and a fresh random
token passed as ``RAY_AUTH_TOKEN`` to every node and client (:attr:`LocalRayCluster.client_env`); nothing is written
to ``~/.ray/auth_token``. A node or client without both variables is refused.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """The processes of session ``sid`` (Linux ``/proc``; field 6 of ``/proc/<pid>/stat`` is the session id)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


@dataclass
class Node:
    """One ``ray start --block`` process and what it was started with."""

    name: str
    ip: str
    process: subprocess.Popen
    log: Path
    resources: dict = field(default_factory=dict)
    stopped: bool = False  # stopped or killed on purpose (not a failure of the cluster)

    @property
    def pids(self) -> list[int]:
        """Every live process of this node (its session)."""
        return session_pids(self.process.pid)


class LocalRayCluster:
    """A head node and worker nodes on loopback addresses, with token authentication (see the module docstring).

    Args:
        root: A fresh directory for temp dirs and logs (one per node).
        head_cpus: ``--num-cpus`` of the head.
        object_store_mb: ``--object-store-memory`` of every node, in MiB.
    """

    def __init__(self, root: Path, head_cpus: int = 1, object_store_mb: int = 200) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # Ray's socket paths live under the temp dir and must stay under 107 bytes (AF_UNIX): a short root.
        self.temp_root = Path(tempfile.mkdtemp(prefix="rsc_", dir="/tmp"))
        self.head_cpus = head_cpus
        self.object_store_bytes = object_store_mb * 1024 * 1024
        self.token = secrets.token_hex(32)
        self.head_ip = "127.0.0.2"
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.nodes: list[Node] = []

    # ------------------------------------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """The GCS address (``ray.init(address=...)``, ``ray start --address``)."""
        return f"{self.head_ip}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """The job server / dashboard (``ray job submit --address ...``)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def client_env(self) -> dict[str, str]:
        """The environment a node, driver or ``ray job`` client of this cluster needs (token auth included)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        # This environment's console scripts (`rllib-safe`, `ray`) on PATH, as on a cluster node where the package is
        # installed: a job's entrypoint `rllib-safe train ...` runs with the node's PATH.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=self.token,
            RAY_ADDRESS=self.address,
            RAY_API_SERVER_ADDRESS=self.dashboard_url,
            RAY_USAGE_STATS_ENABLED="0",
        )
        return env

    def _start(self, name: str, ip: str, args: list[str], resources: dict, temp_dir: Path | None = None) -> Node:
        temp_dir = temp_dir or self.temp_root / name
        temp_dir.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        cmd = [
            RAY,
            "start",
            "--block",
            "--disable-usage-stats",
            f"--node-ip-address={ip}",
            f"--temp-dir={temp_dir}",
            f"--object-store-memory={self.object_store_bytes}",
            f"--dashboard-agent-listen-port={free_port()}",
            "--min-worker-port=0",
            "--max-worker-port=0",
            f"--resources={json.dumps(resources)}",
            *args,
        ]
        with open(log, "w") as out:
            process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.client_env,
                start_new_session=True,
            )  # fmt: skip
        node = Node(name=name, ip=ip, process=process, log=log, resources=resources)
        self.nodes.append(node)
        return node

    def start_head(self, resources: dict | None = None) -> Node:
        """``ray start --head`` with the job server (dashboard) on 127.0.0.1; waits until it accepts jobs."""
        node = self._start(
            "head",
            self.head_ip,
            [
                "--head",
                f"--port={self.gcs_port}",
                f"--num-cpus={self.head_cpus}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
            ],
            resources or {},
        )
        self.wait_for_started(node)
        self._wait_for_job_server()
        return node

    def add_worker(
        self, num_cpus: int, resources: dict | None = None, wait: bool = True, temp_dir: Path | None = None
    ) -> Node:
        """``ray start --address <head>`` with its own ``--num-cpus``, ``--resources`` and temp dir (a fresh one
        unless ``temp_dir`` is given: sharing another node's is what breaks jobs, see tests/cluster/test_cluster.py)."""
        k = sum(1 for n in self.nodes if n.name.startswith("worker"))
        args = [f"--address={self.address}", f"--num-cpus={num_cpus}"]
        node = self._start(f"worker{k}", f"127.0.0.{k + 3}", args, resources or {}, temp_dir=temp_dir)
        if wait:
            self.wait_for_started(node)
            self.wait_for_nodes(len([n for n in self.nodes if not n.stopped]))
        return node

    # ------------------------------------------------------------------------------------------------------------
    def run(self, args: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        """Runs a client command (``ray job ...``, a Python driver) against this cluster."""
        return subprocess.run(
            args, env={**self.client_env, **kwargs.pop("env", {})}, capture_output=True, text=True, timeout=timeout,
            **kwargs,
        )  # fmt: skip

    def alive_node_ips(self) -> list[str]:
        """The IPs of the nodes the GCS reports alive."""
        script = (
            "import ray, json; ray.init(logging_level='ERROR');"
            "print(json.dumps(sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive'])))"
        )
        try:
            out = self.run([sys.executable, "-c", script], timeout=60)
        except subprocess.TimeoutExpired:
            return []
        if out.returncode != 0:
            return []
        return json.loads(out.stdout.strip().splitlines()[-1])

    def wait_for_started(self, node: Node, timeout: float = 90) -> None:
        """Waits until ``ray start`` of ``node`` says the runtime started (raises with its log if it exits)."""
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in node.log.read_text(errors="replace"):
            if node.process.poll() is not None:
                raise RuntimeError(f"ray start of {node.name} exited:\n{node.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{node.name} did not start in {timeout} s:\n" + self.logs())
            time.sleep(0.5)

    def wait_for_nodes(self, n: int, timeout: float = 90) -> None:
        """Waits until ``n`` nodes are alive (raises with the node logs otherwise)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process.poll() is not None and not node.stopped:
                    raise RuntimeError(f"ray start of {node.name} exited:\n{node.log.read_text()[-3000:]}")
            if len(self.alive_node_ips()) >= n:
                return
            time.sleep(1)
        raise TimeoutError(f"{n} nodes not alive after {timeout} s:\n" + self.logs())

    def _wait_for_job_server(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run([RAY, "job", "list"], timeout=30).returncode == 0:
                return
            time.sleep(1)
        raise TimeoutError(f"the job server at {self.dashboard_url} did not answer:\n" + self.logs())

    def logs(self) -> str:
        """The tail of every node's ``ray start`` log."""
        return "\n".join(f"--- {n.name}\n{n.log.read_text()[-2000:]}" for n in self.nodes if n.log.exists())

    # ------------------------------------------------------------------------------------------------------------
    def kill_node(self, node: Node) -> None:
        """Kills every process of ``node`` at once (SIGKILL): the node dies as if its machine went down."""
        node.stopped = True
        for pid in node.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.process.wait(timeout=30)

    def stop_node(self, node: Node, grace: float = 20) -> None:
        """SIGTERM to the node's ``ray start --block`` (it stops its processes), then SIGKILL to any left."""
        node.stopped = True
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
            try:
                node.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + grace
        while node.pids and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in node.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if node.process.poll() is None:
            node.process.wait(timeout=30)

    def stop(self) -> None:
        """Stops the workers, then the head; leaves no process of this cluster behind."""
        for node in reversed(self.nodes):
            self.stop_node(node)
        leftovers = [pid for node in self.nodes for pid in node.pids]
        if leftovers:
            raise RuntimeError(f"processes of the local cluster survived stop(): {leftovers}")

    def cleanup(self) -> None:
        """Removes the temp dirs (session files, spilled objects); keeps the logs."""
        shutil.rmtree(self.temp_root, ignore_errors=True)


def main() -> None:
    """``python -m tests.cluster.local_cluster DIR``: starts a head and one worker node, prints the client environment,
    and stops both on Ctrl-C / SIGTERM (for trying the cluster path by hand)."""
    import shlex

    cluster = LocalRayCluster(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/rllib_safe_cluster"))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        cluster.start_head()
        cluster.add_worker(num_cpus=1, resources={"worker_node": 1})
        for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
            print(f"export {key}={shlex.quote(cluster.client_env[key])}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
        cluster.cleanup()


if __name__ == "__main__":
    main()
