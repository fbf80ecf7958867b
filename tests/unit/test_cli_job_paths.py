"""Where ``rllib-safe train``/``sweep`` put results: relative to the current directory, or, inside a Ray job (whose
working directory Ray deletes when the job ends), under ``~/ray_results/rllib_safe``. End to end in a real job:
tests/cluster/test_cluster.py."""

import argparse
from pathlib import Path

import pytest

from rllib_safe.cli import JOB_RESULTS_ROOT, _results_dir, main

JOB_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def args(**kw):
    return argparse.Namespace(**{"output": None, "storage_path": None, **kw})


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(JOB_VAR, raising=False)
    return tmp_path / "home"


def test_outside_a_job_relative_paths_are_taken_from_the_current_directory(home):
    storage, name = _results_dir(args(), "MAPPO", "SafeMAToy-v0")
    assert Path(storage) == Path.cwd() / "results" and name.startswith("MAPPO_SafeMAToy-v0_")
    assert _results_dir(args(output="runs/a"), "MAPPO", "T") == (str(Path.cwd() / "runs"), "a")


def test_inside_a_job_relative_paths_go_under_the_job_results_root(home, monkeypatch):
    monkeypatch.setenv(JOB_VAR, "{}")
    root = home / "ray_results" / "rllib_safe"
    assert Path(JOB_RESULTS_ROOT).expanduser() == root
    storage, name = _results_dir(args(), "MAPPO", "SafeMAToy-v0")
    assert Path(storage) == root and name.startswith("MAPPO_SafeMAToy-v0_")
    assert _results_dir(args(output="runs/a"), "MAPPO", "T") == (str(root / "runs"), "a")
    assert _results_dir(args(output="/abs/a"), "MAPPO", "T") == ("/abs", "a")
    assert _results_dir(args(storage_path="shared"), "MAPPO", "T")[0] == str(root / "shared")
    assert _results_dir(args(storage_path="s3://b/p", output="x"), "MAPPO", "T") == ("s3://b/p", "x")


def test_verbose_adds_the_traceback_to_the_one_line_error(capsys):
    assert main(["train", "--env", "NoSuchTask-v0"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["train", "--env", "NoSuchTask-v0", "--verbose"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.strip().splitlines()[-1].startswith("rllib-safe: error: Unknown task")


def test_sweep_only_names_an_experiment_of_the_file(capsys):
    smoke = str(Path(__file__).resolve().parents[2] / "tune_configs" / "smoke.yaml")
    assert main(["sweep", smoke, "--only", "MAPPO"]) == 2
    assert f"--only: no experiment 'MAPPO' in {smoke}; it has MAFOCOPS, HAPPO." in capsys.readouterr().err
