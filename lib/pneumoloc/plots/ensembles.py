"""Figures of notebook 05; every function returns a matplotlib figure (saved by the caller
with :func:`pneumoloc.plots.save.save_figure`). Systems appear in the one model order with the
members' colours of :mod:`pneumoloc.plots.style` (ensembles in black)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .style import model_color, model_label, model_order

__all__ = [
    "plot_differences", "plot_matrix", "plot_reliability", "plot_frontier", "plot_map_cases",
    "plot_table", "plot_localization", "plot_contrast_cases", "plot_efficiency_frontier",
]


def _plt():
    import matplotlib.pyplot as plt  # heavy: imported on first figure, not with pneumoloc

    return plt


def _in_model_order(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of a ``system`` table in the one model order (:func:`pneumoloc.plots.style.model_order`)."""
    order = {name: k for k, name in enumerate(model_order(table["system"]))}
    return table.sort_values("system", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)


def _system_color(system: str) -> str:
    """A member's colour of :mod:`pneumoloc.plots.style`; ensembles in black."""
    return "k" if system.startswith("ens_") else model_color(system)


def plot_differences(table: pd.DataFrame, metric: str = "roc_auc", reference: str = ""):
    """Forest plot: each system's ``d_<metric>`` (system - reference) with its paired CI,
    annotated with DeLong's p for ROC-AUC."""
    plt = _plt()
    t = _in_model_order(table)
    y = np.arange(len(t))[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(t) + 1.2))
    d, lo, hi = t[f"d_{metric}"], t[f"d_{metric}_low"], t[f"d_{metric}_high"]
    for k in range(len(t)):
        ax.errorbar(d[k], y[k], xerr=[[d[k] - lo[k]], [hi[k] - d[k]]], fmt="o", color=_system_color(t["system"][k]),
                    ecolor="0.4", capsize=3)
    ax.axvline(0, color="0.3", lw=1, ls="--")
    ax.set_yticks(y, [model_label(sy) for sy in t["system"]])
    for yi, row in zip(y, t.itertuples()):
        if metric == "roc_auc" and row.system != reference:
            ax.annotate(f"DeLong p={row.delong_p:.3f}", (1.01, yi), xycoords=("axes fraction", "data"),
                        va="center", fontsize=8)
    ax.set_xlabel(f"test {metric} − {reference or 'reference'} (95% paired bootstrap CI by patient)")
    ax.set_title(f"Ensembles vs best single model on validation ({reference})")
    return fig


def plot_matrix(mat: pd.DataFrame, title: str, vmin: float = -1.0, vmax: float = 1.0,
                cmap: str = "RdBu_r", fmt: str = ".2f", ax=None):
    """Annotated heatmap of a square member x member matrix."""
    plt = _plt()
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(1 + 0.7 * len(mat), 0.8 + 0.6 * len(mat)))
    im = ax.imshow(mat.to_numpy(float), vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_xticks(range(len(mat.columns)), mat.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(mat.index)), mat.index)
    for (i, j), v in np.ndenumerate(mat.to_numpy(float)):
        ax.text(j, i, "–" if not np.isfinite(v) else format(v, fmt), ha="center", va="center", fontsize=8)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def plot_reliability(tables: dict[str, pd.DataFrame], ece: dict[str, float], ncols: int = 4):
    """Reliability diagrams (one panel per system): fraction of positives against mean
    probability per bin, bar width = bin, marker area ~ count; the diagonal is perfect."""
    plt = _plt()
    n = len(tables)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.8 * ncols, 2.8 * nrows), squeeze=False,
                             sharex=True, sharey=True)
    for ax, (name, t) in zip(axes.flat, tables.items()):
        ok = t["count"] > 0
        ax.bar(t["low"], t["frac_pos"].where(ok, 0), width=t["high"] - t["low"], align="edge",
               color="C0", alpha=0.35, edgecolor="C0")
        ax.scatter(t.loc[ok, "mean_prob"], t.loc[ok, "frac_pos"], s=10 + 60 * t.loc[ok, "count"] / t["count"].max(),
                   color="C0", zorder=3)
        ax.plot([0, 1], [0, 1], color="0.4", ls="--", lw=1)
        ax.set_title(f"{name}\nECE {ece[name]:.3f}", fontsize=9)
        ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("mean P(pneumonia)")
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction positive")
    fig.tight_layout()
    return fig


