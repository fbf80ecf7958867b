"""Sweep specifications: the YAML files of ``tune_configs/`` turned into Tune experiments.

A file holds one experiment, or ``experiments:`` (a list) with ``common:`` settings merged into each (mappings are
merged key by key, an experiment's own value wins)::

    name: mafocops_lambda            # the sweep's directory under the storage path
    common:
      tasks: [SafeAnt2x4-v0, SafeHalfCheetah2x3-v0]
      config: {num_env_runners: 2, train_batch_size_per_learner: 10000}   # any AlgorithmConfig field
      env_config: {}                                                     # task options
      grid: {seed: [0, 1, 2]}                                            # tune.grid_search axes (seeds too)
      stop: {env_steps: 1000000}                                         # or iterations / time_s / any result key
      checkpoint: {every: 20, keep: 2}
    experiments:
      - algorithm: MAFOCOPS
        grid: {focops_lambda: [1, 2, 2.2, 3, 5]}
      - algorithm: HAPPO              # the normaliser of Table 3

Experiment keys: ``algorithm`` (required), ``task`` or ``tasks``, ``config``, ``env_config``, ``grid``, ``search``
(random-search axes: ``{field: {choice: [...]}}``, ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``,
``{randint: [lo, hi]}``), ``num_samples``, ``stop``, ``checkpoint`` (``every``, ``keep``), ``scheduler``
(``{type: asha|pbt, metric: safe_score, mode: max, ...}``, see :func:`build_scheduler`), ``score``
(``{penalty: κ}``, :mod:`rllib_safe.studies.score`), ``max_failures`` and ``name`` (the experiment's directory,
default the algorithm's name). ``num_learners``, ``num_gpus_per_learner``, ``num_env_runners`` and the other resource
fields are ``config`` fields. Every value is checked before Ray starts: a bad key or value raises ``ValueError``
naming the file, the experiment and the key.
"""

from __future__ import annotations

import copy
import functools
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Friendly stop keys -> Tune result keys.
STOP_KEYS = {
    "env_steps": "env_runners/num_env_steps_sampled_lifetime",
    "iterations": "training_iteration",
    "time_s": "time_total_s",
}
EXPERIMENT_KEYS = (
    "name", "algorithm", "task", "tasks", "config", "env_config", "grid", "search", "num_samples", "stop",
    "checkpoint", "scheduler", "score", "max_failures",
)  # fmt: skip
TOP_KEYS = ("name", "description", "common", "experiments")
SEARCH_KINDS = ("choice", "uniform", "loguniform", "randint")
SCHEDULERS = ("asha", "pbt")


@dataclass
class ExperimentSpec:
    """One experiment of a sweep file (module docstring), validated."""

    name: str
    algorithm: str
    tasks: list[str]
    config: dict = field(default_factory=dict)
    env_config: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    search: dict = field(default_factory=dict)
    num_samples: int = 1
    stop: dict = field(default_factory=dict)
    checkpoint_every: int = 0
    keep_checkpoints: int | None = None
    scheduler: dict | None = None
    score_penalty: float | None = None
    max_failures: int = 0

    @property
    def num_trials(self) -> int:
        """Trials of this experiment: tasks × grid points × num_samples."""
        n = len(self.tasks) * self.num_samples
        for values in self.grid.values():
            n *= len(values)
        return n


