"""`tune_configs/smoke.yaml` end to end: a sweep killed with SIGKILL half way and resumed, then its table and plot.

One sweep serves every test here (the expensive part): it runs until Tune's experiment state records finished trials,
the driver is killed with SIGKILL (its Ray with it; every process of its session is reaped), and ``--resume`` runs the
rest. The tests then check that finished trials were not run again, and recompute the table's and the plot's numbers
from the trials' progress files by hand.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rllib_safe.cli import main

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "rllib_safe.cli"]
LAST_K = 2


def _statuses(experiment_dir: Path) -> dict[str, str]:
    """Trial directory name -> status, as Tune's last saved experiment state has them."""
    states = sorted(glob.glob(str(experiment_dir / "experiment_state-*.json")))
    if not states:
        return {}
    try:
        data = json.loads(Path(states[-1]).read_text())
    except (json.JSONDecodeError, OSError):  # being written
        return {}
    trials = [json.loads(t[0]) for t in data.get("trial_data", [])]
    return {t["relative_logdir"]: t["status"] for t in trials if t.get("relative_logdir")}


def _kill_session(sid: int) -> None:
    """SIGKILLs every process of the session we started (the driver, its Ray, its workers), one PID at a time."""
    for _ in range(20):
        pids = subprocess.run(["ps", "-o", "pid=", "-s", str(sid)], capture_output=True, text=True).stdout.split()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


