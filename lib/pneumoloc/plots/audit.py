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

__all__ = [
    "plot_split_counts", "plot_images_per_patient", "plot_leakage", "plot_sample_grid",
    "plot_box_statistics", "relative_boxes", "plot_nih_leakage", "plot_rsna_boxes",
]


def _plt():
    import matplotlib.pyplot as plt  # imported on use: keeps `import pneumoloc` light

    return plt


def plot_split_counts(images: pd.DataFrame):
    """Images and patients per class and split (two bar panels)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    cls = images["label"].map({0: "normal", 1: "pneumonia"})
    for ax, (title, values) in zip(axes, [
        ("images", images.groupby(["split", cls]).size()),
        ("patients", images.groupby(["split", cls])["patient_id"].nunique()),
    ]):
        table = values.unstack(fill_value=0).reindex([s for s in SPLITS if s in values.index.get_level_values(0)])
        table.plot.bar(ax=ax, rot=0, color=["#4c72b0", "#c44e52"][: table.shape[1]])
        ax.set_title(f"{title} per class and split")
        ax.set_xlabel("")
        for c in ax.containers:
            ax.bar_label(c, fontsize=7)
    fig.tight_layout()
    return fig


def plot_images_per_patient(images: pd.DataFrame):
    """Histogram of images per patient: why an image-level split leaks."""
    plt = _plt()
    counts = images.groupby("patient_id").size()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    bins = np.arange(1, counts.max() + 2) - 0.5
    ax.hist(counts, bins=bins, color="#55a868", rwidth=0.85)
    ax.set_xlabel("images per patient")
    ax.set_ylabel("patients")
    ax.set_title(f"{len(counts)} patients, {len(images)} images")
    fig.tight_layout()
    return fig


def plot_leakage(leakage: dict[str, float]):
    """Share of test images whose patient is also in train, per split strategy."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    names, values = list(leakage), [100 * v for v in leakage.values()]
    bars = ax.bar(names, values, color=["#c44e52" if v > 0 else "#55a868" for v in values])
    ax.bar_label(bars, labels=[f"{v:.1f}%" for v in values])
    ax.set_ylabel("test images whose patient is in train (%)")
    ax.set_ylim(0, max(values + [1]) * 1.2)
    ax.set_title("leakage by split strategy")
    fig.tight_layout()
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
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.8 * nrows), squeeze=False)
    by_image = boxes.groupby("image_id")
    for ax, (_, row) in zip(axes.flat, take.iterrows()):
        img = read_grayscale(row["path"])
        ax.imshow(img, cmap="gray")
        if isinstance(row.get("mask_path"), str):
            _lung_contour(ax, row["mask_path"], img.shape)
        if row["image_id"] in by_image.groups:
            for _, b in by_image.get_group(row["image_id"]).iterrows():
                ax.add_patch(Rectangle((b.x, b.y), b.w, b.h, fill=False, ec="#ff4040", lw=1.2))
        ax.set_title(f"{row['image_id']}\n{'pneumonia' if row['label'] else 'normal'} · {row['split']}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
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
    """Box centre heatmap, box size distribution and boxes per positive image."""
    plt = _plt()
    rel = relative_boxes(images, boxes)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    h, _, _ = np.histogram2d(rel["cy"], rel["cx"], bins=bins, range=[[0, 1], [0, 1]])
    im = axes[0].imshow(h, extent=(0, 1, 1, 0), cmap="magma")
    fig.colorbar(im, ax=axes[0], fraction=0.046, label="boxes")
    axes[0].set_title("box centres (relative position)")
    top = float(min(1.0, 1.1 * max(rel["rw"].max(), rel["rh"].max(), 0.05)))
    axes[1].hist2d(rel["rw"], rel["rh"], bins=bins, range=[[0, top], [0, top]], cmap="viridis")
    axes[1].set_xlabel("width / image width")
    axes[1].set_ylabel("height / image height")
    axes[1].set_title(f"box sizes (median area {100 * rel['area'].median():.1f}%)")
    per_image = boxes.groupby("image_id").size().value_counts().sort_index()
    axes[2].bar(per_image.index.astype(str), per_image.values, color="#8172b2")
    axes[2].set_xlabel("boxes per positive image")
    axes[2].set_title(f"{len(boxes)} boxes on {boxes['image_id'].nunique()} images")
    fig.tight_layout()
    return fig


def plot_nih_leakage(audit: pd.DataFrame):
    """Bar chart: leaked test/val images per split scheme (from :func:`pneumoloc.data.xrv_assets.nih_leakage_audit`)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    table = audit["leaked_images"].unstack("split")[["val", "test"]]
    table.plot.bar(ax=ax, rot=0, color=["#7aa6c2", "#c2527a"])
    for c in ax.containers:
        ax.bar_label(c, fmt="%d", fontsize=8)
    ax.set_ylabel("images whose patient is in train")
    ax.set_xlabel("")
    ax.set_title("NIH ChestX-ray14: leakage of image-level vs patient-wise split")
    fig.tight_layout()
    return fig


def plot_rsna_boxes(stats: dict, image_size: int = 1024):
    """RSNA boxes (:func:`pneumoloc.data.xrv_assets.rsna_box_stats`), three panels: boxes per positive image, box width vs height, box centres."""
    plt = _plt()
    boxes = stats["boxes"]
    fig, ax = plt.subplots(1, 3, figsize=(11, 3.4))
    counts = stats["boxes_per_positive_image"]
    ax[0].bar(counts.index.astype(str), counts.to_numpy(), color="#7aa6c2")
    ax[0].set(xlabel="boxes per positive image", ylabel="images", yscale="log",
              title=f"{stats['n_boxes']} boxes on {stats['n_positive_images']} of {stats['n_images']} images")
    ax[1].hexbin(boxes["w"], boxes["h"], gridsize=30, mincnt=1, cmap="viridis")
    ax[1].set(xlabel="box width (px)", ylabel="box height (px)", title="box size")
    ax[2].hexbin(boxes["cx"], boxes["cy"], gridsize=30, mincnt=1, cmap="magma",
                 extent=(0, image_size, 0, image_size))
    ax[2].set(xlim=(0, image_size), ylim=(image_size, 0), aspect="equal", xlabel="x (px)", ylabel="y (px)",
              title="box centres (1024 px frame)")
    fig.tight_layout()
    return fig
