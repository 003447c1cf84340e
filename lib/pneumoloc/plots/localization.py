"""Figures of notebook 04, drawn from the tables of :mod:`pneumoloc.localize.report`.

Each function returns a matplotlib figure; the notebook exports it with
:func:`pneumoloc.plots.save.save_figure`. Labels carry the CAM target layer and map size, since a
localization number means little without them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["system_label", "metric_label", "METRIC_LABELS", "metric_bars", "lar_distribution", "localization_vs_auc", "failure_gallery"]


def system_label(row) -> str:
    """``model / method`` plus the target layer(s) (last path part), native feature size and map size."""
    layer = "+".join(p.split(".")[-1] for p in str(row.get("target_layer", "") or "").split("+") if p)
    features = row.get("feature_size", "")
    features = features if isinstance(features, str) else ""
    size = f"{int(row['map_size'])}px" if pd.notna(row.get("map_size")) else ""
    extra = ", ".join(x for x in (layer, f"{features} -> {size}" if features and size else size) if x)
    return f"{row['model']} / {row['method']}" + (f" ({extra})" if extra else "")


# Printed names of the localization metrics (pneumoloc.localize.report); "@rule" is appended as "(rule)".
METRIC_LABELS = {"lar": "LAR", "hit": "hit rate", "energy": "box energy", "lung_energy": "lung-norm. box energy",
                 "auprc": "loc. AUPRC", "iou": "IoU", "dice": "Dice", "rsna": "RSNA score",
                 "pointwise_map": "pointwise mAP"}
COLUMN_IN = 3.5  # one column of a two-column paper, inches


def metric_label(name: str) -> str:
    """``iou@otsu`` -> "IoU (otsu)"; ``lar`` -> "LAR"."""
    base, _, rule = name.partition("@")
    return METRIC_LABELS.get(base, base) + (f" ({rule})" if rule else "")


def metric_bars(metrics: pd.DataFrame, names: Sequence[str], ncols: int = 2, width: float = COLUMN_IN):
    """One panel per metric, one column wide: models on the y axis (:func:`~pneumoloc.plots.style.model_order`),
    each method a coloured point with its 95% CI (layer variants by marker), the same maps on
    shuffled boxes as a small black x, and each chance map as a grey line styled by
    :data:`~pneumoloc.plots.style.CHANCE_STYLE`; one shared legend below the panels."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from .style import (CHANCE_STYLE, chance_label, method_color, method_label, method_order, model_label,
                        model_order, variant_marker)

    names = [n for n in names if n in set(metrics["metric"])]
    if not names:
        raise ValueError("none of the requested metrics is in the table")
    real = metrics[(metrics["variant"] == "maps") & (metrics["model"] != "chance")]
    models, methods = model_order(real["model"]), method_order(real["method"])
    nrows, ncols = -(-len(names) // min(ncols, len(names))), min(ncols, len(names))
    step = min(0.8 / max(len(methods), 1), 0.25)  # vertical spread of the methods within a model's band
    panel_h = max(len(models), 1) * max(0.1 * len(methods), 0.22) + 0.45
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, nrows * panel_h + 0.35 * (1 + len(methods) // 2)),
                             sharey=True, squeeze=False, layout="constrained")
    chance_drawn: set[str] = set()
    for ax, name in zip(axes.ravel(), names):
        d = real[real["metric"] == name]
        for j, method in enumerate(methods):
            g = d[d["method"] == method].set_index("model").reindex(models).dropna(subset=["value"])
            y = np.array([models.index(mo) for mo in g.index]) + (j - (len(methods) - 1) / 2) * step
            ax.errorbar(g["value"], y, xerr=[g["value"] - g["low"], g["high"] - g["value"]], fmt=variant_marker(
                method, methods), ms=3, lw=0.8, color=method_color(method), capsize=0)
            shuf = metrics[(metrics["variant"] == "shuffled_boxes") & (metrics["metric"] == name)
                           & (metrics["method"] == method)].set_index("model").reindex(g.index)
            ax.plot(shuf["value"], y, "x", ms=3, mew=0.7, color="k")
        for _, c in metrics[(metrics["model"] == "chance") & (metrics["metric"] == name)].drop_duplicates("method").iterrows():
            style, grey = CHANCE_STYLE.get(c["method"], (":", "0.6"))
            ax.axvline(c["value"], ls=style, color=grey, lw=1)
            chance_drawn.add(c["method"])
        ax.set_title(metric_label(name), fontsize=8)
        ax.set_xlim(0, 1.02)
        ax.set_xticks([0, 0.5, 1], ["0", ".5", "1"])
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", lw=0.3, alpha=0.5)
    for ax in axes.ravel()[len(names):]:
        ax.set_axis_off()
    axes[0, 0].set_yticks(range(len(models)), [model_label(m) for m in models])
    axes[0, 0].set_ylim(len(models) - 0.5, -0.5)  # first model on top
    handles = [Line2D([], [], ls="none", marker=variant_marker(m, methods), ms=4, color=method_color(m),
                      label=method_label(m)) for m in methods]
    handles += [Line2D([], [], ls=CHANCE_STYLE.get(c, (":", "0.6"))[0], color=CHANCE_STYLE.get(c, (":", "0.6"))[1],
                       label=chance_label(c)) for c in sorted(chance_drawn)]
    if (metrics["variant"] == "shuffled_boxes").any():
        handles.append(Line2D([], [], ls="none", marker="x", color="k", ms=4, label="same maps, shuffled boxes"))
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=6.5, frameon=False)
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
    from .style import method_label, method_order, model_label, model_order

    rank_m = {m: k for k, m in enumerate(model_order(d["model"]))}
    rank_k = {m: k for k, m in enumerate(method_order(d["method"]))}
    groups.sort(key=lambda g: (rank_m[g[0][0]], rank_k[g[0][1]]))
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 0.22 * len(groups) + 0.9), layout="constrained")
    ax.boxplot([g["value"].to_numpy() for _, g in groups], vert=False, showmeans=True, widths=0.6,
               flierprops={"markersize": 2}, meanprops={"markersize": 3})
    ax.set_yticks(np.arange(1, len(groups) + 1), [f"{model_label(m)}, {method_label(k)}" for (m, k), _ in groups])
    ax.set_ylim(len(groups) + 0.5, 0.5)  # first model on top, as in the metric panels
    ax.tick_params(labelsize=7)
    ax.set_xlabel(f"{metric_label(metric)} per image", fontsize=8)
    ax.set_xlim(0, 1.02)
    return fig