def plot_frontier(table: pd.DataFrame, costs: Sequence[str], scores: Sequence[str],
                  label: str = "model", highlight: Sequence[str] = (), note: str = ""):
    """Grid of cost (x, log scale) vs score (y) with the Pareto frontier drawn as a step line.

    ``table`` has columns ``label``, every cost and every score; ``highlight`` names are
    drawn in red (e.g. the MobileNets whose efficiency the paper claims); ``note`` is a second
    title line (e.g. where latency was measured).
    """
    from ..ensembles.efficiency import pareto_front

    plt = _plt()
    fig, axes = plt.subplots(len(scores), len(costs), figsize=(4.2 * len(costs), 3.4 * len(scores)),
                             squeeze=False)
    for i, s in enumerate(scores):
        for j, c in enumerate(costs):
            ax = axes[i, j]
            ok = table[[c, s]].notna().all(axis=1)
            t = table[ok]
            front = pareto_front(t[c], t[s])
            colors = ["C3" if n in highlight else "C0" for n in t[label]]
            ax.scatter(t[c], t[s], c=colors, s=[60 if f else 25 for f in front], zorder=3,
                       edgecolors=["k" if f else "none" for f in front])
            f = t[front].sort_values(c)
            ax.step(f[c], f[s], where="post", color="k", lw=1, alpha=0.6)
            # systems at the same point (e.g. ensembles of the same members) share one label
            for (x, v), names in t.groupby([c, s], sort=False)[label]:
                ax.annotate(", ".join(names), (x, v), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xscale("log")
            ax.set_xlabel(c), ax.set_ylabel(s)
    title = "Cost vs quality (black edge = on the Pareto frontier; red = highlighted)"
    fig.suptitle(f"{title}\n{note}" if note else title)
    fig.tight_layout()
    return fig


def plot_map_cases(member_maps: np.ndarray, names: Sequence[str], ensemble: np.ndarray,
                   spread: np.ndarray, titles: Sequence[str], images: np.ndarray | None = None,
                   boxes: Sequence[np.ndarray] | None = None):
    """Rows = cases; columns = each member's map, the ensemble map, the per-pixel spread.

    Args:
        member_maps: ``[M, K, H, W]`` for the K cases shown.
        ensemble, spread: ``[K, H, W]``.
        titles: one title per case (e.g. image id, label, map agreement).
        images: optional ``[K, S, S]`` radiographs drawn under the maps.
        boxes: optional per case ``[k, 4]`` boxes already scaled to the map frame (x, y, w, h).
    """
    plt = _plt()
    from matplotlib.patches import Rectangle

    m, k = member_maps.shape[:2]
    cols = [*names, "ensemble", "spread (sd)"]
    fig, axes = plt.subplots(k, m + 2, figsize=(1.9 * (m + 2), 2.0 * k + 0.4), squeeze=False)
    h, w = ensemble.shape[1:]
    for r in range(k):
        panels = [*member_maps[:, r], ensemble[r], spread[r]]
        for c, (ax, pan) in enumerate(zip(axes[r], panels)):
            if images is not None:
                ax.imshow(images[r], cmap="gray", extent=(0, w, h, 0))
            is_spread = c == m + 1
            ax.imshow(pan, cmap="magma" if is_spread else "jet", vmin=0,
                      vmax=0.5 if is_spread else 1, alpha=0.5 if images is not None else 1,
                      extent=(0, w, h, 0))
            for b in (boxes[r] if boxes is not None else []):
                ax.add_patch(Rectangle((b[0], b[1]), b[2], b[3], fill=False, ec="lime", lw=1))
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=8)
        axes[r, 0].set_ylabel(titles[r], fontsize=7)
    fig.tight_layout()
    return fig


