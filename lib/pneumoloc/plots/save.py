"""The one way figures leave a notebook: :func:`save_figure` writes PDF + PNG.

Figures are written into the run's figure folder (``figures/<run>/``) with the git
commit in the PDF metadata and a PNG at 150 dpi for quick viewing. Notebooks call
:func:`use_run` once (after deriving the run paths) and then ``save_figure(fig, name)``.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..environment import git_commit
from ..storage import atomic_write

__all__ = ["use_run", "save_figure", "figure_dir"]

_FIGURE_DIR: Path | None = None


def use_run(figures: str | os.PathLike) -> Path:
    """Set the folder :func:`save_figure` writes to (created if missing)."""
    global _FIGURE_DIR
    _FIGURE_DIR = Path(figures)
    _FIGURE_DIR.mkdir(parents=True, exist_ok=True)
    return _FIGURE_DIR


def figure_dir() -> Path:
    if _FIGURE_DIR is None:
        raise RuntimeError("no figure folder set: call pneumoloc.plots.save.use_run(run.figures) first")
    return _FIGURE_DIR


def save_figure(fig, name: str, folder: str | os.PathLike | None = None, dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``<folder>/<name>.pdf`` and ``.png`` atomically; returns both paths.

    Args:
        fig: a matplotlib figure (or seaborn grid with a ``.figure``).
        name: file stem, e.g. ``"01_split_counts"``; no extension.
        folder: defaults to the folder set by :func:`use_run`.
        dpi: PNG resolution.
    """
    fig = getattr(fig, "figure", fig)
    if Path(name).suffix.lower() in (".pdf", ".png", ".svg", ".jpg", ".jpeg", ".eps"):
        raise ValueError(f"figure name {name!r} must not have an extension: PDF and PNG are both written")
    out = Path(folder) if folder is not None else figure_dir()
    paths = []
    for ext in ("pdf", "png"):
        meta = {"Subject": f"pneumoloc commit {git_commit()}"} if ext == "pdf" else {"Software": f"pneumoloc {git_commit()}"}
        path = out / f"{name}.{ext}"
        atomic_write(path, lambda f, ext=ext, meta=meta: fig.savefig(
            f, format=ext, dpi=dpi, bbox_inches="tight", metadata=meta))
        paths.append(path)
    return paths
