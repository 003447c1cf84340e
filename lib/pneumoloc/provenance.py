"""Where a result came from: git commit, package versions, device.

Every artifact (checkpoint config, metrics JSON, run manifest, figure metadata)
records :func:`provenance` so a number can be traced to the code that made it.
"""
from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib import metadata

from .paths import PROJECT_ROOT

__all__ = ["git_commit", "package_versions", "provenance", "environment_line", "PACKAGES"]

PACKAGES = (
    "pneumoloc", "torch", "torchvision", "timm", "grad-cam", "captum", "numpy", "pandas",
    "scikit-learn", "pydicom", "torchxrayvision", "papermill",
)


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The project's HEAD commit, with ``+dirty`` when the work tree has changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def provenance() -> dict:
    """A small dict to store with any artifact."""
    return {"git_commit": git_commit(), "versions": package_versions()}


def environment_line(device: str | None = None) -> str:
    """One line for the top of each notebook: versions, device, commit."""
    v = package_versions(("torch", "timm", "grad-cam"))
    dev = device if device is not None else _default_device()
    return (f"python {v['python']} | torch {v['torch']} | timm {v['timm']} | "
            f"grad-cam {v['grad-cam']} | device {dev} | commit {git_commit()[:12]}")


def _default_device() -> str:
    try:
        from .devices import pick_device
    except ImportError:  # pragma: no cover - devices is part of the package
        return "cpu"
    return str(pick_device())
