"""The Grad-CAM gallery: cases by outcome, maps overlaid on the radiograph.

Rows are cases grouped TP / FP / FN / TN, each group its most confident cases;
columns are backbones or methods (any ``{label: MapSet}``). Every panel shows the map
over the squashed image with the ground-truth boxes and the lung contour, probability
and label in the title, one colormap and one colorbar for the whole figure. A gallery is at
most the text width of a two-column paper and 9 in tall: panels shrink to fit, and past
``max_rows`` cases or ``max_columns`` columns the figure shows the first ones and says so.
Panel drawing (:func:`draw_panel`) is shared with the widget browser.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["OUTCOMES", "CMAP", "outcomes", "select_cases", "load_predictions", "CaseData", "load_case_data",
           "draw_panel", "gallery_figure", "colorbar_mappable"]

OUTCOMES = ("TP", "FP", "FN", "TN")
CMAP = "jet"  # one colormap for every figure and the browser


def outcomes(labels, probs, threshold: float = 0.5) -> np.ndarray:
    """``TP/FP/FN/TN`` per image for predictions ``prob >= threshold``."""
    y = np.asarray(labels).astype(int)
    pred = np.asarray(probs, float) >= threshold
    return np.select([(y == 1) & pred, (y == 0) & pred, (y == 1) & ~pred], ["TP", "FP", "FN"], "TN")


def load_predictions(run, model: str, split: str = "test") -> pd.DataFrame:
    """Notebook 02's ``predictions.csv`` rows of ``split`` (``image_id, label, prob, ...``), refused
    when made by another checkpoint than the model's ``best.pt`` (:mod:`pneumoloc.models.outputs`)."""
    from ..models.outputs import load_predictions as load_model_predictions

    pred = load_model_predictions(run, model)
    pred = pred[pred["split"] == split] if split != "all" else pred
    if pred.empty:
        raise ValueError(f"{run.model_predictions(model)} has no rows for split={split!r}")
    return pred.reset_index(drop=True)


def select_cases(predictions: pd.DataFrame, n_per_outcome: int, threshold: float = 0.5,
                 image_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``n_per_outcome`` most confident cases of each outcome, in TP, FP, FN, TN order.

    Confidence is ``prob`` for predicted positives and ``1 - prob`` for predicted negatives.
    ``image_ids`` restricts the choice (e.g. to images that have stored maps).
    """
    df = predictions.copy()
    if image_ids is not None:
        df = df[df["image_id"].isin(set(map(str, image_ids)))]
    df["outcome"] = outcomes(df["label"], df["prob"], threshold)
    df["confidence"] = np.where(df["prob"] >= threshold, df["prob"], 1 - df["prob"])
    parts = [df[df["outcome"] == o].sort_values("confidence", ascending=False, kind="stable").head(n_per_outcome)
             for o in OUTCOMES]
    return pd.concat(parts, ignore_index=True)


@dataclass
class CaseData:
    """Pixels and ground truth of some images at a display size, row-aligned with ``image_ids``."""

    image_ids: np.ndarray
    images: np.ndarray  # uint8 [n, S, S], squashed
    boxes: list  # [k, 4] arrays of x, y, w, h in the S x S frame
    lungs: np.ndarray | None  # bool [n, S, S], or None without lung masks

    def row(self, image_id: str) -> int:
        return int(np.flatnonzero(self.image_ids == str(image_id))[0])


def load_case_data(tables, image_ids: Sequence[str], size: int, progress: bool = False) -> CaseData:
    """Cached pixels, boxes scaled to ``size`` and (when the dataset has them) lung masks."""
    from ..data.cache import cached_images
    from ..localize.metrics import boxes_by_image
    from ..localize.lung_sources import lung_masks

    ids = [str(i) for i in image_ids]
    images = tables.images.set_index("image_id", drop=False).loc[ids].reset_index(drop=True)
    pixels = np.asarray(cached_images(images, size, progress=progress))
    scale = np.stack([size / images["width"], size / images["height"]] * 2, 1).astype(float)
    boxes = [b * scale[i] for i, b in enumerate(boxes_by_image(tables.boxes, ids))]
    lungs = lung_masks("dataset", images, size).masks if tables.has_masks else None
    return CaseData(np.asarray(ids), pixels, boxes, lungs)


def colorbar_mappable():
    """The shared colormap on [0, 1] without the overlay's transparency (for colorbars)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    return ScalarMappable(norm=Normalize(0, 1), cmap=CMAP)


def draw_panel(ax, image: np.ndarray, heat: np.ndarray | None, *, boxes=(), lung: np.ndarray | None = None,
               alpha: float = 0.5, show_boxes: bool = True, show_lung: bool = True,
               contour: float | None = None, title: str = "", fontsize: float = 8, linewidth: float = 1.0):
    """Overlay ``heat`` (any M x M in [0, 1]) on ``image`` (S x S); returns the heat image artist.

    Boxes are ``x, y, w, h`` in the S x S frame; ``contour`` draws the map's level set at
    that value (the thresholded region); ``lung`` draws the lung outline.
    """
    from matplotlib.patches import Rectangle

    s = image.shape[0]
    extent = (0, s, s, 0)  # map and image share the squashed frame whatever their resolutions
    # rasterized: a PDF stores each panel's pixels once instead of vector cells
    ax.imshow(image, cmap="gray", extent=extent, interpolation="bilinear", rasterized=True)
    art = None
    if heat is not None:
        art = ax.imshow(heat, cmap=CMAP, vmin=0, vmax=1, alpha=alpha, extent=extent, interpolation="bilinear",
                        rasterized=True)
        if contour is not None and heat.max() > contour:
            m = heat.shape[0]
            centres = (np.arange(m) + 0.5) * s / m
            ax.contour(centres, centres, heat, levels=[contour], colors="white", linewidths=linewidth)
    if show_lung and lung is not None and lung.any():
        c = np.arange(lung.shape[0]) + 0.5
        ax.contour(c * s / lung.shape[0], c * s / lung.shape[0], lung.astype(float), levels=[0.5],
                   colors="cyan", linewidths=0.8 * linewidth)
    if show_boxes:
        for x, y, w, h in np.asarray(boxes, float).reshape(-1, 4):
            ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="lime", linewidth=1.2 * linewidth))
    ax.set_xlim(0, s)
    ax.set_ylim(s, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)
    return art


