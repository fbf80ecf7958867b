"""The one code path of ``rllib-safe train`` and ``rllib-safe sweep``: a Tune experiment over a registered trainable.

``train`` is a one-trial experiment, ``sweep`` runs one experiment per algorithm of a YAML file; both go through
:func:`run_experiment`, so that where results go (``storage_path``), checkpoints, TensorBoard (Tune's
``TBXLoggerCallback``), Weights & Biases (Tune's ``WandbLoggerCallback``), our ``progress.jsonl`` and resume are
written once, by Tune. Our progress lines are a Tune callback
(:class:`~rllib_safe.studies.progress.ProgressLinesCallback`); Tune's own table is off.

Ray: :func:`init_ray` connects to a running cluster when an address is given (``--address`` or ``RAY_ADDRESS``, which
Ray sets inside a ``ray job``) and never starts a second, private Ray there; otherwise it starts a local one.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Experiment-state save period (seconds) Tune uses for our experiments unless ``TUNE_GLOBAL_CHECKPOINT_S`` is set:
#: after a crash of the driver, trials that finished more than this long before are never run again.
EXPERIMENT_STATE_PERIOD_S = "5"


def is_uri(path: str) -> bool:
    """True for ``s3://``, ``gs://`` and other URIs that pass through to Tune's storage as they are."""
    return "://" in str(path)


def storage_root(path: str) -> str:
    """An absolute local path (``~`` expanded), or a URI unchanged."""
    return str(path) if is_uri(path) else str(Path(path).expanduser().resolve())


@dataclass
class Experiment:
    """One Tune experiment.

    Attributes:
        algorithm: Registered trainable name (``MAFOCOPS``, ...).
        param_space: The AlgorithmConfig as a dict, possibly with ``tune.grid_search`` / sampling values.
        storage_path: Where the experiment directory goes (local path, shared file system, or s3:// gs:// URI).
        name: The experiment directory's name under ``storage_path``.
        stop: Tune stop criteria (a dict: any criterion reached stops the trial) or a ``tune.Stopper``.
        checkpoint_every: Checkpoint every N iterations (0: only at the end).
        keep_checkpoints: Keep the newest N checkpoints (None: all).
        num_samples: Repeats of the whole grid (random-search axes are sampled anew each time).
        scheduler: A Tune scheduler, or None.
        metric: The metric the scheduler optimises (``safe_score``, ...).
        mode: ``"max"`` or ``"min"``.
        trial_dirname: A fixed trial directory name (one-trial runs), or None for Tune's names.
        max_failures: Times a failed trial is restarted from its last checkpoint.
        restore_from: A checkpoint the (single) trial starts from: Tune restores it into the trial's Algorithm
            before the first iteration (``Trainable.restore``, the path Tune's own resume takes).
    """

    algorithm: str
    param_space: dict
    storage_path: str
    name: str
    stop: Any = field(default_factory=dict)
    checkpoint_every: int = 0
    keep_checkpoints: int | None = None
    num_samples: int = 1
    scheduler: Any = None
    metric: str | None = None
    mode: str | None = None
    trial_dirname: str | None = None
    max_failures: int = 0
    restore_from: str | None = None

    @property
    def path(self) -> str:
        """The experiment directory (local path or URI)."""
        return f"{self.storage_path.rstrip('/')}/{self.name}"


def _fixed_name(name: str):
    def creator(trial: Any) -> str:
        return name

    return creator


