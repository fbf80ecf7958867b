"""The study workflow's pure parts against hand-computed values: tail metrics, the constrained score, progress lines,
sweep files, tables (median, IQR, the ÷ HAPPO layout), plot data, the quiet filter. No Ray."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from rllib_safe.callbacks import tail_metrics, team_cost_limit
from rllib_safe.studies import quiet
from rllib_safe.studies.progress import flatten_result, progress_line
from rllib_safe.studies.results import Trial, load_trials
from rllib_safe.studies.score import safe_score
from rllib_safe.studies.spec import load_sweep, param_space
from rllib_safe.studies.table import final_value, markdown, normalized, summarize, to_csv

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------ tail metrics
def test_tail_metrics_by_hand():
    costs = [3.0, 0.0, 9.0, 1.0, 7.0, 2.0, 5.0, 8.0, 4.0, 6.0]  # 0..9 shuffled
    out = tail_metrics(costs, cost_limit=5.0)
    assert out["episode_cost_p90"] == pytest.approx(8.1)  # 0..9: rank 0.9·9 = 8.1, between 8 and 9
    assert out["episode_cost_cvar10"] == 9.0  # the worst ceil(0.1·10) = 1 episode
    assert out["episode_cost_over_limit_frac"] == 0.4  # 6, 7, 8, 9 > 5 (5 itself is not over)
    out = tail_metrics(list(range(20)) + [100.0], cost_limit=None)
    assert out["episode_cost_cvar10"] == pytest.approx((100 + 19 + 18) / 3)  # ceil(2.1) = 3 worst
    assert "episode_cost_over_limit_frac" not in out
    assert tail_metrics([4.0], 5.0) == {
        "episode_cost_p90": 4.0,
        "episode_cost_cvar10": 4.0,
        "episode_cost_over_limit_frac": 0.0,
    }
    with pytest.raises(ValueError, match="at least one"):
        tail_metrics([], 1.0)


def test_team_cost_limit():
    from rllib_safe.algorithms.registry import get_config

    config = get_config("MAPPOLagrangian").environment("SafeMAToy-v0")
    assert team_cost_limit(config) == 5.0  # the task's default
    assert team_cost_limit(config.training(cost_limit=2.0)) == 2.0
    assert team_cost_limit(config.training(cost_limit={"agent_0": 2.0, "agent_1": 4.0})) == 3.0


def test_safe_score_by_hand():
    assert safe_score(100.0, 20.0, 25.0) == 100.0  # under the limit: the return alone
    assert safe_score(100.0, 27.5, 25.0, penalty=10.0) == 75.0  # 2.5 over: −25
    assert safe_score(-3.0, 26.0, 25.0, penalty=0.5) == -3.5


# ------------------------------------------------------------------------------------------------ progress
RESULT = {
    "training_iteration": 4,
    "time_this_iter_s": 2.0,
    "time_total_s": 8.4,
    "safe_score": 12.5,
    "env_runners": {
        "num_env_steps_sampled_lifetime": 800.0,
        "num_env_steps_sampled": 200,
        "num_episodes": 8,
        "episode_return_mean": 25.0,  # RLlib's: the sum over the 2 agents
        "episode_return_team": 12.5,  # the team reward once
        "agent_episode_returns_mean": {"agent_0": 12.5, "agent_1": 12.5},
        "episode_cost_mean": 3.25,
        "episode_cost_p90": 4.5,
        "episode_cost_cvar10": 6.0,
        "episode_cost_over_limit_frac": 0.125,
        "cumulative_cost": 40.0,
        "cost_rate": 0.05,
    },
    "learners": {
        "agent_0": {"lagrange_multiplier": np.float64(0.25), "episode_cost": 3.25},
        "agent_1": {"lagrange_multiplier": 0.5, "episode_cost": 3.25},
        "__critic__": {"vf_loss": 1.0},
        "__all_modules__": {"num_trainable_parameters": 10},
    },
}


def test_flatten_result_and_progress_line():
    row = flatten_result(RESULT)
    assert row["team_return_mean"] == 12.5 and row["episode_return_mean"] == 25.0  # team once; RLlib's sum kept
    assert row["env_steps"] == 800.0 and row["env_steps_this_iter"] == 200 and row["env_steps_per_s"] == 100.0
    assert row["agent_1/lagrange_multiplier"] == 0.5 and isinstance(row["agent_0/lagrange_multiplier"], float)
    assert row["critic/vf_loss"] == 1.0 and not any(k.startswith("__") for k in row)
    line = progress_line(row, cost_limit=5.0)
    assert line == (
        "iter    4 | steps      800 | return 12.50 | cost 3.25 / limit 5 | p90 4.5 cvar 6 over 12% "
        "| λ 0.250 0.500 | 100 env-steps/s | 8 s"
    )


def test_an_iteration_without_episodes_says_so_in_words():
    result = json.loads(json.dumps(RESULT, default=float))
    env = result["env_runners"]
    for key in ("episode_cost_p90", "episode_cost_cvar10", "episode_cost_over_limit_frac"):
        del env[key]  # absent when no episode ended
    env["num_episodes"] = 0
    line = progress_line(flatten_result(result), 5.0)
    assert "return 12.50 | cost 3.25 / limit 5 | no episode ended this iteration | λ" in line
    env["episode_return_mean"] = env["episode_cost_mean"] = env["episode_return_team"] = float("nan")  # no episode yet
    env["agent_episode_returns_mean"] = {"agent_0": float("nan"), "agent_1": float("nan")}
    line = progress_line(flatten_result(result), 5.0)
    assert "| steps      800 | no episode ended yet | λ 0.250 0.500 |" in line
    assert "nan" not in line and "n/a" not in line


def test_team_return_of_results_without_the_callbacks_key():
    """RLlib's per-agent returns give the team return (older runs, Tune's result.json); with none, the line says so."""
    result = json.loads(json.dumps(RESULT, default=float))
    env = result["env_runners"]
    del env["episode_return_team"]
    env["agent_episode_returns_mean"] = {"agent_0": 12.0, "agent_1": 13.0}
    row = flatten_result(result)
    assert row["team_return_mean"] == 12.5 and row["episode_return_mean"] == 25.0
    del env["agent_episode_returns_mean"]  # an EnvRunner that logs neither
    row = flatten_result(result)
    assert "team_return_mean" not in row
    line = progress_line(row, cost_limit=5.0)
    assert "| return n/a (sum over agents 25.00) | cost 3.25 / limit 5 |" in line


def test_add_safe_score_uses_the_team_return():
    from types import SimpleNamespace

    from rllib_safe.algorithms.registry import get_config
    from rllib_safe.studies.score import add_safe_score

    algorithm = SimpleNamespace(config=get_config("MAPPOLagrangian").environment("SafeMAToy-v0"))  # limit 5
    result = json.loads(json.dumps(RESULT, default=float))
    result["env_runners"]["episode_cost_mean"] = 7.0
    add_safe_score(algorithm=algorithm, result=result, penalty=2.0)
    assert result["safe_score"] == 12.5 - 2.0 * (7.0 - 5.0)  # the team return 12.5, not RLlib's sum 25
    result = json.loads(json.dumps(RESULT, default=float))
    del result["safe_score"]
    result["env_runners"]["episode_return_team"] = float("nan")
    result["env_runners"]["agent_episode_returns_mean"] = {"agent_0": float("nan"), "agent_1": float("nan")}
    add_safe_score(algorithm=algorithm, result=result)
    assert "safe_score" not in result  # no episode has ended


# ------------------------------------------------------------------------------------------------ sweep files
def test_every_shipped_sweep_file_loads():
    for path in sorted((REPO / "tune_configs").glob("*.yaml")):
        spec = load_sweep(path)
        assert spec.experiments and all(e.stop for e in spec.experiments), path
    head = (REPO / "tune_configs" / "mafocops_lambda.yaml").read_text().splitlines()[0]
    assert "Table 3" in head


def test_sweep_file_to_param_space(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\ncommon:\n  tasks: [SafeMAToy-v0]\n  config: {num_env_runners: 0, train_batch_size_per_learner: 100,"
        " minibatch_size: 50}\n  grid: {seed: [0, 1]}\n  stop: {env_steps: 1000}\n"
        "experiments:\n  - algorithm: mafocops\n    grid: {nu_max: [1.3, .inf]}\n    score: {penalty: 3}\n"
        "  - algorithm: HAPPO\n    search: {lr: {loguniform: [0.0001, 0.001]}}\n    num_samples: 2\n"
    )
    spec = load_sweep(path)
    mafocops, happo = spec.experiments
    assert (mafocops.algorithm, mafocops.num_trials, happo.num_trials) == ("MAFOCOPS", 4, 4)
    assert mafocops.stop == {"env_runners/num_env_steps_sampled_lifetime": 1000}
    space = param_space(mafocops)
    assert space["nu_max"] == {"grid_search": [1.3, math.inf]} and space["seed"] == {"grid_search": [0, 1]}
    assert space["env"] == "SafeMAToy-v0" and space["num_env_runners"] == 0
    assert space["callbacks_on_train_result"].keywords == {"penalty": 3}
    assert type(param_space(happo)["lr"]).__name__ == "Float"  # a Tune sampler


@pytest.mark.parametrize(
    "text, message",
    [
        ("algorithm: HAPPO\ntask: SafeMAToy-v0\n", "`stop` is missing"),
        ("algorithm: HAPPO\ntask: Nope-v0\nstop: {iterations: 1}\n", "task Nope-v0: Unknown task 'Nope-v0'"),
        ("algorithm: HAPPO\ntask: SafeMAToy-v0\nstop: {iterations: 1}\nconfig: {cost_limit: -1}\n", "`cost_limit`"),
        ("algorithm: HAPPO\ntask: SafeMAToy-v0\nstop: {iterations: 1}\ngrid: {lr: [0.1, -1]}\n", "lr=-1"),
        ("algorithm: HAPPO\ntasks: SafeMAToy-v0\nstop: {iterations: 1}\nseeds: [1]\n", "unknown key(s) ['seeds']"),
        ("algorithm: HAPPO\ntask: SafeMAToy-v0\nstop: {iterations: 1}\ngrid: {seed: [0.5]}\n", "integers"),
        ("experiments:\n  - algorithm: HAPPO\n    task: SafeMAToy-v0\n    stop: {iterations: 0}\n", "experiments[0]"),
        ("algorithm: HAPPO\ntask: SafeMAToy-v0\nstop: {iterations: 1}\nscheduler: {type: hyperband}\n", "scheduler"),
    ],
)
def test_bad_sweep_files_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        load_sweep(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_scheduler_on_the_constrained_score():
    from ray.tune.schedulers import ASHAScheduler

    from rllib_safe.studies.spec import build_scheduler

    (spec,) = load_sweep(REPO / "tune_configs" / "asha_safe_score.yaml").experiments
    scheduler, metric, mode = build_scheduler(spec)
    assert isinstance(scheduler, ASHAScheduler) and (metric, mode) == ("safe_score", "max")
    assert param_space(spec)["callbacks_on_train_result"].keywords == {"penalty": 10}


# ------------------------------------------------------------------------------------------------ tables, plots
def _trial(algorithm, env, seed, returns, costs, swept=None, limit=25.0):
    rows = [
        {"iteration": i + 1, "env_steps": 100.0 * (i + 1), "team_return_mean": r, "episode_cost_mean": c}
        for i, (r, c) in enumerate(zip(returns, costs))
    ]
    return Trial(f"/x/{algorithm}/{env}/{seed}", algorithm, env, seed, limit, dict(swept or {}), rows)


def test_final_value_is_the_mean_of_the_last_k_present_values():
    rows = [{"x": 1.0}, {"x": None}, {"x": 3.0}, {"x": 5.0}, {}]
    assert final_value(rows, "x", 2) == 4.0 and final_value(rows, "x", 10) == 3.0 and final_value(rows, "y") is None


def test_table_median_iqr_and_the_normalised_layout():
    trials = [
        _trial("HAPPO", "A", 0, [0, 10], [0, 20]),
        _trial("HAPPO", "A", 1, [0, 30], [0, 40]),
        _trial("HAPPO", "B", 0, [0, 100], [0, 10]),
        _trial("MAFOCOPS", "A", 0, [0, 5], [0, 3], {"focops_lambda": 2.2}),
        _trial("MAFOCOPS", "A", 1, [0, 15], [0, 6], {"focops_lambda": 2.2}),
        _trial("MAFOCOPS", "A", 2, [0, 40], [0, 9], {"focops_lambda": 2.2}),
        _trial("MAFOCOPS", "B", 0, [0, 50], [0, 2], {"focops_lambda": 2.2}),
    ]
    groups = summarize(trials, last_k=1)
    happo_a = next(g for g in groups if g.algorithm == "HAPPO" and g.env == "A")
    assert (happo_a.stats["return"].median, happo_a.stats["return"].q25, happo_a.stats["return"].q75) == (20, 15, 25)
    mafocops_a = next(g for g in groups if g.algorithm == "MAFOCOPS" and g.env == "A")
    assert mafocops_a.setting == "focops_lambda=2.2" and mafocops_a.stats["return"].median == 15
    assert (mafocops_a.stats["cost"].q25, mafocops_a.stats["cost"].q75) == (4.5, 7.5)
    tasks, table = normalized(groups, "HAPPO")
    row = table[("MAFOCOPS", "focops_lambda=2.2")]
    assert tasks == ["A", "B"]
    assert row["A"] == (15 / 20, 6 / 30) and row["B"] == (50 / 100, 2 / 10)
    assert row["all envs"] == pytest.approx(((0.75 + 0.5) / 2, (0.2 + 0.2) / 2))
    text = markdown(groups, last_k=1, baseline="HAPPO")
    assert "| MAFOCOPS | focops_lambda=2.2 | 0.750 | 0.200 | 0.500 | 0.200 | 0.625 | 0.200 |" in text
    assert "| HAPPO | default | A | 2 | 20.00 [15.00, 25.00] | 30.00 [25.00, 35.00] | 25 |" in text
    csv_rows = to_csv(groups, baseline="HAPPO").splitlines()
    assert csv_rows[-1].startswith("MAFOCOPS,focops_lambda=2.2,all envs,") and csv_rows[-1].endswith(",0.625,0.2")


def test_progress_files_and_tune_result_files_read_alike(tmp_path):
    ours = tmp_path / "sweep" / "exp" / "trial_a"
    ours.mkdir(parents=True)
    (ours / "run.json").write_text(json.dumps({"algorithm": "HAPPO", "env": "SafeMAToy-v0", "seed": 3,
                                               "cost_limit": 5.0, "swept": {}}))  # fmt: skip
    row = flatten_result(RESULT)
    (ours / "progress.jsonl").write_text(
        json.dumps({**row, "iteration": 1}) + "\n" + json.dumps(row) + "\n" + json.dumps(row) + "\n"
    )  # a resumed trial repeats iteration 4: its last row is kept
    tune_dir = tmp_path / "plain" / "MAPPOLagrangian_abc_00000_0_lr=0.001"
    tune_dir.mkdir(parents=True)
    (tune_dir / "params.json").write_text(json.dumps({"env": "SafeMAToy-v0", "seed": 1, "lr": 0.001}))
    (tune_dir / "result.json").write_text(json.dumps(RESULT, default=float) + "\n")
    (ckpt := tune_dir / "checkpoint_000000").mkdir()
    (ckpt / "result.json").write_text("{}")  # inside checkpoints: not a trial
    trials = {t.algorithm: t for t in load_trials([tmp_path / "sweep", tmp_path / "plain"])}
    assert set(trials) == {"HAPPO", "MAPPOLagrangian"}
    assert [r["iteration"] for r in trials["HAPPO"].rows] == [1, 4] and trials["HAPPO"].seed == 3
    plain = trials["MAPPOLagrangian"]
    assert plain.rows == [flatten_result(json.loads(json.dumps(RESULT, default=float)))]
    assert (plain.env, plain.seed, plain.cost_limit) == ("SafeMAToy-v0", 1, 5.0)  # the task's default limit
    assert plain.rows[0]["team_return_mean"] == 12.5


def test_progress_rows_of_older_runs_get_the_team_return_from_rllibs_sum(tmp_path):
    """Rows written before ``team_return_mean`` existed: RLlib's sum over the agents listed in run.json, ÷ n."""
    old = {"iteration": 1, "env_steps": 100, "episode_return_mean": 36.0, "episode_cost_mean": 5.0}
    info = {"algorithm": "HAPPO", "env": "SafeMAToy-v0", "seed": 0, "cost_limit": 5.0, "swept": {}}
    for name, agents in (("two", ["agent_0", "agent_1"]), ("unknown", None)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps({**info, "seed": len(name), "agent_ids": agents}))
        (tmp_path / name / "progress.jsonl").write_text(json.dumps(old) + "\n")
    two, unknown = sorted(load_trials([tmp_path]), key=lambda t: t.seed)  # seeds 3 ("two"), 7 ("unknown")
    assert two.rows[0]["team_return_mean"] == 18.0 and two.rows[0]["team_return_derived"] is True
    assert "team_return_mean" not in unknown.rows[0]  # no agents known: no team return (tables print "—")
    assert summarize([unknown])[0].stats["return"].median is None
    new = {**old, "team_return_mean": 17.0}  # a current row keeps its own value
    (tmp_path / "two" / "progress.jsonl").write_text(json.dumps(new) + "\n")
    assert load_trials([tmp_path / "two"])[0].rows[0]["team_return_mean"] == 17.0