def _column_label(label: str) -> str:
    """A backbone or a method as the literature writes it (``resnet18`` -> ResNet-18, ``gradcam@layer3``
    -> Grad-CAM (layer3)), wrapped to fit a narrow panel."""
    import textwrap

    from .style import MODEL_NAMES, method_label, model_label

    name = model_label(label) if label in MODEL_NAMES else method_label(label)
    return "\n".join(textwrap.wrap(name, 14))


def gallery_figure(cases: pd.DataFrame, columns: Mapping[str, object], data: CaseData,
                   probs: Mapping[str, Mapping[str, float]] | None = None, alpha: float = 0.5,
                   panel_size: float = 1.6, contour: float | None = None, max_rows: int = 8, max_columns: int = 8,
                   title: str = ""):
    """Gallery of ``cases`` (from :func:`select_cases`) x ``columns`` (label -> MapSet), at most
    :data:`~pneumoloc.plots.style.TWO_COLUMN_IN` wide and :data:`~pneumoloc.plots.style.MAX_HEIGHT_IN`
    tall (panels at most ``panel_size`` inches).

    Args:
        probs: per column label, ``image_id -> P(pneumonia)`` (columns = backbones); default:
            the cases' own ``prob``.
        contour: also draw each map's level set at this value.
        max_rows, max_columns: the first cases and columns shown; a line below says how many of
            how many when either is cut.
        title: the figure's title. The layout is computed once here and then fixed, since
            constrained layout of dozens of panels would otherwise be solved again by every
            ``savefig`` (PDF and PNG); set the title here rather than on the returned figure.
    """
    import matplotlib.pyplot as plt

    from .style import MAX_HEIGHT_IN, TWO_COLUMN_IN

    if cases.empty:
        raise ValueError("no cases to show: the split has no predictions with stored maps")
    labels = list(columns)[:max_columns]
    shown = cases.head(max_rows)
    side = min(panel_size, (TWO_COLUMN_IN - 0.9) / len(labels), (MAX_HEIGHT_IN - 0.8) / len(shown) - 0.12)
    fig, axes = plt.subplots(len(shown), len(labels), squeeze=False, layout="constrained",
                             figsize=(side * len(labels) + 0.9, (side + 0.12) * len(shown) + 0.6))
    for r, case in enumerate(shown.itertuples(index=False)):
        i = data.row(case.image_id)
        for c, label in enumerate(labels):
            p = probs[label][case.image_id] if probs else case.prob
            head = f"{_column_label(label)}\n{case.outcome} p={p:.2f} y={int(case.label)}" if r == 0 else \
                f"{case.outcome} p={p:.2f} y={int(case.label)}"
            heat = columns[label].take([case.image_id])[0]
            draw_panel(axes[r, c], data.images[i], heat, boxes=data.boxes[i],
                       lung=None if data.lungs is None else data.lungs[i], alpha=alpha,
                       contour=contour, title=head, fontsize=6, linewidth=0.7)
        axes[r, 0].set_ylabel(f"{case.outcome}\n{case.image_id}", fontsize=6)
    bar = fig.colorbar(colorbar_mappable(), ax=axes.ravel().tolist(), fraction=0.03, pad=0.01, shrink=0.6)
    bar.set_label("map (min-max per image)", fontsize=6)
    bar.ax.tick_params(labelsize=6)
    if len(shown) < len(cases) or len(labels) < len(columns):
        fig.supxlabel(f"{len(shown)} of {len(cases)} cases and {len(labels)} of {len(columns)} columns shown",
                      fontsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    return fig