def init_ray(address: str | None, *, num_cpus: int | None, min_cpus: int, verbose: bool) -> bool:
    """Connects to a running Ray cluster or starts a local one (quiet unless ``verbose``).

    Args:
        address: ``--address``; None falls back to ``RAY_ADDRESS`` (set by Ray inside a ``ray job``). With an address,
            Ray connects to that cluster and starts nothing of its own.
        num_cpus: Logical CPUs of a local Ray (None: this machine's cores).
        min_cpus: A local Ray gets at least this many logical CPUs, so that one trial's placement group (its
            driver process plus one CPU per EnvRunner, as RLlib requests them) fits on a small machine; the
            processes then share the cores, as a hand-written training loop would.
        verbose: Show third-party notices and the Ray workers' logs unfiltered.

    Returns:
        True when this call initialised Ray: it started a local one, or connected to a cluster (the caller calls
        ``ray.shutdown()``, which on a cluster only disconnects); False when Ray was initialised already.
    """
    import ray

    from rllib_safe.studies import quiet

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet.before_ray(verbose)
    runtime_env: dict = {}
    # Every worker gets these, also on a cluster (W&B's logging actors see only WANDB_API_KEY from the driver);
    # inside a `ray job`, a variable the job's own runtime environment sets is left to it (Ray refuses both).
    job_vars = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("runtime_env", {}) or {}
    wandb_vars = {
        k: os.environ[k]
        for k in ("WANDB_MODE", "WANDB_SILENT")
        if os.environ.get(k) and k not in (job_vars.get("env_vars") or {})
    }
    if wandb_vars:
        runtime_env["env_vars"] = wandb_vars
    if address:
        try:
            ray.init(address=address, runtime_env=runtime_env or None, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ValueError(f"cannot connect to the Ray cluster at {address!r}: {e}") from None
    else:
        cpus = max(num_cpus or os.cpu_count() or 1, min_cpus)
        ray.init(num_cpus=cpus, include_dashboard=False, runtime_env=runtime_env or None, log_to_driver=True)
    quiet.after_ray(verbose)
    return True


def trial_cpus(algorithm: str, config: Any) -> int:
    """CPUs one trial's placement group asks for (driver bundle + EnvRunners + Learners)."""
    from rllib_safe.algorithms.registry import get_algorithm_class

    request = get_algorithm_class(algorithm).default_resource_request(config)
    return int(sum(bundle.get("CPU", 0) for bundle in request.bundles))


def _callbacks(prefix_trials: bool, wandb_project: str | None, group: str | None) -> list:
    from rllib_safe.studies.progress import ProgressJsonlCallback, ProgressLinesCallback

    callbacks: list = [ProgressLinesCallback(prefix_trials=prefix_trials), ProgressJsonlCallback()]
    if wandb_project:
        callbacks.append(wandb_callback(wandb_project, group))
    return callbacks


def prepare_wandb() -> None:
    """Checks that wandb is installed and, without an API key, sets ``WANDB_MODE=offline``.

    Call it before Ray starts, so that every worker, W&B's logging actors included, inherits the mode. The key is
    read from ``WANDB_API_KEY`` (or ``~/.netrc`` after ``wandb login``) on the driver; on a cluster, pass it to the
    job through its runtime environment (README, "Logging").
    """
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ValueError("--wandb-project needs wandb: pip install -e '.[wandb]'") from None
    if not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") not in ("offline", "disabled"):
        netrc = Path("~/.netrc").expanduser()
        if not (netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")):
            os.environ["WANDB_MODE"] = "offline"
            print("rllib-safe: no W&B API key: logging offline (upload later with `wandb sync <trial>/wandb/...`)")


def wandb_callback(project: str, group: str | None):
    """Tune's ``WandbLoggerCallback`` for ``project`` (call :func:`prepare_wandb` before Ray starts)."""
    prepare_wandb()
    return _wandb_callback_class()(project=project, group=group, log_config=False)


def _wandb_callback_class() -> type:
    from ray.air.integrations.wandb import WandbLoggerCallback

    class WandbCallback(WandbLoggerCallback):
        """Tune's W&B callback that, offline, lets a trial's W&B run finish writing when the trial ends.

        Ray 2.60's Tune syncs the trial directories for the last time *before* it calls ``on_experiment_end``,
        where the W&B callback waits for its logging actors; an offline run's ``run-*.wandb`` file, written when
        the run finishes, then never reaches the storage path. Waiting here (at most a minute) puts it there.
        """

        def log_trial_end(self, trial, failed: bool = False) -> None:
            import ray

            future = self._trial_logging_futures.get(trial)
            self._signal_logging_actor_stop(trial=trial)
            if future is not None and os.environ.get("WANDB_MODE") == "offline":
                ray.wait([future], timeout=60)
            self._cleanup_logging_actors()

    return WandbCallback


def run_experiment(
    experiment: Experiment,
    *,
    resume: bool = False,
    max_concurrent: int | None = None,
    wandb_project: str | None = None,
    wandb_group: str | None = None,
    prefix_trials: bool = True,
    verbose: bool = False,
):
    """Runs (or resumes) one experiment with Tune and returns its ``ResultGrid``.

    Ray must be initialised (:func:`init_ray`). Results, checkpoints, ``progress.jsonl``, ``run.json``,
    TensorBoard events and W&B runs land in ``<storage_path>/<name>/<trial>/``.

    Args:
        experiment: What to run.
        resume: Continue the experiment in ``experiment.path`` (``Tuner.restore``): finished trials are kept as
            they are, unfinished and errored ones continue from their last checkpoint.
        max_concurrent: At most this many trials at once (None: as many as the resources allow).
        wandb_project: Log every trial to this W&B project (one run per trial, grouped by ``wandb_group``).
        wandb_group: W&B group (default: the experiment's name).
        prefix_trials: Prefix progress lines with the trial's swept values (sweeps).
        verbose: Tune's own progress table as well.

    Raises:
        ValueError: ``resume`` without a restorable experiment, a new experiment where one exists already, or a
            storage path that cannot be reached.
    """
    from ray import tune

    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", EXPERIMENT_STATE_PERIOD_S)
    # Tune warns when trial checkpoints force experiment-state snapshots more often than every 5 s: the sweep files
    # choose their checkpoint frequency on purpose (resume after a crash), so the warning is not news here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our callback prints; Tune's table only with --verbose
    path = experiment.path
    try:
        exists = tune.Tuner.can_restore(path)
    except OSError as e:  # an s3:// or gs:// bucket that does not exist or cannot be reached, no credentials, ...
        raise ValueError(f"cannot reach the storage path {experiment.storage_path}: {e}") from None
    if resume:
        if not exists:
            raise ValueError(f"--resume: no Tune experiment to resume at {path}.")
        print(f"rllib-safe: resuming {path} (finished trials are kept, the others continue)", flush=True)
        tuner = tune.Tuner.restore(
            path, trainable=experiment.algorithm, resume_unfinished=True, resume_errored=True,
            param_space=experiment.param_space,
        )  # fmt: skip
        return tuner.fit()
    if exists:
        raise ValueError(
            f"{path} holds a Tune experiment already: add --resume to continue it, or choose another "
            "--storage-path / --output."
        )
    run_config = tune.RunConfig(
        name=experiment.name,
        storage_path=experiment.storage_path,
        stop=experiment.stop,
        callbacks=_callbacks(prefix_trials, wandb_project, wandb_group or experiment.name),
        checkpoint_config=tune.CheckpointConfig(
            checkpoint_frequency=experiment.checkpoint_every,
            checkpoint_at_end=True,
            num_to_keep=experiment.keep_checkpoints,
        ),
        failure_config=tune.FailureConfig(max_failures=experiment.max_failures),
        verbose=1 if verbose else 0,
    )
    tune_config = tune.TuneConfig(
        num_samples=experiment.num_samples,
        max_concurrent_trials=max_concurrent,
        scheduler=experiment.scheduler,
        metric=experiment.metric,
        mode=experiment.mode,
        trial_dirname_creator=_fixed_name(experiment.trial_dirname) if experiment.trial_dirname else None,
    )
    # `restore` is tune.run()'s "path to checkpoint, only makes sense to set if running 1 trial", which the Tuner
    # forwards from its internal `_tuner_kwargs`; the Tuner API has no public spelling of it in Ray 2.60.
    tuner = tune.Tuner(
        experiment.algorithm,
        param_space=experiment.param_space,
        tune_config=tune_config,
        run_config=run_config,
        _tuner_kwargs={"restore": experiment.restore_from} if experiment.restore_from else None,
    )
    return tuner.fit()


def root_cause(error: BaseException) -> BaseException:
    """The exception a trial's error stands for: through Ray's ``RayTaskError.cause`` and ``__cause__`` chains."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        cause = getattr(error, "cause", None) or error.__cause__
        if not isinstance(cause, BaseException):
            break
        error = cause
    return error


def report_errors(results: Any) -> int:
    """Prints one line per failed trial (its error's type and message, where the full error is); returns their count.

    The message of an ``EnvRunnersLostError`` names the checkpoint that resumes the run.
    """
    failed = 0
    for result in results:
        if result.error is None:
            continue
        failed += 1
        error = root_cause(result.error)
        message = str(error).strip().splitlines()
        last = f"{type(error).__name__}: {message[-1]}" if message else type(error).__name__
        print(f"rllib-safe: error: trial {result.path} failed: {last} (full error: {result.path}/error.txt)",
              file=sys.stderr)  # fmt: skip
    return failed
