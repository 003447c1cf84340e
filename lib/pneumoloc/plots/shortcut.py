"""Notebook 06's figure: does the map reveal the shortcut?

Top: marked test images, the shortcut model's map over the marked image above the clean
model's map over the same image without its marker, lesion boxes green, marker box red.
Bottom: where the maps put their energy and peak (marker box vs lesion boxes) and what the
models score (validation vs test ROC-AUC, marker reliance), each with its 95% patient-bootstrap
CI from :func:`pneumoloc.localize.shortcut.shortcut_summary`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .gallery import CaseData, colorbar_mappable, draw_panel, load_case_data
from .style import TWO_COLUMN_IN

__all__ = ["ShortcutCases", "shortcut_cases", "shortcut_figure"]

_COLORS = {"shortcut": "C3", "clean": "C0"}
_PT = 7  # labels and titles; ticks and legends 6.5 pt (at least 6 pt printed)


@dataclass
class ShortcutCases:
    """Marked test images of both variants at one display size, with their maps and boxes."""

    data: dict[str, CaseData]  # variant -> pixels and lesion boxes (the S x S frame)
    maps: dict[str, np.ndarray]  # variant -> [n, M, M]
    markers: list[np.ndarray]  # marker boxes x, y, w, h in the S x S frame, one [1, 4] per image
    labels: np.ndarray


def shortcut_cases(study, maps: dict[str, Any], n_cases: int = 4, size: int = 128) -> ShortcutCases:
    """The first ``n_cases`` marked test images, alternating pneumonia and normal when both exist."""
    from ..data.tables import load_tables
    from ..localize.metrics import boxes_by_image
    from ..phantom.markers import read_marker_boxes

    tables = {v: load_tables(sub) for v, sub in study.runs.items()}
    images = tables["shortcut"].images
    test = images[(images["split"] == "test") & (images["marker"] == 1)]
    by_label = [test[test["label"] == k]["image_id"].tolist() for k in (1, 0)]
    ids = [i for pair in zip(*by_label) for i in pair][:n_cases] or test["image_id"].tolist()[:n_cases]
    ids += [i for i in test["image_id"] if i not in ids][:n_cases - len(ids)]
    rows = images.set_index("image_id").loc[ids]
    scale = np.stack([size / rows["width"], size / rows["height"]] * 2, 1).astype(float)
    markers = [b * scale[k] for k, b in enumerate(boxes_by_image(read_marker_boxes(study.phantoms["shortcut"]), ids))]
    return ShortcutCases(data={v: load_case_data(t, ids, size) for v, t in tables.items()},
                         maps={v: m.take(ids).astype(np.float32) for v, m in maps.items()},
                         markers=markers, labels=rows["label"].to_numpy())


def _draw_cases(fig, grid, cases: ShortcutCases) -> None:
    from matplotlib.patches import Rectangle

    titles = {"shortcut": "shortcut model,\nmarked image", "clean": "clean model,\nsame image\nunmarked"}
    n = len(cases.labels)
    for r, variant in enumerate(("shortcut", "clean")):
        data = cases.data[variant]
        for c in range(n):
            ax = fig.add_subplot(grid[r, c])
            draw_panel(ax, data.images[c], cases.maps[variant][c], boxes=data.boxes[c], show_lung=False,
                       title=f"{'pneumonia' if cases.labels[c] else 'normal'}" if r == 0 else "", fontsize=_PT)
            for x, y, w, h in cases.markers[c]:
                ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="red", linewidth=1.2))
            if c == 0:
                ax.set_ylabel(titles[variant], fontsize=_PT)


def _bars(ax, summary: pd.DataFrame, quantities: list[tuple[str, str, str | None]], title: str) -> None:
    """Grouped bars, one group per quantity, a bar per model, CI whiskers."""
    width = 0.38
    for k, variant in enumerate(("shortcut", "clean")):
        vals, lows, highs = [], [], []
        for quantity, _, images in quantities:
            sel = (summary["quantity"] == quantity) & (summary["model"] == variant)
            sel &= (summary["images"] == (images or variant)) if images != "any" else True
            row = summary[sel].iloc[0] if sel.any() else None
            vals.append(np.nan if row is None else row["value"])
            lows.append(0 if row is None else row["value"] - row["low"])
            highs.append(0 if row is None else row["high"] - row["value"])
        x = np.arange(len(quantities)) + (k - 0.5) * width
        ax.bar(x, vals, width, yerr=[lows, highs], capsize=3, color=_COLORS[variant], label=f"{variant} model")
    ax.set_xticks(np.arange(len(quantities)), [label for _, label, _ in quantities], fontsize=6.5)
    ax.tick_params(axis="y", labelsize=6.5)
    ax.axhline(0, color="k", linewidth=0.6)
    ax.set_title(title, fontsize=_PT)


def shortcut_figure(cases: ShortcutCases, summary: pd.DataFrame, title: str = ""):
    """The study's one figure (module docstring)."""
    import matplotlib.pyplot as plt

    n = max(len(cases.labels), 2)
    side = min((TWO_COLUMN_IN - 0.9) / n, 1.6)  # image panels; the colorbar and row labels take ~0.9 in
    fig = plt.figure(figsize=(TWO_COLUMN_IN, 2 * side + 2.6), layout="constrained")
    grid = fig.add_gridspec(3, n, height_ratios=[side, side, 2.1])
    _draw_cases(fig, grid, cases)
    half = max(n // 2, 1)
    _bars(fig.add_subplot(grid[2, :half]), summary,
          [("energy_on_marker", "energy\non marker", "own"), ("energy_on_lesions", "energy\non lesions", "own"),
           ("pointing_on_marker", "peak\non marker", "own"), ("pointing_on_lesions", "peak\non lesions", "own")],
          "where the map looks\n(test, 95% CI)")
    _bars(fig.add_subplot(grid[2, half:]), summary,
          [("val_roc_auc", "val\nROC-AUC", None), ("test_roc_auc", "test\nROC-AUC", None),
           ("marker_reliance", "marker\nreliance", "both")],
          "what the model does\n(reliance: P with - without marker)")
    fig.legend(*fig.axes[-1].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=6.5,
               frameon=False)  # one legend for both bar panels
    cbar = fig.colorbar(colorbar_mappable(), ax=fig.axes[:2 * len(cases.labels)], shrink=0.8)
    cbar.set_label("map value", fontsize=_PT)
    cbar.ax.tick_params(labelsize=6.5)
    fig.suptitle((title or "Does the map reveal the shortcut?") + "\nred: marker box, green: lesion boxes", fontsize=8)
    return fig