@dataclass
class SweepSpec:
    """A sweep file: a name and its experiments."""

    name: str
    experiments: list[ExperimentSpec]
    source: str


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_sweep(path: str | Path) -> SweepSpec:
    """Reads and checks a sweep file (module docstring).

    Raises:
        ValueError: The file is missing or not valid YAML, or a key or value is wrong (the message names the file,
            the experiment and the key).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sweep file {str(path)!r} does not exist.")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML{_yaml_where(e, text)}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the file must hold a mapping (name:, algorithm: or experiments:), got {raw!r}.")
    name = raw.get("name", path.stem)
    if "experiments" in raw:
        unknown = set(raw) - set(TOP_KEYS)
        if unknown:
            raise ValueError(
                f"{path}: unknown top-level key(s) {sorted(unknown)} next to `experiments` "
                f"(known: {', '.join(TOP_KEYS)}; put shared settings under `common`)."
            )
        items = raw["experiments"]
        if not isinstance(items, list) or not items:
            raise ValueError(f"{path}: `experiments` must be a non-empty list of mappings.")
        common = raw.get("common") or {}
        if not isinstance(common, dict):
            raise ValueError(f"{path}: `common` must be a mapping, got {common!r}.")
        merged = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ValueError(f"{path}: experiments[{i}] must be a mapping, got {item!r}.")
            merged.append((f"experiments[{i}]", _merge(common, item)))
    else:
        merged = [("", {k: v for k, v in raw.items() if k not in ("name", "description")})]
    experiments = [_experiment(f"{path}: {where}" if where else str(path), item) for where, item in merged]
    names = [e.name for e in experiments]
    for i, e in enumerate(experiments):  # two experiments of one algorithm need distinct directories
        if names.count(e.name) > 1:
            e.name = f"{e.name}_{i}"
    return SweepSpec(name=str(name), experiments=experiments, source=str(path))


def _yaml_where(error: Exception, text: str) -> str:
    """Where a YAML error is: the line, the key on the line where the broken construct starts, and the problem."""
    mark = getattr(error, "context_mark", None) or getattr(error, "problem_mark", None)
    problem = ", ".join(str(p) for p in (getattr(error, "context", None), getattr(error, "problem", None)) if p)
    if mark is None:
        return f": {problem or error}."
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    key = line.split(":", 1)[0].strip(" -\t") if ":" in line else ""
    at = f" at line {mark.line + 1}" + (f" (key `{key}`)" if key else "")
    seen = getattr(error, "problem_mark", None)
    where = ""
    if seen is not None and seen is not mark:
        where = f" (noticed at line {seen.line + 1}, column {seen.column + 1})"
    return f"{at}: {problem or error}{where}."


def _experiment(where: str, item: dict) -> ExperimentSpec:
    from rllib_safe.algorithms.registry import canonical_name

    unknown = set(item) - set(EXPERIMENT_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)} (known: {', '.join(EXPERIMENT_KEYS)}).")
    if "algorithm" not in item:
        raise ValueError(f"{where}: `algorithm` is missing (a registered name, see `rllib-safe algos`).")
    try:
        algorithm = canonical_name(str(item["algorithm"]))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if "task" in item and "tasks" in item:
        raise ValueError(f"{where}: give `task` or `tasks`, not both.")
    tasks = item.get("tasks", item.get("task"))
    tasks = [tasks] if isinstance(tasks, str) else tasks
    if not tasks or not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise ValueError(f"{where}: `task`/`tasks` must be a task name or a list of names, got {tasks!r}.")

    def mapping(key: str) -> dict:
        value = item.get(key) or {}
        if not isinstance(value, dict):
            raise ValueError(f"{where}: `{key}` must be a mapping, got {value!r}.")
        return value

    grid = mapping("grid")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}: grid axis `{key}` must be a non-empty list, got {values!r}.")
    search = mapping("search")
    for key, dist in search.items():
        if not (isinstance(dist, dict) and len(dist) == 1 and next(iter(dist)) in SEARCH_KINDS):
            raise ValueError(
                f"{where}: search axis `{key}` must be one of {{choice: [...]}}, {{uniform: [lo, hi]}}, "
                f"{{loguniform: [lo, hi]}}, {{randint: [lo, hi]}}; got {dist!r}."
            )
        kind, args = next(iter(dist.items()))
        if not isinstance(args, list) or (kind != "choice" and len(args) != 2) or not args:
            raise ValueError(f"{where}: search axis `{key}` ({kind}) needs a list of values, got {args!r}.")
    stop = {}
    for key, value in mapping("stop").items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{where}: stop criterion `{key}` must be a positive number, got {value!r}.")
        stop[STOP_KEYS.get(key, key)] = value
    if not stop:
        raise ValueError(f"{where}: `stop` is missing (e.g. `stop: {{env_steps: 1000000}}`).")
    checkpoint = mapping("checkpoint")
    bad = set(checkpoint) - {"every", "keep"}
    if bad:
        raise ValueError(f"{where}: unknown key(s) {sorted(bad)} in `checkpoint` (known: every, keep).")

    def integer(value: Any, key: str, minimum: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{where}: `{key}` must be an integer >= {minimum}, got {value!r}.")
        return value

    scheduler = item.get("scheduler")
    if scheduler is not None:
        if not isinstance(scheduler, dict) or scheduler.get("type") not in SCHEDULERS:
            raise ValueError(f"{where}: `scheduler` must be a mapping with `type` in {SCHEDULERS}, got {scheduler!r}.")
    score = mapping("score")
    if set(score) - {"penalty"}:
        raise ValueError(f"{where}: unknown key(s) {sorted(set(score) - {'penalty'})} in `score` (known: penalty).")
    penalty = score.get("penalty")
    if penalty is not None and (not isinstance(penalty, (int, float)) or penalty < 0):
        raise ValueError(f"{where}: `score.penalty` must be a number >= 0, got {penalty!r}.")
    spec = ExperimentSpec(
        name=str(item.get("name", algorithm)),
        algorithm=algorithm,
        tasks=list(tasks),
        config=mapping("config"),
        env_config=mapping("env_config"),
        grid=grid,
        search=search,
        num_samples=integer(item.get("num_samples", 1), "num_samples", 1),
        stop=stop,
        checkpoint_every=integer(checkpoint.get("every", 0), "checkpoint.every", 0),
        keep_checkpoints=None if checkpoint.get("keep") is None else integer(checkpoint["keep"], "checkpoint.keep", 1),
        scheduler=scheduler,
        score_penalty=penalty,
        max_failures=integer(item.get("max_failures", 0), "max_failures", 0),
    )
    check_experiment(spec, where)
    return spec


def base_config(spec: ExperimentSpec, where: str = ""):
    """The experiment's AlgorithmConfig without the swept values (first task), fixed fields set."""
    from rllib_safe.algorithms.registry import get_config
    from rllib_safe.studies.score import DEFAULT_PENALTY, add_safe_score

    config = get_config(spec.algorithm)
    config.environment(spec.tasks[0], env_config=dict(spec.env_config))
    for key, value in spec.config.items():
        if key in ("env", "env_config"):
            raise ValueError(f"{where}: set the task with `tasks`, its options with `env_config` (not config.{key})")
        if not hasattr(config, key):
            raise ValueError(f"{where}: unknown config key {key!r} for {type(config).__name__} (in `config`).")
        setattr(config, key, value)
    penalty = DEFAULT_PENALTY if spec.score_penalty is None else spec.score_penalty
    config.callbacks(on_train_result=functools.partial(add_safe_score, penalty=penalty))
    return config


