"""Studies: Tune sweeps from YAML, tables and plots in the papers' layout, evaluation (above the algorithms).

* :mod:`~rllib_safe.studies.experiment`: the one Tune code path of ``rllib-safe train`` and ``rllib-safe sweep``;
* :mod:`~rllib_safe.studies.spec`: sweep files (``tune_configs/*.yaml``);
* :mod:`~rllib_safe.studies.progress`: progress rows (``progress.jsonl``), progress lines, their Tune callbacks;
* :mod:`~rllib_safe.studies.score`: ``safe_score``, the one constrained metric for ASHA/PBT;
* :mod:`~rllib_safe.studies.results`, :mod:`~rllib_safe.studies.table`, :mod:`~rllib_safe.studies.plot`: reading
  run directories, the papers' tables and learning curves;
* :mod:`~rllib_safe.studies.evaluate`: episodes of a checkpoint, cost tail, video;
* :mod:`~rllib_safe.studies.quiet`: third-party notices off unless ``--verbose``.

Nothing below this package imports it.
"""

from rllib_safe.studies.score import add_safe_score, safe_score

__all__ = ["add_safe_score", "safe_score"]
