"""EnvRunner-side bookkeeping of the cluster tests: a ledger of every finished episode, and a self-kill fault.

:class:`LedgerCallback` is the package's :class:`~rllib_safe.callbacks.SafeCostCallback` (the metrics the dual
variables are driven by) plus, per finished episode, one JSON line appended and fsync'ed to
``$RLLIB_SAFE_LEDGER_DIR/ledger_<pid>.jsonl`` before anything else can happen: the process, the node, the EnvRunner
index, the sample call it finished in, the episode id and its cost per agent. With
``RLLIB_SAFE_KILL_ENV_RUNNER="<worker index>:<sample call>"`` that EnvRunner SIGKILLs its own process in the middle
of that ``sample()`` call, right after an episode of the call has finished (and was written to the ledger), once.

:func:`check_cost_sums` compares the ledger with the cost sums the Algorithm reported.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections import defaultdict
from pathlib import Path

from rllib_safe.callbacks import SafeCostCallback, episode_costs


def sha256(value: str | None) -> str | None:
    """Fingerprint of a secret (the ledger proves a key reached a worker without writing the key)."""
    return None if value is None else hashlib.sha256(value.encode()).hexdigest()


class LedgerCallback(SafeCostCallback):
    """SafeCostCallback plus the ledger and the optional self-kill (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._calls = 0

    def on_sample_end(self, *, env_runner=None, samples=None, **kwargs) -> None:
        """Counts this EnvRunner's completed ``sample()`` calls."""
        self._calls += 1

    def on_episode_end(self, *, episode, prev_episode_chunks=None, env_runner=None, **kwargs) -> None:
        """Logs the exact cost metrics (the package's rule), then appends the episode to the ledger."""
        super().on_episode_end(episode=episode, prev_episode_chunks=prev_episode_chunks, **kwargs)
        import ray

        record = {
            "pid": os.getpid(),
            "node": ray.util.get_node_ip_address(),
            "worker_index": env_runner.worker_index,
            "call": self._calls,
            "id": episode.id_,
            "cost": {aid: c.tolist() for aid, c in episode_costs(episode, prev_episode_chunks).items()},
            "wandb_key_sha256": sha256(os.environ.get("WANDB_API_KEY")),
        }
        path = Path(os.environ["RLLIB_SAFE_LEDGER_DIR"]) / f"ledger_{os.getpid()}.jsonl"
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._kill_if_chosen(env_runner)

    def _kill_if_chosen(self, env_runner) -> None:
        """The fault: the chosen EnvRunner SIGKILLs its own process once, inside ``sample()`` (the episode just
        finished and written to the ledger never reaches the Algorithm)."""
        target = os.environ.get("RLLIB_SAFE_KILL_ENV_RUNNER")
        if not target:
            return
        worker_index, call = (int(x) for x in target.split(":"))
        marker = Path(os.environ["RLLIB_SAFE_LEDGER_DIR"]) / "killed"
        if env_runner.worker_index == worker_index and self._calls == call and not marker.exists():
            marker.write_text(json.dumps({"pid": os.getpid(), "call": call}))
            os.kill(os.getpid(), signal.SIGKILL)


def read_ledger(ledger_dir: Path) -> list[dict]:
    """Every finished episode any EnvRunner process wrote."""
    return [json.loads(line) for p in sorted(ledger_dir.glob("ledger_*.jsonl")) for line in p.read_text().splitlines()]


def check_cost_sums(ledger: list[dict], iterations: list[dict], lost_call: tuple[int, int] | None = None) -> dict:
    """Asserts that the episode-cost sums the Algorithm used lose no delivered episode and count none twice.

    Args:
        ledger: :func:`read_ledger`'s records.
        iterations: Per training iteration, the ``env_runners`` results (``episode_cost_sum``/``episode_cost_count``
            per agent) and the ``learners`` results (``episode_cost`` per agent, the J_c the duals were updated with).
        lost_call: ``(pid, sample call)`` of the call interrupted by the kill: its finished episodes never reached the
            Algorithm (they died with the process) and must be in no sum.

    Returns:
        Counts: ``ledger`` (episodes finished), ``lost`` (finished in the interrupted call), ``counted``.
    """
    ids = [r["id"] for r in ledger]
    assert len(ids) == len(set(ids)), "an episode id was finished twice"
    lost = [r for r in ledger if lost_call and (r["pid"], r["call"]) == tuple(lost_call)]
    delivered = [r for r in ledger if r not in lost]
    agents = sorted(delivered[0]["cost"])
    total_sum, total_count = defaultdict(float), defaultdict(int)
    for it in iterations:
        env, learners = it["env_runners"], it["learners"]
        for aid in agents:
            count = env["episode_cost_count"][aid]
            total_count[aid] += count
            total_sum[aid] += env["episode_cost_sum"][aid]
            # The J_c of this iteration's dual update is exactly this iteration's sum / count.
            assert abs(learners[aid]["episode_cost"] - env["episode_cost_sum"][aid] / count) < 1e-9
    for aid in agents:
        assert total_count[aid] == len(delivered), (aid, total_count[aid], len(delivered), len(lost))
        expected = sum(sum(r["cost"][aid]) for r in delivered)
        assert abs(total_sum[aid] - expected) <= 1e-6 * max(1.0, abs(expected)), (aid, total_sum[aid], expected)
    return {"ledger": len(ledger), "lost": len(lost), "counted": total_count[agents[0]]}
