"""Notebook 03's randomization figure: the cascading model-parameter randomization test
(Adebayo et al., NeurIPS 2018, Sec. 3.1) drawn from :func:`pneumoloc.explain.sanity.sanity_table`.

Backbones are laid out four to a row, each with its Spearman panel above its SSIM panel, so seven
backbones fit the text width of a two-column paper; methods keep their colours and literature
names from :mod:`pneumoloc.plots.style`, and one legend below the panels names the methods and
the flag threshold.
"""
from __future__ import annotations

import pandas as pd

from .style import MAX_HEIGHT_IN, TWO_COLUMN_IN, method_color, method_label, method_order, model_label, variant_marker

__all__ = ["plot_sanity"]

_METRICS = {"spearman": "Spearman", "ssim": "SSIM"}
_PER_ROW = 4  # backbones side by side: 1.7 in panels at the text width


def _draw_panel(ax, sub: pd.DataFrame, metric: str, methods: list[str], threshold: float) -> None:
    """One backbone x metric: similarity per step for each method, the flag threshold dashed."""
    from matplotlib.ticker import MaxNLocator

    for method in methods:
        g = sub[sub["method"] == method].sort_values("step")
        ax.plot(g["step"], g[metric], marker=variant_marker(method, methods), ms=2.5, lw=0.9,
                color=method_color(method))
    ax.axhline(threshold, color="0.4", ls="--", lw=0.7)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.tick_params(labelsize=6.5, length=2, pad=1.5)
    ax.grid(lw=0.3, alpha=0.5)


def _legend(fig, methods: list[str], threshold: float) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker=variant_marker(m, methods), ms=3, lw=0.9, color=method_color(m),
                      label=method_label(m)) for m in methods]
    handles.append(Line2D([], [], color="0.4", ls="--", lw=0.7, label=f"flag threshold ({threshold:g})"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3), fontsize=6.5,
               frameon=False)


def plot_sanity(table: pd.DataFrame, threshold: float = 0.5):
    """Similarity to the original maps vs. blocks re-initialized (head first), per backbone and metric.

    Args:
        table: ``backbone, method, step, spearman, ssim`` rows (:func:`~pneumoloc.explain.sanity.sanity_table`).
        threshold: the flag level of :func:`~pneumoloc.explain.sanity.sanity_summary`, drawn dashed.

    Returns:
        A figure at most 7.16 in wide: backbones four to a row (table order), Spearman above SSIM.
    """
    import matplotlib.pyplot as plt

    backbones = list(dict.fromkeys(table["backbone"]))
    methods = method_order(table["method"])
    ncols = min(len(backbones), _PER_ROW)
    groups = -(-len(backbones) // ncols)
    panel_h = min(1.15, (MAX_HEIGHT_IN - 1.2) / (2 * groups))
    fig, axes = plt.subplots(2 * groups, ncols, figsize=(min(TWO_COLUMN_IN, 1.8 * ncols + 0.5), 2 * groups * panel_h + 1.0),
                             sharey=True, squeeze=False, layout="constrained")
    for k, bb in enumerate(backbones):
        r, c = 2 * (k // ncols), k % ncols
        sub = table[table["backbone"] == bb]
        axes[r + 1, c].sharex(axes[r, c])  # the same steps in both metrics
        for i, metric in enumerate(_METRICS):
            _draw_panel(axes[r + i, c], sub, metric, methods, threshold)
        axes[r, c].set_title(model_label(bb), fontsize=7, pad=2)
        axes[r, c].tick_params(labelbottom=False)
        axes[r + 1, c].set_xlabel("blocks re-initialized", fontsize=6.5, labelpad=1)
    for k in range(len(backbones), groups * ncols):  # empty cells of the last row
        r, c = 2 * (k // ncols), k % ncols
        axes[r, c].set_axis_off()
        axes[r + 1, c].set_axis_off()
    for r in range(2 * groups):
        axes[r, 0].set_ylabel(list(_METRICS.values())[r % 2], fontsize=7)
    low = float(table[list(_METRICS)].min().min())
    axes[0, 0].set_ylim(min(-0.3, low - 0.05), 1.05)  # shared by every panel; negative correlations stay visible
    fig.suptitle("Cascading randomization (Adebayo et al. 2018): similarity to the original maps\n"
                 "as blocks are re-initialized from the head down, cumulatively", fontsize=8)
    _legend(fig, methods, threshold)
    return fig
