"""Quiet output: the third-party notices that precede every run are dropped unless ``--verbose``.

Only the lines listed in :data:`NOISE` go, each matched by a fixed piece of its text; every other warning (ours,
Ray's, RLlib's, from the driver or streamed from a worker) still shows. Where they come from:

* gymnasium-robotics 1.4.2 prints a notice about the Adroit hand tasks to stderr whenever it is imported (through
  ``farama_notifications``), in the driver and in every worker that builds a MaMuJoCo task;
* RLlib logs that the algorithm runs on the new API stack (``AlgorithmConfig.validate``);
* RLlib 2.60's ``RLModule.__init__`` builds the deprecated ``RLModuleConfig`` for *every* module (rl_module.py:463),
  which logs "``RLModule(config=[RLModuleConfig object])`` has been deprecated" — RLlib's own call, not one of ours
  (our modules are built with ``observation_space=``, ``action_space=``, ``model_config=``; checked by a test);
* Tune logs "Install gputil for GPU system monitoring";
* Ray's core worker logs (C++) that an EnvRunner actor "has constructor arguments in the object store and
  max_restarts > 0" (RLlib restarts failed EnvRunners);
* Ray logs its token-authentication notice, and "Started a local Ray instance";
* Tune logs that a trial's setup was slow, each checkpoint it wrote and, at the end, that it wrote its result files
  (our own lines say where the results and the checkpoint are), and the traceback of a failed trial (it is in the
  trial's ``error.txt``; our one error line gives the error's type and message and says where that file is).

After the experiment, :func:`mute_workers` stops the worker output altogether: what actors print while Ray shuts
them down (RLlib's ``EnvRunner.__del__`` reporting the ``SystemExit`` of its own shutdown) is not news.

Lines from the driver's own loggers are filtered by a :class:`logging.Filter` on every handler; lines streamed from
workers are filtered where the driver prints them (Ray's log stream dispatcher, the one place all worker output
passes; if a future Ray moves it, the lines simply show again); lines that Ray's C++ core worker in the driver writes
straight to file descriptor 2 (the same ``max_restarts`` notice, for actors the driver creates itself, such as W&B's
logging actor) pass through :class:`StderrFilter` while Ray runs. W&B's own terminal output is off
(``WANDB_SILENT=true``) unless ``--verbose``; its run files are written all the same.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading

#: Fixed pieces of the third-party lines that are dropped by default.
NOISE: tuple[str, ...] = (
    "environment's reward functions were updated in v1.2.1",  # gymnasium-robotics' Adroit notice
    "on the new API stack! This is the new default behavior",  # RLlib's new-API-stack notice
    "`RLModule(config=[RLModuleConfig object])` has been deprecated",  # RLlib's own RLModuleConfig
    "Install gputil for GPU system monitoring",
    "has constructor arguments in the object store and max_restarts > 0",  # Ray core worker (C++)
    "Token authentication is enabled for this Ray cluster",
    "Generated new authentication token",
    "Started a local Ray instance",
    "Trainable.setup took",  # Tune: a slow trial start (EnvRunner actors starting on a busy machine)
    "Checkpoint successfully created at",  # Tune, once per checkpoint (our last lines say where it is)
    "Wrote the latest version of all result files and experiment state",  # Tune, at the end
    "Restoring the run from the latest experiment state file",  # Tune, on --resume (we say so ourselves)
    "from checkpoint: Checkpoint(",  # Tune's "Restored on <ip> from checkpoint: ..." (train --restore, resume)
    # Tune logs a failed trial's whole traceback; Tune writes it to <trial>/error.txt, and our one line (the error's
    # type and message, e.g. EnvRunnersLostError naming its checkpoint) says where.
    "Trial task failed for trial",
)
_PATTERN = re.compile("|".join(re.escape(piece) for piece in NOISE))


def is_noise(line: str) -> bool:
    """True for a line of :data:`NOISE`."""
    return _PATTERN.search(line) is not None


class NoiseFilter(logging.Filter):
    """Drops log records whose message is one of :data:`NOISE`."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for noise."""
        try:
            return not is_noise(record.getMessage())
        except Exception:  # a record whose message cannot be formatted is not ours to judge
            return True


_FILTER = NoiseFilter()


def _filter_handlers() -> None:
    loggers = [logging.getLogger()] + [
        logger for logger in logging.root.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)


def _drop_farama_notice() -> None:
    try:
        from farama_notifications import notifications
    except ImportError:
        return
    notifications.pop("gymnasium_robotics", None)


def _filter_worker_stream() -> None:
    """Wraps Ray's driver-side printer of worker output so that noise lines are dropped."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

        with dispatcher._lock:
            for i, (name, handle) in enumerate(dispatcher.handlers):
                if name == "ray_print_logs" and not getattr(handle, "_drops_noise", False):
                    dispatcher.handlers[i] = (name, _without_noise(handle))
    except Exception:  # pragma: no cover - a Ray without this dispatcher: the lines show, nothing breaks
        return


def _without_noise(handle):
    def print_without_noise(data: dict) -> None:
        lines = [line for line in data.get("lines", []) if not is_noise(line)]
        if lines:
            handle({**data, "lines": lines})

    print_without_noise._drops_noise = True
    return print_without_noise


class StderrFilter:
    """Drops noise lines written to file descriptor 2 (also by C code) while active; everything else passes."""

    def __init__(self) -> None:
        self._saved: int | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Routes fd 2 through a pipe read by a thread that forwards every line but noise."""
        if self._saved is not None:
            return
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        self._saved = os.dup(2)
        os.dup2(write_end, 2)
        os.close(write_end)
        self._thread = threading.Thread(target=self._pump, args=(read_end, self._saved), daemon=True)
        self._thread.start()

    @staticmethod
    def _pump(read_end: int, out: int) -> None:
        pending = b""
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = [line for line in lines if not is_noise(line.decode("utf-8", "replace"))]
            if kept:
                os.write(out, b"\n".join(kept) + b"\n")
        if pending and not is_noise(pending.decode("utf-8", "replace")):
            os.write(out, pending)
        os.close(read_end)

    def stop(self) -> None:
        """Restores fd 2 (the pump thread forwards what is left, then ends)."""
        if self._saved is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # closes the pipe's last write end: the pump reads EOF
        if self._thread is not None:
            self._thread.join(timeout=5)
        os.close(self._saved)
        self._saved, self._thread = None, None


_STDERR = StderrFilter()


def mute_workers(verbose: bool) -> None:
    """Stops printing worker output on the driver (call after the experiment, before ``ray.shutdown()``)."""
    if verbose:
        return
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

        dispatcher.remove_handler("ray_print_logs")
    except Exception:  # pragma: no cover
        return


def before_ray(verbose: bool) -> None:
    """Call once before Ray starts (and before tasks are imported): filters the driver's own noise."""
    if verbose:
        return
    os.environ.setdefault("WANDB_SILENT", "true")
    _drop_farama_notice()
    import ray  # noqa: F401  (its loggers and handlers exist after import)
    import ray.rllib  # noqa: F401
    import ray.tune  # noqa: F401

    _filter_handlers()


def after_ray(verbose: bool) -> None:
    """Call once after ``ray.init``: filters the noise in what workers print to the driver and in fd 2."""
    if verbose:
        return
    _filter_handlers()
    _filter_worker_stream()
    _STDERR.start()


def after_run(verbose: bool) -> None:
    """Call once after the experiment, before ``ray.shutdown()``: worker output off, fd 2 restored."""
    mute_workers(verbose)
    _STDERR.stop()
