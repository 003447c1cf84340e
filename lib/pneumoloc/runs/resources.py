"""What one stage asks of a cluster: the ``resources`` of a run spec.

A spec may give defaults at the top and overrides per notebook entry::

    resources: {partition: gpu, gpus_per_node: 1, cpus_per_task: 8, mem_gb: 32, timeout_min: 120}
    notebooks:
      - notebook: 02_train_backbone
        resources: {gpus_per_node: 4, timeout_min: 600}

Only the Slurm executor reads them (they become ``sbatch`` options through submitit,
https://slurm.schedmd.com/sbatch.html); they never change a stage's results, so they are not
part of its fingerprint. An unknown key, a wrong type or an out-of-range value is an error
naming the spec file, like any other spec mistake.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["RESOURCES", "check_resources", "merge_resources", "stage_timeout_min"]

# key -> (type, minimum or None, what it is); the sbatch option is in the comment
RESOURCES: dict[str, tuple[type, float | None, str]] = {
    "partition": (str, None, "Slurm partition (--partition)"),
    "account": (str, None, "account charged (--account)"),
    "qos": (str, None, "quality of service (--qos)"),
    "gpus_per_node": (int, 0, "GPUs per node (--gpus-per-node)"),
    "cpus_per_task": (int, 1, "CPU cores (--cpus-per-task)"),
    "mem_gb": (float, 0, "memory in GB (--mem); 0 asks for all of a node's memory"),
    "timeout_min": (int, 1, "wall time in minutes (--time); default: the stage's timeout plus 5 min"),
}


def _error(spec_path: Path, where: str, key: str, value: Any) -> str | None:
    kind, low, what = RESOURCES[key]
    if kind is str:
        ok = isinstance(value, str) and value != ""
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    else:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              and value >= low)
    if ok:
        return None
    need = "a non-empty string" if kind is str else f"{'an integer' if kind is int else 'a number'} >= {low}"
    return f"{spec_path}: {where}resources: {key}={value!r} must be {need} ({what})"


def check_resources(spec_path: Path, where: str, value: Any) -> dict[str, Any]:
    """The ``resources`` mapping of a spec or notebook entry, checked; ``{}`` when absent.

    Args:
        spec_path: the spec, named in errors.
        where: ``""`` for the top level, ``"notebook entry '02_train_backbone': "`` for an entry.

    Raises:
        ValueError: not a mapping, an unknown key, or a value of the wrong type or range.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{spec_path}: {where}resources must be a mapping such as "
                         f"{{partition: gpu, gpus_per_node: 1}}, got {value!r}")
    unknown = sorted(set(value) - set(RESOURCES))
    if unknown:
        raise ValueError(f"{spec_path}: {where}resources has unknown keys {unknown}; allowed: {sorted(RESOURCES)}")
    for key, item in value.items():
        error = _error(spec_path, where, key, item)
        if error:
            raise ValueError(error)
    return dict(value)


def merge_resources(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A notebook entry's resources: the spec's defaults updated by the entry's own."""
    return {**defaults, **overrides}


def stage_timeout_min(resources: dict[str, Any], timeout_s: float) -> int:
    """Slurm wall time of a stage: ``timeout_min`` when given, else its notebook timeout plus 5 minutes
    (the job also starts Python and papermill and writes the manifest)."""
    return int(resources.get("timeout_min") or math.ceil(timeout_s / 60) + 5)
