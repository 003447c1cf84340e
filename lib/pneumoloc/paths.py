"""Where everything lives: one module anchored on the package location.

Papermill executes notebooks with an arbitrary working directory, so no module in
this package ever resolves a relative path against ``os.getcwd()`` implicitly: the
project root is found from this file (``lib/pneumoloc/paths.py`` -> two levels up),
or from the ``PNEUMOLOC_ROOT`` environment variable when the package is installed
elsewhere.

A run is a folder ``papermill_runs/<name>/`` whose layout is fixed by
:class:`RunPaths`; figures of that run go to ``figures/<name>/``. Every notebook
receives ``run_dir`` (and optionally ``figures_dir``) as parameters and builds a
``RunPaths`` from them, so the notebooks agree on where artifacts are without
passing file names around.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PACKAGE_DIR", "PROJECT_ROOT", "DATA_DIR", "FIGURES_DIR", "RUNS_DIR", "NOTEBOOKS_DIR",
    "RunPaths", "resolve", "safe_name",
]

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
        """The run manifest written by :mod:`pneumoloc.runs`."""
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
