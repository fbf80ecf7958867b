"""MAFOCOPS vs MACPO training efficiency in the layout of the MAFOCOPS paper's Appendix H (Tables 1 and 2).

For every task, both algorithms train with the same batch sizes on the same machine in the same run; each measurement
runs in a fresh process (see ``train_throughput.measure``): average FPS = env steps per second of wall time over the
timed iterations (sampling plus update, as the paper's "time and samples spent for each update"), and memory = the
peak resident memory of the learner process (the paper reads a GPU memory monitor after 200k samples; on a CPU
machine the learner's resident memory is the comparable number, and it includes the Python/Ray baseline).
Improvement (%) = (FPS_MAFOCOPS / FPS_MACPO − 1)·100; saved memory = MACPO − MAFOCOPS (MiB). On a CPU machine the
sampling dominates the wall time, so the script also prints the update time per iteration (learner update plus weight
sync), where the two algorithms differ, with MAFOCOPS's speed-up (MACPO time / MAFOCOPS time − 1).

How to run::

    python benchmarks/efficiency.py                      # SafeAnt 2x4, 4x2, SafeHalfCheetah 2x3, 6x1
    python benchmarks/efficiency.py --paper-grid         # all 14 scenarios of Tables 1 and 2
    python benchmarks/efficiency.py --tasks SafeAnt8x1-v0 --iters 5 --num-env-runners 4
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_throughput import add_arguments, measure_in_subprocess  # noqa: E402

DEFAULT_TASKS = ["SafeAnt2x4-v0", "SafeAnt4x2-v0", "SafeHalfCheetah2x3-v0", "SafeHalfCheetah6x1-v0"]
#: The paper's two table blocks (scenario name, configs).
PAPER_GRID = [
    ("Ant / HalfCheetah", [f"SafeAnt{c}-v0" for c in ("2x4d", "2x4", "4x2", "8x1")]
     + [f"SafeHalfCheetah{c}-v0" for c in ("2x3", "3x2", "6x1")]),
    ("ManyAgent Ant", [f"SafeManyAgentAnt{c}-v0" for c in ("2x3", "3x2", "6x1", "2x4", "4x2", "8x1")]),
]  # fmt: skip
ALGOS = ("MACPO", "MAFOCOPS")


def short(task: str) -> str:
    """``SafeAnt2x4-v0`` -> ``Ant 2x4``."""
    name = task.removeprefix("Safe").removesuffix("-v0")
    for robot in ("ManyAgentAnt", "HalfCheetah", "Ant", "Safety"):
        if name.startswith(robot):
            return f"{robot} {name[len(robot) :]}"
    return name


def print_tables(title: str, tasks: list[str], results: dict) -> None:
    """Prints the FPS table and the memory table of one block of tasks."""
    width = max(12, *(len(short(t)) + 2 for t in tasks))
    head = f"{title:22s}" + "".join(f"{short(t):>{width}s}" for t in tasks)
    print(f"\nAverage FPS (env steps/s)\n{head}\n" + "-" * len(head))
    for algo in ALGOS:
        print(f"{algo:22s}" + "".join(f"{results[(algo, t)]['env_steps_per_s']:{width}.2f}" for t in tasks))
    gains = [
        100 * (results[("MAFOCOPS", t)]["env_steps_per_s"] / results[("MACPO", t)]["env_steps_per_s"] - 1)
        for t in tasks
    ]
    print(f"{'Improvement (%)':22s}" + "".join(f"{g:{width}.2f}" for g in gains))
    print("\nUpdate time (s per iteration: learner update + weight sync, the part where the algorithms differ)")
    print(f"{head}\n" + "-" * len(head))
    update = {key: m["learner_share"] * m["seconds_per_iter"] for key, m in results.items()}
    for algo in ALGOS:
        print(f"{algo:22s}" + "".join(f"{update[(algo, t)]:{width}.2f}" for t in tasks))
    faster = [100 * (update[("MACPO", t)] / update[("MAFOCOPS", t)] - 1) for t in tasks]
    print(f"{'MAFOCOPS faster (%)':22s}" + "".join(f"{f:{width}.2f}" for f in faster))
    print(f"\nMemory (MiB, learner peak RSS)\n{head}\n" + "-" * len(head))
    for algo in ALGOS:
        print(f"{algo:22s}" + "".join(f"{results[(algo, t)]['driver_peak_mib']:{width}.2f}" for t in tasks))
    saved = [results[("MACPO", t)]["driver_peak_mib"] - results[("MAFOCOPS", t)]["driver_peak_mib"] for t in tasks]
    print(f"{'Saved memory':22s}" + "".join(f"{s:{width}.2f}" for s in saved))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="*", default=None, help=f"tasks (default {' '.join(DEFAULT_TASKS)})")
    parser.add_argument("--paper-grid", action="store_true", help="all 14 scenarios of the paper's tables")
    add_arguments(parser)
    args = parser.parse_args()
    blocks = PAPER_GRID if args.paper_grid else [("Scenario", args.tasks or DEFAULT_TASKS)]
    results = {}
    for _, tasks in blocks:
        for task in tasks:
            for algo in ALGOS:
                results[(algo, task)] = measure_in_subprocess(algo, task, args)
                print(f"measured {algo} on {task}: {results[(algo, task)]}", flush=True)
    print(
        f"\nSame machine ({os.cpu_count()} CPUs), same run; batch {args.batch_size} env steps/iteration, "
        f"{args.num_epochs} epochs x minibatch {args.minibatch_size} (MAFOCOPS; MACPO takes one full-batch step), "
        f"{args.num_env_runners} EnvRunner(s), {args.iters} timed iterations after a warm-up."
    )
    for title, tasks in blocks:
        print_tables(title, tasks, results)


if __name__ == "__main__":
    main()
