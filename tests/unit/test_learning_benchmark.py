"""The report maths of benchmarks/learning.py against hand-computed values on tiny synthetic files: checkpoint windows,
median and [min, max] over seeds, the last-10 % rule, SafePO CSVs and study directories as references. No Ray."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import load_benchmark

lb = load_benchmark("learning")


def _write_seed(path: Path, steps, returns, costs) -> None:
    rows = [
        {"iteration": i + 1, "env_steps": s, "team_return_mean": r, "episode_cost_mean": c}
        for i, (s, r, c) in enumerate(zip(steps, returns, costs, strict=True))
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def study(tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    # seed 0: 100 env steps per iteration; return = steps / 100, cost = 10 − steps / 100
    _write_seed(out / "seed_0.jsonl", [100, 200, 300, 400, 500, 600], [1, 2, 3, 4, 5, 6], [9, 8, 7, 6, 5, 4])
    # seed 1: same steps, return twice seed 0's, one iteration without a return (no episode ended), cost 3
    _write_seed(out / "seed_1.jsonl", [100, 200, 300, 400, 500, 600], [2, 4, None, 8, 10, 12], [3] * 6)
    # seed 2: 150 env steps per iteration
    _write_seed(out / "seed_2.jsonl", [150, 300, 450, 600], [10, 20, 30, 40], [1, 2, 3, 4])
    return out


def test_window_mean_is_half_open_around_the_checkpoint(study):
    runs = lb.read_study(study)
    assert sorted(runs) == [0, 1, 2]
    s0, s1, s2 = runs[0], runs[1], runs[2]
    # every 200: windows (100, 300], (300, 500], (500, 700]; step 100 is outside the first one
    assert lb.window_mean(s0, "return", 200, 200) == 2.5  # steps 200, 300: (2 + 3) / 2
    assert lb.window_mean(s0, "return", 400, 200) == 4.5  # 400, 500
    assert lb.window_mean(s0, "return", 600, 200) == 6.0  # 600
    assert lb.window_mean(s0, "cost", 200, 200) == 7.5  # (8 + 7) / 2
    assert lb.window_mean(s1, "return", 200, 200) == 4.0  # 300 has no return: 200 alone
    assert lb.window_mean(s2, "return", 200, 200) == 15.0  # 150, 300
    assert lb.window_mean(s2, "return", 400, 200) == 30.0  # 450
    assert math.isnan(lb.window_mean(s2, "return", 1000, 200))  # nothing there
    assert lb.checkpoints(200, 600) == [200, 400, 600]
    assert lb.checkpoints(200, 699) == [200, 400, 600]


def test_median_min_max_over_seeds_and_missing_seeds():
    s = lb.spread([2.5, 4.0, 15.0])
    assert (s.median, s.low, s.high, s.n) == (4.0, 2.5, 15.0, 3)
    s = lb.spread([1.0, float("nan"), 3.0, 8.0, 10.0])  # NaN: a seed without a value there
    assert (s.median, s.low, s.high, s.n) == (5.5, 1.0, 10.0, 4)
    assert lb.spread([float("nan")]).n == 0


def test_last_ten_percent_rule(tmp_path):
    steps = list(range(50, 1001, 50))  # 50 … 1000: steps > 900 are 950 and 1000
    series = lb.Series(np.array(steps, float), np.array(steps, float) / 10, np.ones(len(steps)))
    assert lb.last_fraction_mean(series, "return") == pytest.approx((95 + 100) / 2)
    assert lb.last_fraction_mean(series, "cost") == 1.0
    short = lb.Series(np.array([100.0, 200.0]), np.array([1.0, 2.0]), np.array([0.0, 0.0]))  # > 180: 200 only
    assert lb.last_fraction_mean(short, "return") == 2.0
    assert math.isnan(lb.last_fraction_mean(lb.Series(np.empty(0), np.empty(0), np.empty(0)), "return"))


def test_report_rows_and_table_against_a_study_reference(study, tmp_path):
    ours = list(lb.read_study(study).values())
    rows = lb.report_rows(ours, ours[:1], every=200, until=600)
    label, r_ours, r_ref, c_ours, c_ref = rows[0]
    assert label == "0.2k"
    assert (r_ours.median, r_ours.low, r_ours.high) == (4.0, 2.5, 15.0)  # seeds: 2.5, 4, 15
    assert (r_ref.median, r_ref.n) == (2.5, 1)
    assert (c_ours.median, c_ours.low, c_ours.high) == (3.0, 1.5, 7.5)  # seeds: (8+7)/2, 3, (1+2)/2
    label, r_ours, *_ = rows[1]
    assert (r_ours.median, r_ours.low, r_ours.high) == (9.0, 4.5, 30.0)  # 4.5, (8+10)/2, 30
    label, r_ours, r_ref, c_ours, c_ref = rows[-1]
    assert label == "last 10% of the run"
    # each seed's last env steps is 600: mean over steps > 540, i.e. step 600 alone
    assert (r_ours.median, r_ours.low, r_ours.high) == (12.0, 6.0, 40.0)
    assert (c_ours.median, c_ours.low, c_ours.high) == (4.0, 3.0, 4.0)
    table = lb.markdown_report(ours, ours[:1], every=200, until=600, cost_limit=3.5)
    lines = table.splitlines()
    assert lines[0].endswith("| return ≥ ref | cost ≤ limit (3.5) |")
    assert lines[2] == "| 0.2k | 4.0 [2.5, 15.0] | 2.5 | 3.00 [1.50, 7.50] | 7.50 | yes | yes |"
    assert lines[-1] == "| last 10% of the run | 12.0 [6.0, 40.0] | 6.0 | 4.00 [3.00, 4.00] | 4.00 | yes | no |"
    assert len(lines) == 2 + 3 + 1
    # the same study as its own reference, by directory: every verdict ties (≥ holds)
    table = lb.markdown_report(ours, lb.read_reference(study), every=200, until=600, cost_limit=None)
    assert all(line.split("|")[-3].strip() == "yes" for line in table.splitlines()[2:])
    assert all(line.split("|")[-2].strip() == "—" for line in table.splitlines()[2:])  # no limit known


def test_safepo_csv_as_reference(tmp_path):
    path = tmp_path / "progress.csv"
    path.write_text(
        "Metrics/EpRet,Metrics/EpRet/Min,Metrics/EpCost,Train/Epoch,Train/TotalSteps\n"
        "100.0,100.0,1.0,0,10000\n"
        "200.0,200.0,3.0,1,20000\n"
        "300.0,300.0,5.0,2,30000\n"
        "400.0,400.0,7.0,3,40000\n"
    )
    (ref,) = lb.read_reference(path)
    np.testing.assert_array_equal(ref.steps, [10000, 20000, 30000, 40000])
    np.testing.assert_array_equal(ref.ret, [100, 200, 300, 400])
    np.testing.assert_array_equal(ref.cost, [1, 3, 5, 7])
    assert lb.window_mean(ref, "return", 20000, 20000) == 250.0  # (10k, 30k]: 20k, 30k → (200 + 300) / 2
    assert lb.window_mean(ref, "cost", 40000, 20000) == 7.0  # (30k, 50k]: 40k alone
    assert lb.last_fraction_mean(ref, "return") == 400.0  # > 36k: 40k alone
    with pytest.raises(ValueError, match="SafePO progress"):
        bad = tmp_path / "bad.csv"
        bad.write_text("a,b\n1,2\n")
        lb.read_reference(bad)
    with pytest.raises(ValueError, match="no seed_"):
        lb.read_reference(tmp_path)


def test_real_anchor_is_read():
    anchor = Path("/work/shared/anchors/safepo_mappolag_ant2x4vel_seed0_1M_progress.csv")
    if not anchor.exists():
        pytest.skip("the SafePO anchors are not on this machine")
    (ref,) = lb.read_reference(anchor)
    assert ref.steps[0] == 10000 and ref.steps[-1] == 1_000_000
    assert lb.window_mean(ref, "return", 100_000, 100_000) == pytest.approx(
        ref.ret[(ref.steps > 50_000) & (ref.steps <= 150_000)].mean()
    )


def test_iteration_row_team_return_and_exact_cost():
    result = {
        "training_iteration": 3,
        "env_runners": {
            "num_env_steps_sampled_lifetime": 3000,
            "episode_return_mean": 40.0,  # RLlib: summed over the 2 agents
            "agent_episode_returns_mean": {"agent_0": 20.0, "agent_1": 20.0},
            "episode_cost_mean": 2.5,
            "episode_len_mean": 25.0,
            "episode_cost_sum": {"agent_0": 12.0, "agent_1": 12.0},
            "episode_cost_count": {"agent_0": 4, "agent_1": 4},
        },
        "learners": {"agent_0": {"lagrange_multiplier": 0.5}, "agent_1": {"lagrange_multiplier": 0.25}},
    }
    row = lb.iteration_row(result, ["agent_0", "agent_1"], 1, wall_s=7.0)
    assert row["team_return_mean"] == 20.0
    assert row["episode_cost_iter"] == 3.0  # 12 / 4
    assert row["episode_cost_mean"] == 2.5 and row["episode_len_mean"] == 25.0 and row["env_steps"] == 3000
    assert row["agent_0/lagrange_multiplier"] == 0.5 and row["agent_1/lagrange_multiplier"] == 0.25
    assert row["wall_s"] == 7.0
    result["env_runners"]["episode_return_team"] = 21.0  # the callback's key comes first
    assert lb.iteration_row(result, ["agent_0", "agent_1"], 1, wall_s=7.0)["team_return_mean"] == 21.0
    del result["env_runners"]["agent_episode_returns_mean"], result["env_runners"]["episode_return_team"]
    # RLlib's sum alone is not read as a team return (as the progress rows: rllib_safe.studies.progress).
    assert lb.iteration_row(result, ["agent_0", "agent_1"], 1, wall_s=7.0).get("team_return_mean") is None


def test_plot_draws_the_study_the_reference_and_further_studies(study, tmp_path):
    """``--also`` adds more studies to the figure: one median line (and a min–max band) per study."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    drawn = {}
    real_savefig = plt.Figure.savefig

    def keep_lines(fig, *args, **kwargs):
        drawn["labels"] = [line.get_label() for line in fig.axes[0].get_lines()]
        return real_savefig(fig, *args, **kwargs)

    args = lb.parse_args(["--out", str(study), "--reference", str(study), "--also", str(study), str(study)])
    plt.Figure.savefig = keep_lines
    try:
        path = lb.plot(args, tmp_path / "fig.png")
    finally:
        plt.Figure.savefig = real_savefig
    assert path.stat().st_size > 0
    assert len(drawn["labels"]) == 4 and drawn["labels"][0].endswith("3 seeds")
    assert drawn["labels"][1].startswith("reference: ")
