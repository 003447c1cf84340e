"""Figures of the data audit (notebook 01). Each function returns a matplotlib figure.

Notebooks save them with :func:`pneumoloc.plots.save.save_figure`; nothing here writes
files. Box statistics are shown in *relative* coordinates (box / image size), so
datasets of different resolutions compare on one axis.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.images import read_grayscale
from ..data.splits import SPLITS
from .style import COLUMN_IN, TWO_COLUMN_IN

# Printed sizes: bar, histogram and 2-D histogram figures one column wide with their panels
# stacked, image grids at most the text width; fonts at least 6 pt once printed.
_LABEL_PT, _TICK_PT, _TITLE_PT = 7, 6.5, 7.5

__all__ = [
    "plot_split_counts", "plot_images_per_patient", "plot_leakage", "plot_sample_grid",
    "plot_box_statistics", "relative_boxes", "plot_nih_leakage", "plot_rsna_boxes",
]


def _plt():
    import matplotlib.pyplot as plt  # imported on use: keeps `import pneumoloc` light

    return plt


def _paper_axes(ax, title: str = "", xlabel: str | None = None, ylabel: str | None = None) -> None:
    """Title, labels and ticks at the printed sizes."""
    if title:
        ax.set_title(title, fontsize=_TITLE_PT)
    if xlabel is not None:
        ax.set_xlabel(xlabel, fontsize=_LABEL_PT)
    if ylabel is not None:
        ax.set_ylabel(ylabel, fontsize=_LABEL_PT)
    ax.tick_params(labelsize=_TICK_PT)


def plot_split_counts(images: pd.DataFrame):
    """Images and patients per class and split (two bar panels, one above the other)."""
    plt = _plt()
    fig, axes = plt.subplots(2, 1, figsize=(COLUMN_IN, 4.4), layout="constrained")
    cls = images["label"].map({0: "normal", 1: "pneumonia"})
    for ax, (title, values) in zip(axes, [
        ("images", images.groupby(["split", cls]).size()),
        ("patients", images.groupby(["split", cls])["patient_id"].nunique()),
    ]):
        table = values.unstack(fill_value=0).reindex([s for s in SPLITS if s in values.index.get_level_values(0)])
        table.plot.bar(ax=ax, rot=0, color=["#4c72b0", "#c44e52"][: table.shape[1]], legend=False)
        _paper_axes(ax, f"{title} per class and split", xlabel="")
        ax.margins(y=0.15)  # room for the count above the tallest bar
        for c in ax.containers:
            ax.bar_label(c, fontsize=_TICK_PT)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=_TICK_PT,
               frameon=False)
    return fig


def plot_images_per_patient(images: pd.DataFrame):
    """Histogram of images per patient: why an image-level split leaks."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    counts = images.groupby("patient_id").size()
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.4), layout="constrained")
    bins = np.arange(1, counts.max() + 2) - 0.5
    ax.hist(counts, bins=bins, color="#55a868", rwidth=0.85)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts are whole images
    _paper_axes(ax, f"{len(counts)} patients, {len(images)} images", "images per patient", "patients")
    return fig