def localization_vs_auc(metrics: pd.DataFrame, aucs: pd.Series, metric: str = "energy"):
    """Scatter of a localization metric (with CI) against the classifier's test ROC-AUC."""
    import matplotlib.pyplot as plt

    d = metrics[(metrics["variant"] == "maps") & (metrics["metric"] == metric) & (metrics["model"] != "chance")]
    d = d.assign(auc=d["model"].map(aucs)).dropna(subset=["auc"])
    from .style import method_color, method_label, method_order, model_label, variant_marker

    fig, ax = plt.subplots(figsize=(COLUMN_IN, 3.0), layout="constrained")
    methods = method_order(d["method"])
    for method in methods:
        g = d[d["method"] == method]
        ax.errorbar(g["auc"], g["value"], yerr=[g["value"] - g["low"], g["high"] - g["value"]],
                    fmt=variant_marker(method, methods), ms=3,
                    color=method_color(method), capsize=2, lw=0.8, label=method_label(method))

    ax.margins(y=0.12)  # room for the model names above the whiskers
    names = [ax.annotate(model_label(model), (g["auc"].iloc[0], g["high"].max()), fontsize=6, ha="center",
                         xytext=(0, 3), textcoords="offset points") for model, g in d.groupby("model")]
    ax.set_xlabel("classifier ROC-AUC (test)", fontsize=8)
    ax.set_ylabel(f"{metric_label(metric)} (mean, 95% CI)", fontsize=8)
    ax.tick_params(labelsize=7)
    if len(d):
        fig.legend(loc="outside lower center", ncols=2, fontsize=6, frameon=False)
    _separate_names(fig, ax, names)
    return fig


