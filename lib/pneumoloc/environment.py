"""Where and on what the code runs: project paths, run folders, device, provenance.

Paths. Papermill executes notebooks with an arbitrary working directory, so no module in
this package ever resolves a relative path against ``os.getcwd()`` implicitly: the
project root is found from this file (``lib/pneumoloc/environment.py`` -> two levels up),
or from the ``PNEUMOLOC_ROOT`` environment variable when the package is installed
elsewhere.

A run is a folder ``papermill_runs/<name>/`` whose layout is fixed by
:class:`RunPaths`; figures of that run go to ``figures/<name>/``. Every notebook
receives ``run_dir`` (and optionally ``figures_dir``) as parameters and builds a
``RunPaths`` from them, so the notebooks agree on where artifacts are without
passing file names around.

Device. CUDA when present, CPU otherwise, always overridable (:func:`pick_device`).

Provenance. Every artifact (checkpoint config, metrics JSON, run manifest, figure metadata)
records :func:`provenance` (git commit, package versions) so a number can be traced to the
code that made it; :func:`environment_line` is the one line each notebook prints.
"""
from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

__all__ = ["PACKAGE_DIR", "PROJECT_ROOT", "DATA_DIR", "FIGURES_DIR", "RUNS_DIR", "NOTEBOOKS_DIR", "RunPaths",
           "resolve", "safe_name", "pick_device", "git_commit", "package_versions", "provenance",
           "environment_line", "PACKAGES"]

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = Path(os.environ.get("PNEUMOLOC_ROOT", PACKAGE_DIR.parents[1])).resolve()
DATA_DIR = PROJECT_ROOT / "data"
FIGURES_DIR = PROJECT_ROOT / "figures"
RUNS_DIR = PROJECT_ROOT / "papermill_runs"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"


def resolve(path: str | os.PathLike, base: Path = PROJECT_ROOT) -> Path:
    """Return ``path`` as an absolute path; relative paths are taken from ``base``.

    ``base`` defaults to the project root (never the working directory), so a
    notebook parameter such as ``"data/phantom"`` means the same thing whether the
    notebook runs in JupyterLab or under papermill.
    """
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else (base / p).resolve()


def safe_name(text: str) -> str:
    """A file-name-safe version of ``text`` (model or method names in file names)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


@dataclass(frozen=True)
class RunPaths:
    """The fixed layout of one run's artifacts.

    Attributes:
        root: ``papermill_runs/<name>``; executed notebooks and ``manifest.json``.
        figures: ``figures/<name>``; every exported figure (PDF + PNG).
    """

    root: Path
    figures: Path

    @classmethod
    def from_params(cls, run_dir: str, figures_dir: str = "") -> "RunPaths":
        """Build from notebook parameters; empty ``figures_dir`` -> ``figures/<run name>``."""
        if not run_dir:
            raise ValueError("run_dir is empty: pass e.g. run_dir='papermill_runs/scratch'")
        root = resolve(run_dir, RUNS_DIR.parent)
        figures = resolve(figures_dir) if figures_dir else FIGURES_DIR / root.name
        return cls(root=root, figures=figures)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def manifest(self) -> Path:
        """The run manifest written by :mod:`pneumoloc.runs.runner`."""
        return self.root / "manifest.json"

    # -- notebook 01: the dataset tables and the split -------------------------------
    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def images_table(self) -> Path:
        """Manifest of the dataset with a ``split`` column (CSV)."""
        return self.data / "images.csv"

    @property
    def boxes_table(self) -> Path:
        return self.data / "boxes.csv"

    @property
    def dataset_info(self) -> Path:
        """JSON: reader name, dataset root, reader options, label columns, task."""
        return self.data / "dataset.json"

    # -- notebook 02: one folder per trained model ----------------------------------
    def model_dir(self, model: str) -> Path:
        return self.root / "models" / safe_name(model)

    def best_checkpoint(self, model: str) -> Path:
        """The checkpoint of the best validation epoch; predictions and metrics come from it."""
        return self.model_dir(model) / "best.pt"

    def model_predictions(self, model: str) -> Path:
        """CSV ``image_id, patient_id, split, label, prob`` (+ per finding) and ``checkpoint_sha256``."""
        return self.model_dir(model) / "predictions.csv"

    def model_metrics(self, model: str) -> Path:
        """JSON: test metrics at the validation-chosen thresholds and ``checkpoint_sha256``."""
        return self.model_dir(model) / "metrics.json"

    # -- notebook 03: stored heatmaps ----------------------------------------------
    @property
    def maps(self) -> Path:
        return self.root / "maps"

    # -- notebooks 04 and 05 -----------------------------------------------------
    @property
    def localization(self) -> Path:
        return self.root / "localization"

    @property
    def ensembles(self) -> Path:
        return self.root / "ensembles"

    def ensure(self) -> "RunPaths":
        """Create the run and figure folders; returns self for chaining."""
        for d in (self.root, self.figures, self.data):
            d.mkdir(parents=True, exist_ok=True)
        return self


def pick_device(requested: str = "auto"):
    """Return a ``torch.device``.

    Args:
        requested: ``"auto"`` (CUDA if available, else CPU; the environment variable
            ``PNEUMOLOC_DEVICE`` overrides auto), or any torch device string such as
            ``"cpu"``, ``"cuda"``, ``"cuda:1"``.

    Raises:
        ValueError: a CUDA device was requested on a machine without CUDA.
    """
    import torch

    if requested == "auto":
        requested = os.environ.get("PNEUMOLOC_DEVICE", "auto")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={requested!r} but CUDA is not available here; use device='auto' or 'cpu'")
    return dev


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
    dev = device if device is not None else str(pick_device())
    return (f"python {v['python']} | torch {v['torch']} | timm {v['timm']} | "
            f"grad-cam {v['grad-cam']} | device {dev} | commit {git_commit()[:12]}")