def plot_leakage(leakage: dict[str, float]):
    """Share of test images whose patient is also in train, per split strategy."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.4), layout="constrained")
    names, values = list(leakage), [100 * v for v in leakage.values()]
    bars = ax.bar([n.replace(" ", "\n", 1) if len(n) > 14 else n for n in names], values,
                  color=["#c44e52" if v > 0 else "#55a868" for v in values])
    ax.bar_label(bars, labels=[f"{v:.1f}%" for v in values], fontsize=_TICK_PT)
    ax.set_ylim(0, max(values + [1]) * 1.2)
    _paper_axes(ax, "leakage by split strategy", ylabel="test images whose\npatient is in train (%)")
    return fig


def _lung_contour(ax, mask_path: str, shape: tuple[int, int]) -> None:
    mask = read_grayscale(mask_path) > 0
    if mask.shape != shape:
        return
    ax.contour(mask, levels=[0.5], colors="#8fd175", linewidths=0.8)


def plot_sample_grid(images: pd.DataFrame, boxes: pd.DataFrame, n: int = 8, seed: int = 0, ncols: int = 4):
    """Random images (half pneumonia when available) with boxes and lung contours."""
    plt = _plt()
    from matplotlib.patches import Rectangle

    rng = np.random.default_rng(seed)
    pos, neg = images[images["label"] == 1], images[images["label"] == 0]
    k = min(len(pos), n // 2)
    take = pd.concat([pos.iloc[rng.permutation(len(pos))[:k]], neg.iloc[rng.permutation(len(neg))[: n - k]]])
    nrows = max(1, int(np.ceil(len(take) / ncols)))
    side = min(TWO_COLUMN_IN / ncols, 1.8)  # at most the text width
    fig, axes = plt.subplots(nrows, ncols, figsize=(side * ncols, (side + 0.3) * nrows), squeeze=False,
                             layout="constrained")
    by_image = boxes.groupby("image_id")
    for ax, (_, row) in zip(axes.flat, take.iterrows()):
        img = read_grayscale(row["path"])
        ax.imshow(img, cmap="gray", rasterized=True)
        if isinstance(row.get("mask_path"), str):
            _lung_contour(ax, row["mask_path"], img.shape)
        if row["image_id"] in by_image.groups:
            for _, b in by_image.get_group(row["image_id"]).iterrows():
                ax.add_patch(Rectangle((b.x, b.y), b.w, b.h, fill=False, ec="#ff4040", lw=1.2))
        ax.set_title(f"{row['image_id']}\n{'pneumonia' if row['label'] else 'normal'} · {row['split']}",
                     fontsize=6.5)
    for ax in axes.flat:
        ax.axis("off")
    return fig


def relative_boxes(images: pd.DataFrame, boxes: pd.DataFrame) -> pd.DataFrame:
    """Boxes in image-relative units: centre (cx, cy), size (rw, rh), area share."""
    size = images.set_index("image_id")[["width", "height"]]
    b = boxes.join(size, on="image_id")
    return pd.DataFrame({
        "image_id": b["image_id"],
        "cx": (b["x"] + b["w"] / 2) / b["width"], "cy": (b["y"] + b["h"] / 2) / b["height"],
        "rw": b["w"] / b["width"], "rh": b["h"] / b["height"],
        "area": b["w"] * b["h"] / (b["width"] * b["height"]),
    })


def plot_box_statistics(images: pd.DataFrame, boxes: pd.DataFrame, bins: int = 24):
    """Box centre heatmap, box size distribution and boxes per positive image, one above the other."""
    plt = _plt()
    rel = relative_boxes(images, boxes)
    fig, axes = plt.subplots(3, 1, figsize=(COLUMN_IN, 7.6), height_ratios=[1, 1, 0.55], layout="constrained")
    h, _, _ = np.histogram2d(rel["cy"], rel["cx"], bins=bins, range=[[0, 1], [0, 1]])
    im = axes[0].imshow(h, extent=(0, 1, 1, 0), cmap="magma")
    cbar = fig.colorbar(im, ax=axes[0], fraction=0.046)
    cbar.set_label("boxes", fontsize=_LABEL_PT)
    cbar.ax.tick_params(labelsize=_TICK_PT)
    _paper_axes(axes[0], "box centres (relative position)", "x / image width", "y / image height")
    top = float(min(1.0, 1.1 * max(rel["rw"].max(), rel["rh"].max(), 0.05)))
    axes[1].hist2d(rel["rw"], rel["rh"], bins=bins, range=[[0, top], [0, top]], cmap="viridis")
    axes[1].set_aspect("equal")
    _paper_axes(axes[1], f"box sizes (median area {100 * rel['area'].median():.1f}%)", "width / image width",
                "height / image height")
    per_image = boxes.groupby("image_id").size().value_counts().sort_index()
    axes[2].bar(per_image.index.astype(str), per_image.values, color="#8172b2")
    _paper_axes(axes[2], f"{len(boxes)} boxes on {boxes['image_id'].nunique()} images", "boxes per positive image",
                "images")
    return fig


def plot_nih_leakage(audit: pd.DataFrame):
    """Bar chart: leaked test/val images per split scheme (from :func:`pneumoloc.data.xrv_assets.nih_leakage_audit`)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.5), layout="constrained")
    table = audit["leaked_images"].unstack("split")[["val", "test"]]
    table.plot.bar(ax=ax, rot=0, color=["#7aa6c2", "#c2527a"])
    for c in ax.containers:
        ax.bar_label(c, fmt="%d", fontsize=_TICK_PT)
    ax.margins(y=0.15)  # room for the count above the tallest bar
    ax.legend(fontsize=_TICK_PT, frameon=False)
    _paper_axes(ax, "NIH ChestX-ray14: leakage of an image-level\nvs the patient-wise split", "",
                "images whose patient is in train")
    return fig


def plot_rsna_boxes(stats: dict, image_size: int = 1024):
    """RSNA boxes (:func:`pneumoloc.data.xrv_assets.rsna_box_stats`), three panels one above the other:
    boxes per positive image, box width vs height, box centres."""
    plt = _plt()
    boxes = stats["boxes"]
    fig, ax = plt.subplots(3, 1, figsize=(COLUMN_IN, 8.0), height_ratios=[0.55, 1, 1], layout="constrained")
    counts = stats["boxes_per_positive_image"]
    ax[0].bar(counts.index.astype(str), counts.to_numpy(), color="#7aa6c2")
    ax[0].set_yscale("log")
    _paper_axes(ax[0], f"{stats['n_boxes']} boxes on {stats['n_positive_images']} of {stats['n_images']} images",
                "boxes per positive image", "images")
    ax[1].hexbin(boxes["w"], boxes["h"], gridsize=30, mincnt=1, cmap="viridis")
    _paper_axes(ax[1], "box size", "box width (px)", "box height (px)")
    ax[2].hexbin(boxes["cx"], boxes["cy"], gridsize=30, mincnt=1, cmap="magma",
                 extent=(0, image_size, 0, image_size))
    ax[2].set(xlim=(0, image_size), ylim=(image_size, 0), aspect="equal")
    _paper_axes(ax[2], f"box centres ({image_size} px frame)", "x (px)", "y (px)")
    return fig