def plot_table(table: pd.DataFrame, title: str = "", fontsize: int = 7):
    """Render a (formatted, string) table as a figure for the paper."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(min(16, 1.3 + 1.05 * table.shape[1]), 0.6 + 0.28 * (len(table) + 1)))
    ax.axis("off")
    tab = ax.table(cellText=table.astype(str).to_numpy(), colLabels=list(table.columns),
                   loc="center", cellLoc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(fontsize)
    tab.auto_set_column_width(list(range(table.shape[1])))
    if title:
        ax.set_title(title, fontsize=fontsize + 2)
    return fig


def _note_figure(plt, text: str):
    """A small figure holding only ``text`` (what a table or plot would show is undefined)."""
    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9)
    ax.set_axis_off()
    return fig


def plot_localization(table: pd.DataFrame, reference: str = ""):
    """One panel per localization metric: each system's mean with its patient-bootstrap CI
    (``compare_localization``'s long table); the reference system's value as a dashed line."""
    plt = _plt()
    metrics = list(dict.fromkeys(table["metric"]))
    if not metrics:  # every map all zero: no localization metric is defined
        return _note_figure(plt, "no localization metric defined: every map is all zero on every image")
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 0.35 * table["system"].nunique() + 1.4),
                             squeeze=False, sharey=True)
    for ax, m in zip(axes[0], metrics):
        t = _in_model_order(table[table["metric"] == m])
        y = np.arange(len(t))[::-1]
        for k in range(len(t)):
            ax.errorbar(t["value"][k], y[k], xerr=[[t["value"][k] - t["low"][k]], [t["high"][k] - t["value"][k]]],
                        fmt="o", color=_system_color(t["system"][k]), ecolor="0.4", capsize=3)
        ref = t[t["system"] == reference]
        if len(ref):
            ax.axvline(ref["value"].iloc[0], color="0.3", ls="--", lw=1)
        ax.set_yticks(y, [model_label(sy) for sy in t["system"]])
        ax.set_title(f"{m} (n={t['n'].max()})", fontsize=9)
    fig.suptitle(f"Localization of member and ensemble maps (dashed: {reference or 'reference'})")
    fig.tight_layout()
    return fig


def plot_contrast_cases(maps, ensemble: str, n_cases: int):
    """:func:`plot_map_cases` for the images where members agree least and most
    (:func:`pneumoloc.ensembles.diversity.contrast_cases`, images with a box first), over the
    radiographs with their boxes; None when agreement is undefined on every image.

    Args:
        maps: :class:`pneumoloc.ensembles.report.EnsembleMaps` (member maps, ensemble maps, spread,
            per-image agreement and the images' ground truth).
        ensemble: the ensemble map shown, a key of ``maps.ensemble_maps`` (``"ens_<combiner>"``).
        n_cases: rows of the figure.
    """
    from ..data.cache import resize_square
    from ..data.images import read_grayscale
    from ..ensembles.diversity import contrast_cases

    agreement, boxes, img = maps.per_image_agreement, maps.gt.boxes, maps.gt.images
    cases = contrast_cases(agreement, np.array([len(b) > 0 for b in boxes]), n_cases)
    if len(cases) == 0:
        return None
    size = maps.size
    scale = np.c_[size / img["width"], size / img["height"], size / img["width"], size / img["height"]]
    titles = [f"{maps.image_ids[i]} (label {img['label'].iloc[i]})\nagreement {agreement[i]:.2f}" for i in cases]
    images = np.stack([resize_square(read_grayscale(img["path"].iloc[i]), size) for i in cases])
    return plot_map_cases(maps.member_maps[:, cases], maps.members, maps.ensemble_maps[ensemble][cases],
                          maps.spread[cases], titles, images=images, boxes=[boxes[i] * scale[i] for i in cases])


def plot_efficiency_frontier(frontier: pd.DataFrame, highlight: Sequence[str] = ()):
    """:func:`plot_frontier` of :func:`pneumoloc.ensembles.summary.efficiency_frontier`'s table:
    parameters and batch-1 latency against test ROC-AUC and each localization metric it holds
    (hit rate, localization AUPRC, LAR). The title says the device, torch threads and hardware the
    latency was measured on (:func:`~pneumoloc.ensembles.efficiency.latency_setting`); a table
    without them is refused."""
    from ..ensembles.efficiency import latency_setting
    from ..ensembles.summary import FRONTIER_LOC

    note = latency_setting(frontier)
    scores = ["roc_auc", *[m for m in FRONTIER_LOC if m in frontier]]
    return plot_frontier(frontier.reset_index(names="system"), ["params", "latency_ms"], scores, label="system",
                         highlight=highlight, note=f"{note} (batch-1 median forward pass)")