def _separate_names(fig, ax, names: list, step_pt: float = 7.0, rounds: int = 4) -> None:
    """Move point labels so none covers another or leaves the axes: a label reaching past the
    left or right edge is aligned to its anchor from inside, one that covers an earlier label
    (left to right) moves up by ``step_pt`` until it is free, and the y range grows until every
    label is inside. Models with nearly equal ROC-AUC otherwise print their names on one spot."""
    for t in names:
        t.set_in_layout(False)  # the layout is fixed first; the y range makes room instead
    for _ in range(rounds):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        frame = ax.get_window_extent(renderer)
        placed = []
        for t in sorted(names, key=lambda t: t.xy[0]):
            t.xyann = (0, 3)
            t.set_horizontalalignment("center")
            box = t.get_window_extent(renderer)
            t.set_horizontalalignment("left" if box.x0 < frame.x0 else "right" if box.x1 > frame.x1 else "center")
            while any(t.get_window_extent(renderer).overlaps(p) for p in placed):
                t.xyann = (0, t.xyann[1] + step_pt)
            placed.append(t.get_window_extent(renderer))
        top = max((b.y1 for b in placed), default=frame.y1)
        if top <= frame.y1:
            return
        lo, hi = ax.get_ylim()  # grow the range by the overshoot, as a share of the axes height
        ax.set_ylim(lo, hi + (hi - lo) * (top - frame.y1 + 2) / frame.height)


def _shown_failures(rows: pd.DataFrame, max_panels: int) -> np.ndarray:
    """Row positions shown: the worst case of every model x method first (table order), then each
    one's second worst, and so on, until ``max_panels``; in table order."""
    rank = rows.groupby(["model", "method"], sort=False).cumcount().to_numpy()
    order = np.lexsort((np.arange(len(rows)), rank))
    return np.sort(order[:max_panels])


def failure_gallery(rows: pd.DataFrame, images: np.ndarray, maps: np.ndarray, box_masks: np.ndarray,
                    lungs: np.ndarray | None = None, metric: str = "energy", cols: int = 5, max_panels: int = 25):
    """Worst-localized true positives, at most the text width and 9 in tall: each image with its
    map, the box union (green outline), the lung mask (white outline) and the map's peak (+);
    ``rows`` from :func:`worst_localized`, arrays row-aligned with it (images ``[n, S, S]``,
    maps/masks ``[n, M, M]``). At most ``max_panels`` cases, the worst of every model x method
    first; the title says how many of how many are shown."""
    import matplotlib.pyplot as plt

    from .style import MAX_HEIGHT_IN, TWO_COLUMN_IN, method_label, model_label

    n = len(rows)
    if n == 0:
        raise ValueError("no worst-localized true positives to show")
    shown = _shown_failures(rows, max_panels)
    cols = min(cols, len(shown))
    r_ = int(np.ceil(len(shown) / cols))
    side = min(TWO_COLUMN_IN / cols, (MAX_HEIGHT_IN - 0.4) / r_ - 0.3, 1.8)
    fig, axes = plt.subplots(r_, cols, figsize=(side * cols, (side + 0.3) * r_ + 0.4), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), shown):
        row = rows.iloc[i]
        s, m = images[i].shape[-1], maps[i].shape[-1]
        ext = (0, s, s, 0)
        ax.imshow(images[i], cmap="gray", extent=ext, rasterized=True)
        ax.imshow(maps[i].astype(np.float32), cmap="jet", alpha=0.4, extent=ext, vmin=0, vmax=1, rasterized=True)
        grid = (np.arange(m) + 0.5) * s / m
        ax.contour(grid, grid, box_masks[i].astype(float), levels=[0.5], colors="lime", linewidths=0.8)
        if lungs is not None:
            ax.contour(grid, grid, lungs[i].astype(float), levels=[0.5], colors="white", linewidths=0.5)
        py, px = np.unravel_index(int(np.argmax(maps[i])), maps[i].shape)
        ax.plot((px + 0.5) * s / m, (py + 0.5) * s / m, "w+", ms=6)
        ax.set_title(f"{model_label(row['model'])}, {method_label(row['method'])}\n{row['image_id']}\n"
                     f"{metric_label(metric)} {row['value']:.2f}, p={row['prob']:.2f}", fontsize=6)
    fig.suptitle(f"Worst-localized true positives by {metric_label(metric)}: {len(shown)} of {n} shown "
                 "(the worst of each model x method first)" if len(shown) < n else
                 f"Worst-localized true positives by {metric_label(metric)} ({n})", fontsize=7, wrap=True)
    return fig
