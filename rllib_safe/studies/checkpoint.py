"""Reading RLlib checkpoints without building an Algorithm: the algorithm's name, its config and its iteration."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class CheckpointInfo:
    """What a checkpoint directory holds."""

    path: Path
    algorithm: str
    config: Any
    iteration: int


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or the newest ``checkpoint_*`` directory of a trial directory given instead."""
    path = Path(path).expanduser().resolve()
    if not (path / "class_and_ctor_args.pkl").exists():
        found = sorted(p for p in path.glob("checkpoint_*") if (p / "class_and_ctor_args.pkl").exists())
        if found:
            return found[-1]
    return path


def read_checkpoint(path: str | Path) -> CheckpointInfo:
    """Reads an Algorithm checkpoint (``algo.save_to_path``, a Tune ``checkpoint_*`` directory, ``--checkpoint-every``).

    A trial directory stands for its newest checkpoint (:func:`resolve_checkpoint`).

    Raises:
        ValueError: No RLlib Algorithm checkpoint at ``path``.
    """
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    path = resolve_checkpoint(path)
    ctor_file = path / "class_and_ctor_args.pkl"
    if not ctor_file.exists() or not (path / "learner_group").is_dir():
        raise ValueError(f"no RLlib checkpoint at {path} (expected class_and_ctor_args.pkl and learner_group/ there).")
    import rllib_safe  # noqa: F401  (the classes the pickles name)

    with open(ctor_file, "rb") as f:
        ctor = pickle.load(f)
    args, kwargs = ctor["ctor_args_and_kwargs"]
    state = kwargs.get("config", args[0] if args else None)
    config = AlgorithmConfig.from_state(state) if isinstance(state, dict) else state
    config = config.copy(copy_frozen=False)
    # from_state() leaves the state's "class" entry as an attribute; to_dict() would then carry it, and RLlib reads a
    # config dict with a "class" key as a state (not a to_dict() output) and breaks on it (framework="torch").
    config.__dict__.pop("class", None)
    iteration = 0
    state_file = path / "algorithm_state.pkl"
    if state_file.exists():
        with open(state_file, "rb") as f:
            iteration = int(pickle.load(f).get("training_iteration", 0) or 0)
    return CheckpointInfo(path=path, algorithm=ctor["class"].__name__, config=config, iteration=iteration)