def test_plot_curves_are_the_median_and_band_on_a_common_grid():
    from rllib_safe.studies.plot import curve, make_figure

    a = _trial("HAPPO", "A", 0, [1, 2, 3], [4, 4, 4])
    b = _trial("HAPPO", "A", 1, [3, 4, 5], [0, 2, 4])
    b.rows = b.rows[1:]  # seed 1 starts at 200 steps: the grid is the steps every seed covers
    c = curve([a, b], "team_return_mean", "HAPPO")
    np.testing.assert_allclose(c.steps, [200, 300])
    np.testing.assert_allclose(c.median, [3, 4])  # (2, 4) and (3, 5)
    np.testing.assert_allclose(c.q25, [2.5, 3.5])
    fig = make_figure([a, b])
    ret_ax, cost_ax = fig.axes[:2]
    (line,) = [ln for ln in ret_ax.get_lines() if ln.get_label() == "HAPPO"]
    np.testing.assert_allclose(line.get_ydata(), [3, 4])
    limit = [ln for ln in cost_ax.get_lines() if ln.get_label() == "cost limit"][0]
    assert list(limit.get_ydata()) == [25.0, 25.0] and limit.get_linestyle() == "--"


# ------------------------------------------------------------------------------------------------ quiet output
NOISE_LINES = [
    "AdroitHandRelocateDense-v1, AdroitHandHammerDense-v1, AdroitHandDoorDense-v1 environment's reward functions "
    "were updated in v1.2.1 without an environment version update.",
    "2026-11-30 07:46:43,130\tWARNING algorithm_config.py:5160 -- You are running MAPPOLagrangian on the new API "
    "stack! This is the new default behavior for this algorithm.",
    "WARNING rl_module.py:463 -- DeprecationWarning: `RLModule(config=[RLModuleConfig object])` has been deprecated.",
    "2026-11-30 07:46:51,534\tWARNING util.py:62 -- Install gputil for GPU system monitoring.",
    "[2026-11-30 07:46:47,308 E 8372 8372] core_worker.cc:2465: Actor with class name: 'MultiAgentEnvRunner' and ID: "
    "'d7f7' has constructor arguments in the object store and max_restarts > 0.",
    "WARNING authentication_token_setup.py:85 -- Token authentication is enabled for this Ray cluster.",
]


