"""Algorithm names of rllib_safe and their registration as Tune trainables.

``tune.Tuner("MAPPOLagrangian", param_space=config)`` and ``rllib-safe train --algo mappo_lagrangian`` both resolve
names here; lookups are case-insensitive and ignore ``-``/``_``.
"""

from __future__ import annotations

import importlib

#: Registered name -> (module, Algorithm class, Config class).
ALGORITHMS: dict[str, tuple[str, str, str]] = {
    "MAPPO": ("rllib_safe.algorithms.mappo.mappo", "MAPPO", "MAPPOConfig"),
    "HAPPO": ("rllib_safe.algorithms.happo.happo", "HAPPO", "HAPPOConfig"),
    "MAPPOLagrangian": (
        "rllib_safe.algorithms.mappo_lagrangian.mappo_lagrangian",
        "MAPPOLagrangian",
        "MAPPOLagrangianConfig",
    ),
    "MAFOCOPS": ("rllib_safe.algorithms.mafocops.mafocops", "MAFOCOPS", "MAFOCOPSConfig"),
    "MACPO": ("rllib_safe.algorithms.macpo.macpo", "MACPO", "MACPOConfig"),
    "HASAC": ("rllib_safe.algorithms.hasac.hasac", "HASAC", "HASACConfig"),
    "ConstrainedHASAC": (
        "rllib_safe.algorithms.constrained_hasac.constrained_hasac",
        "ConstrainedHASAC",
        "ConstrainedHASACConfig",
    ),
    "WCMASAC": ("rllib_safe.algorithms.wcmasac.wcmasac", "WCMASAC", "WCMASACConfig"),
}


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def canonical_name(name: str) -> str:
    """The registered spelling of an algorithm name (e.g. ``"mappo_lagrangian"`` -> ``"MAPPOLagrangian"``).

    Raises:
        ValueError: For an unknown name, listing the known ones.
    """
    for registered in ALGORITHMS:
        if _key(registered) == _key(name):
            return registered
    raise ValueError(f"Unknown algorithm {name!r}. Known algorithms: {', '.join(ALGORITHMS)}.")


def get_algorithm_class(name: str) -> type:
    """The Algorithm class of a (case-insensitive) name."""
    module, algo_cls, _ = ALGORITHMS[canonical_name(name)]
    return getattr(importlib.import_module(module), algo_cls)


def get_config(name: str):
    """A fresh default config of a (case-insensitive) algorithm name."""
    module, _, config_cls = ALGORITHMS[canonical_name(name)]
    return getattr(importlib.import_module(module), config_cls)()


def register_algorithms() -> None:
    """Registers every algorithm name with Tune's trainable registry (idempotent)."""
    from ray.tune.registry import register_trainable

    for name in ALGORITHMS:
        register_trainable(name, get_algorithm_class(name))