def _rows(trial_dir: Path) -> list[dict]:
    """A trial's progress rows, the last row of each iteration kept (a resumed trial repeats some)."""
    rows = {}
    for line in (trial_dir / "progress.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows[row["iteration"]] = row
    return [rows[i] for i in sorted(rows)]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    storage = tmp_path_factory.mktemp("sweeps")
    sweep = [*CLI, "sweep", "tune_configs/smoke.yaml", "--storage-path", str(storage), "--num-cpus", "2"]
    mafocops = storage / "smoke" / "MAFOCOPS"
    driver = subprocess.Popen(
        sweep, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        deadline = time.time() + 400
        while list(_statuses(mafocops).values()).count("TERMINATED") < 2 and time.time() < deadline:
            assert driver.poll() is None, "the sweep ended before it was killed:\n" + driver.stdout.read()[-3000:]
            time.sleep(0.5)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        _kill_session(driver.pid)
    finished = {  # what Tune's saved state calls finished, and the progress those trials had then
        name: (mafocops / name / "progress.jsonl").read_text()
        for name, status in _statuses(mafocops).items()
        if status == "TERMINATED"
    }
    first = driver.stdout.read()
    resumed = subprocess.run([*sweep, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return storage / "smoke", finished, first, resumed.stdout


def test_resume_after_sigkill_runs_only_the_remaining_trials(smoke):
    root, finished, first, resumed = smoke
    assert len(finished) >= 2
    for name, text in finished.items():  # the finished trials were not run again
        assert (root / "MAFOCOPS" / name / "progress.jsonl").read_text() == text, name
    assert "rllib-safe: resuming" in resumed
    finished_labels = {
        line.split("]")[0] + "]" for line in first.splitlines() if line.startswith("[") and "] done ->" in line
    }
    assert finished_labels and not any(line.startswith(tuple(finished_labels)) for line in resumed.splitlines())
    trials = sorted(p.parent for p in root.glob("*/*/progress.jsonl"))
    assert len(trials) == 6  # MAFOCOPS λ ∈ {1, 2.2} × 2 seeds, HAPPO × 2 seeds
    assert all([r["iteration"] for r in _rows(t)] == [1, 2, 3] for t in trials)


def test_progress_rows_carry_the_tail_metrics_and_the_score(smoke):
    root = smoke[0]
    for trial in root.glob("*/*/progress.jsonl"):
        info = json.loads((trial.parent / "run.json").read_text())
        assert info["env"] == "SafeMAToy-v0" and info["cost_limit"] == 5.0
        for row in _rows(trial.parent):
            assert row["num_episodes"] == 10  # 250 steps of whole 25-step episodes
            assert row["episode_cost_p90"] <= row["episode_cost_cvar10"] + 1e-12
            # The team return: the team reward once, half RLlib's sum over the 2 agents (same episodes, one runner).
            assert row["team_return_mean"] == pytest.approx(row["episode_return_mean"] / 2, rel=1e-9)
            assert row["safe_score"] == pytest.approx(
                row["team_return_mean"] - 10.0 * max(0.0, row["episode_cost_mean"] - 5.0)
            )
            assert row["cost_rate"] == pytest.approx(row["cumulative_cost"] / row["env_steps"])


def _final(trial: Path, key: str) -> float:
    return float(np.mean([r[key] for r in _rows(trial)][-LAST_K:]))


def test_table_numbers_equal_those_recomputed_from_the_progress_files(smoke, tmp_path, capsys):
    root = smoke[0]
    csv_path = tmp_path / "table.csv"
    assert main(["table", str(root), "--last", str(LAST_K), "--csv", str(csv_path)]) == 0
    markdown = capsys.readouterr().out
    import csv

    table = {(r["algorithm"], r["setting"], r["task"]): r for r in csv.DictReader(csv_path.open())}
    by_group: dict = {}
    for progress in root.glob("*/*/progress.jsonl"):
        info = json.loads((progress.parent / "run.json").read_text())
        setting = " ".join(f"{k}={v:g}" for k, v in sorted(info["swept"].items())) or "default"
        by_group.setdefault((info["algorithm"], setting, info["env"]), []).append(progress.parent)
    assert set(by_group) == {
        ("MAFOCOPS", "focops_lambda=1", "SafeMAToy-v0"),
        ("MAFOCOPS", "focops_lambda=2.2", "SafeMAToy-v0"),
        ("HAPPO", "default", "SafeMAToy-v0"),
    }
    medians = {}
    for group, trials in by_group.items():
        row = table[group]
        assert int(row["seeds"]) == len(trials) == 2
        metrics = [("return", "team_return_mean"), ("cost", "episode_cost_mean"), ("cost_p90", "episode_cost_p90")]
        for name, key in metrics:
            values = [_final(t, key) for t in trials]
            assert float(row[f"{name}_median"]) == pytest.approx(np.median(values), rel=1e-12)
            assert float(row[f"{name}_q25"]) == pytest.approx(np.percentile(values, 25), rel=1e-12)
            assert float(row[f"{name}_q75"]) == pytest.approx(np.percentile(values, 75), rel=1e-12)
            medians[group, name] = np.median(values)
    happo = ("HAPPO", "default", "SafeMAToy-v0")
    for lam in ("1", "2.2"):
        group = ("MAFOCOPS", f"focops_lambda={lam}", "SafeMAToy-v0")
        expected = medians[group, "return"] / medians[happo, "return"]
        assert float(table[group]["return_normalized"]) == pytest.approx(expected, rel=1e-12)
        assert float(table[("MAFOCOPS", f"focops_lambda={lam}", "all envs")]["return_normalized"]) == pytest.approx(
            expected, rel=1e-12
        )  # one task: the "all envs" mean is that task's ratio
        assert f"| MAFOCOPS | focops_lambda={lam} | {expected:.3f} |" in markdown


def test_plot_axes_hold_the_median_curves_and_the_limit(smoke, tmp_path):
    from rllib_safe.studies.plot import make_figure
    from rllib_safe.studies.results import load_trials

    root = smoke[0]
    assert main(["plot", str(root), "--out", str(tmp_path / "smoke.png")]) == 0
    assert (tmp_path / "smoke.png").stat().st_size > 10_000 and (tmp_path / "smoke.svg").stat().st_size > 10_000
    fig = make_figure(load_trials([root]))
    (ret_ax,), (cost_ax,) = fig.axes[0:1], fig.axes[1:2]
    assert ret_ax.get_title() == "SafeMAToy-v0" and cost_ax.get_xlabel() == "env steps"
    happo = sorted(p.parent for p in root.glob("HAPPO/*/progress.jsonl"))
    steps = [r["env_steps"] for r in _rows(happo[0])]
    assert ret_ax.get_ylabel() == "episode return (team)"
    for ax, key in ((ret_ax, "team_return_mean"), (cost_ax, "episode_cost_mean")):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert {"HAPPO", "MAFOCOPS focops_lambda=1", "MAFOCOPS focops_lambda=2.2"} <= set(lines)
        median = np.median([[r[key] for r in _rows(t)] for t in happo], axis=0)
        np.testing.assert_allclose(lines["HAPPO"].get_xdata(), steps)
        np.testing.assert_allclose(lines["HAPPO"].get_ydata(), median)
        assert len(ax.collections) == 3  # one 25-75 % band per curve
    limit = {line.get_label(): line for line in cost_ax.get_lines()}["cost limit"]
    assert limit.get_linestyle() == "--" and list(limit.get_ydata()) == [5.0, 5.0]