def test_quiet_drops_the_six_notices_and_nothing_else():
    assert all(quiet.is_noise(line) for line in NOISE_LINES)
    for real in (
        "WARNING sequential.py:12 -- the dual variable diverged",
        "UserWarning: the observation is out of its space",
        "rllib-safe: error: Unknown task 'X'.",
        "WARNING algorithm_config.py:5160 -- You are running MAPPOLagrangian on the old API stack",
    ):
        assert not quiet.is_noise(real), real


def test_our_modules_are_built_without_the_deprecated_config_argument():
    """RLlib 2.60's RLModule.__init__ logs the RLModuleConfig deprecation for every module it builds (its own
    rl_module.py:463); our modules take the keyword arguments RLlib asks for and pass no ``config=``."""
    import inspect

    from rllib_safe.algorithms.sequential import sequential
    from rllib_safe.core import rl_modules

    for module in (rl_modules, sequential):
        source = inspect.getsource(module)
        assert "RLModuleConfig" not in source and "config=RLModule" not in source


def test_wandb_goes_offline_without_a_key(monkeypatch, tmp_path, capsys):
    from rllib_safe.studies.experiment import prepare_wandb

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    prepare_wandb()
    assert os.environ["WANDB_MODE"] == "offline" and "no W&B API key" in capsys.readouterr().out
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    prepare_wandb()
    assert os.environ["WANDB_MODE"] == "online"


def test_off_policy_rows_show_alpha_losses_and_the_buffer():
    result = json.loads(json.dumps(RESULT, default=float))
    result["learners"]["agent_0"]["alpha"] = 0.2
    result["learners"]["agent_1"]["alpha"] = 0.1
    result["learners"]["__critic__"].update({"q_loss": 1.25, "cvar": 7.5, "gradient_updates_per_s": 120.4})
    result["replay_buffer"] = {"size": 5000}
    line = progress_line(flatten_result(result), 5.0)
    expected = "| λ 0.250 0.500 | α 0.200 0.100 | Q loss 1.25 | CVaR 7.5 | buffer 5000 | 120 upd/s | 100 env-steps/s"
    assert expected in line
    assert " α " not in progress_line(flatten_result(RESULT), 5.0)  # on-policy rows: no off-policy part