def _axis_points(spec: ExperimentSpec) -> dict[str, list]:
    """Values to validate per swept field: grid values; choices; the bounds of continuous ranges."""
    points = {k: list(v) for k, v in spec.grid.items() if k != "seed"}
    for key, dist in spec.search.items():
        kind, args = next(iter(dist.items()))
        points[key] = list(args) if kind == "choice" else [args[0], args[1] - 1 if kind == "randint" else args[1]]
    return points


def check_experiment(spec: ExperimentSpec, where: str) -> None:
    """Builds and validates the config of every task × swept value (seeds aside) before any Ray actor starts."""
    config = base_config(spec, where)
    for key in [*spec.grid, *spec.search]:
        if key in ("env", "env_config"):
            raise ValueError(f"{where}: sweep tasks with `tasks`, not a `{key}` axis.")
        if not hasattr(config, key):
            raise ValueError(f"{where}: unknown config key {key!r} for {type(config).__name__} (in `grid`/`search`).")
    for seed in spec.grid.get("seed", []):
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"{where}: seeds must be integers, got {seed!r}.")
    points = _axis_points(spec)
    keys = list(points)
    for task in spec.tasks:
        for values in itertools.product(*(points[k] for k in keys)):
            point = config.copy(copy_frozen=False)
            point.environment(task, env_config=dict(spec.env_config))
            for key, value in zip(keys, values):
                setattr(point, key, value)
            try:
                point.validate()
            except ValueError as e:
                setting = ", ".join(f"{k}={v}" for k, v in zip(keys, values))
                raise ValueError(f"{where}: task {task}{' with ' + setting if setting else ''}: {e}") from None


def param_space(spec: ExperimentSpec) -> dict:
    """The Tune ``param_space`` of an experiment: the config as a dict with ``grid_search`` and sampling values."""
    from ray import tune

    config = base_config(spec)
    config.env = tune.grid_search(list(spec.tasks)) if len(spec.tasks) > 1 else spec.tasks[0]
    for key, values in spec.grid.items():
        setattr(config, key, tune.grid_search(list(values)))
    for key, dist in spec.search.items():
        kind, args = next(iter(dist.items()))
        setattr(config, key, getattr(tune, kind)(args) if kind == "choice" else getattr(tune, kind)(*args))
    return config.to_dict()


def build_scheduler(spec: ExperimentSpec):
    """The Tune scheduler of an experiment and its (metric, mode), or (None, None, None).

    ``{type: asha, metric: safe_score, mode: max, grace_period: 5, reduction_factor: 3, max_t: 100}`` builds
    ``ASHAScheduler`` with ``time_attr="training_iteration"``; ``{type: pbt, metric: safe_score, mode: max,
    perturbation_interval: 5, mutations: {lr: [1e-4, 3e-4, 1e-3]}}`` builds ``PopulationBasedTraining`` with the
    given ``hyperparam_mutations``. The metric defaults to ``safe_score``.
    """
    if spec.scheduler is None:
        return None, None, None
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    options = dict(spec.scheduler)
    kind = options.pop("type")
    metric = options.pop("metric", "safe_score")
    mode = options.pop("mode", "max")
    try:
        if kind == "asha":
            return ASHAScheduler(time_attr="training_iteration", **options), metric, mode
        mutations = options.pop("mutations", {})
        return (
            PopulationBasedTraining(time_attr="training_iteration", hyperparam_mutations=mutations, **options),
            metric,
            mode,
        )
    except TypeError as e:
        raise ValueError(f"{spec.name}: bad `scheduler` option: {e}") from None
