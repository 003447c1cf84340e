"""Figures of notebook 04, drawn from the tables of :mod:`pneumoloc.localize.report`.

Each function returns a matplotlib figure; the notebook exports it with
:func:`pneumoloc.plots.save.save_figure`. Labels carry the CAM target layer and map size, since a
localization number means little without them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["system_label", "metric_bars", "lar_distribution", "localization_vs_auc", "failure_gallery"]


def system_label(row) -> str:
    """``model / method`` plus the target layer(s) (last path part), native feature size and map size."""
    layer = "+".join(p.split(".")[-1] for p in str(row.get("target_layer", "") or "").split("+") if p)
    features = row.get("feature_size", "")
    features = features if isinstance(features, str) else ""
    size = f"{int(row['map_size'])}px" if pd.notna(row.get("map_size")) else ""
    extra = ", ".join(x for x in (layer, f"{features} -> {size}" if features and size else size) if x)
    return f"{row['model']} / {row['method']}" + (f" ({extra})" if extra else "")


def metric_bars(metrics: pd.DataFrame, names: Sequence[str]):
    """One panel per metric: a bar per model x method with its 95% CI whisker, the same maps
    against shuffled boxes as a hollow marker, and the chance maps as dashed lines."""
    import matplotlib.pyplot as plt

    names = [n for n in names if n in set(metrics["metric"])]
    if not names:
        raise ValueError("none of the requested metrics is in the table")
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names) + 1, 4.2), squeeze=False)
    real = metrics[(metrics["variant"] == "maps") & (metrics["model"] != "chance")]
    for ax, name in zip(axes[0], names):
        d = real[real["metric"] == name].reset_index(drop=True)
        y = np.arange(len(d))
        ax.barh(y, d["value"], xerr=[d["value"] - d["low"], d["high"] - d["value"]], color="C0",
                alpha=0.8, capsize=3)
        shuf = metrics[(metrics["variant"] == "shuffled_boxes") & (metrics["metric"] == name)]
        for i, r in d.iterrows():
            s = shuf[(shuf["model"] == r["model"]) & (shuf["method"] == r["method"])]
            if len(s):
                ax.plot(s["value"].iloc[0], i, "o", mfc="none", mec="k", label="shuffled boxes" if i == 0 else None)
        chance = metrics[(metrics["model"] == "chance") & (metrics["metric"] == name)]
        for k, (_, c) in enumerate(chance.drop_duplicates("method").iterrows()):
            ax.axvline(c["value"], ls="--", color=f"C{k + 1}", label=f"chance: {c['method']}")
        ax.set_yticks(y, [system_label(r) for _, r in d.iterrows()] if ax is axes[0][0] else [""] * len(d))
        ax.set_title(name)
        ax.set_xlim(0, 1.02)
    if axes[0][-1].get_legend_handles_labels()[0]:  # chance lines or shuffled-box marks drawn
        axes[0][-1].legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def lar_distribution(per_image: pd.DataFrame, metric: str = "lar"):
    """Box plots of the per-image ``metric`` (LAR by default) for each model x method; a note
    instead when no image has a value (every map all zero)."""
    import matplotlib.pyplot as plt

    d = per_image[(per_image["variant"] == "maps") & (per_image["metric"] == metric)] if len(per_image) else per_image
    groups = list(d.groupby(["model", "method"], sort=True)) if len(d) else []
    if not groups:  # every map all zero (or none scored): the figure says so
        fig, ax = plt.subplots(figsize=(6, 1.2))
        ax.text(0.5, 0.5, f"{metric}: no image with a nonzero map", ha="center", va="center")
        ax.set_axis_off()
        return fig
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(groups) + 1.5))
    ax.boxplot([g["value"].to_numpy() for _, g in groups], vert=False, showmeans=True)
    ax.set_yticks(np.arange(1, len(groups) + 1), [f"{m} / {k}" for (m, k), _ in groups])
    ax.set_xlabel(f"{metric} per image (share of map energy)")
    ax.set_xlim(0, 1.02)
    fig.tight_layout()
    return fig


def localization_vs_auc(metrics: pd.DataFrame, aucs: pd.Series, metric: str = "energy"):
    """Scatter of a localization metric (with CI) against the classifier's test ROC-AUC."""
    import matplotlib.pyplot as plt

    d = metrics[(metrics["variant"] == "maps") & (metrics["metric"] == metric) & (metrics["model"] != "chance")]
    d = d.assign(auc=d["model"].map(aucs)).dropna(subset=["auc"])
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for k, (method, g) in enumerate(d.groupby("method")):
        ax.errorbar(g["auc"], g["value"], yerr=[g["value"] - g["low"], g["high"] - g["value"]], fmt="o",
                    color=f"C{k}", capsize=3, label=method)
        for _, r in g.iterrows():
            ax.annotate(r["model"], (r["auc"], r["value"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("classifier ROC-AUC (test)")
    ax.set_ylabel(f"{metric} (mean, 95% CI)")
    if len(d):
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def failure_gallery(rows: pd.DataFrame, images: np.ndarray, maps: np.ndarray, box_masks: np.ndarray,
                    lungs: np.ndarray | None = None, metric: str = "energy", cols: int = 4):
    """Worst-localized true positives: each image with its map, the box union (green outline)
    and the lung mask (white outline); ``rows`` from :func:`worst_localized`, arrays row-aligned
    with it (images ``[n, S, S]``, maps/masks ``[n, M, M]``)."""
    import matplotlib.pyplot as plt

    n = len(rows)
    if n == 0:
        raise ValueError("no worst-localized true positives to show")
    r_ = int(np.ceil(n / cols))
    fig, axes = plt.subplots(r_, cols, figsize=(2.6 * cols, 2.8 * r_), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (i, row) in zip(axes.ravel(), enumerate(rows.itertuples())):
        s, m = images[i].shape[-1], maps[i].shape[-1]
        ext = (0, s, s, 0)
        ax.imshow(images[i], cmap="gray", extent=ext)
        ax.imshow(maps[i].astype(np.float32), cmap="jet", alpha=0.4, extent=ext, vmin=0, vmax=1)
        grid = (np.arange(m) + 0.5) * s / m
        ax.contour(grid, grid, box_masks[i].astype(float), levels=[0.5], colors="lime", linewidths=1)
        if lungs is not None:
            ax.contour(grid, grid, lungs[i].astype(float), levels=[0.5], colors="white", linewidths=0.6)
        py, px = np.unravel_index(int(np.argmax(maps[i])), maps[i].shape)
        ax.plot((px + 0.5) * s / m, (py + 0.5) * s / m, "w+", ms=8)
        ax.set_title(f"{row.model}/{row.method}\n{row.image_id} {metric}={row.value:.2f} p={row.prob:.2f}", fontsize=7)
    fig.tight_layout()
    return fig
