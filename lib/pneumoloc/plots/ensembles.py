"""Figures of notebook 05; every function returns a matplotlib figure (saved by the caller
with :func:`pneumoloc.plots.save.save_figure`). Systems appear in the one model order with the
members' colours of :mod:`pneumoloc.plots.style` (ensembles in black, told apart by marker).
Plots and tables are one column wide (:data:`~pneumoloc.plots.style.COLUMN_IN`), the map cases
at most the text width (:data:`~pneumoloc.plots.style.TWO_COLUMN_IN`)."""
from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np
import pandas as pd

from .localization import metric_label
from .style import COLUMN_IN, MAX_HEIGHT_IN, TWO_COLUMN_IN, model_color, model_label, model_order

__all__ = [
    "plot_differences", "plot_matrix", "plot_reliability", "plot_frontier", "plot_map_cases",
    "plot_table", "plot_summary_table", "plot_localization", "plot_contrast_cases", "plot_efficiency_frontier",
]

_ENSEMBLE_MARKERS = ("s", "^", "D", "v", "P", "X", "<", ">")
# Axis names of the frontier's costs and scores.
_AXIS_NAMES = {"params": "parameters", "latency_ms": "latency (ms)", "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC"}


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


def _system_marker(system: str, systems: Sequence[str]) -> str:
    """Members a circle; each ensemble its own marker, by its place among the ``systems``' ensembles."""
    ens = [s for s in model_order(systems) if s.startswith("ens_")]
    return _ENSEMBLE_MARKERS[ens.index(system) % len(_ENSEMBLE_MARKERS)] if system in ens else "o"


def _small(ax, labelsize: float = 6.5) -> None:
    """Tick labels and axis labels at paper size (one column)."""
    ax.tick_params(labelsize=labelsize)
    ax.xaxis.label.set_fontsize(7), ax.yaxis.label.set_fontsize(7)


def plot_differences(table: pd.DataFrame, metric: str = "roc_auc", reference: str = ""):
    """Forest plot, one column wide: each system's ``d_<metric>`` (system - reference) with its
    paired CI; DeLong's p for ROC-AUC on the right axis."""
    plt = _plt()
    t = _in_model_order(table)
    y = np.arange(len(t))[::-1]
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 0.2 * len(t) + 1.1), layout="constrained")
    d, lo, hi = t[f"d_{metric}"], t[f"d_{metric}_low"], t[f"d_{metric}_high"]
    for k in range(len(t)):
        ax.errorbar(d[k], y[k], xerr=[[d[k] - lo[k]], [hi[k] - d[k]]], fmt=_system_marker(t["system"][k], t["system"]),
                    ms=4, color=_system_color(t["system"][k]), ecolor="0.4", capsize=2, lw=0.8)
    ax.axvline(0, color="0.3", lw=0.8, ls="--")
    ax.set_yticks(y, [model_label(sy) for sy in t["system"]])
    ax.set_ylim(-0.6, len(t) - 0.4)
    if metric == "roc_auc" and "delong_p" in t:
        right = ax.twinx()
        right.set_ylim(ax.get_ylim())
        right.set_yticks(y, ["" if sy == reference else f"p={p:.3f}" for sy, p in zip(t["system"], t["delong_p"])])
        right.set_ylabel("DeLong p", fontsize=7)
        _small(right)
    ref = model_label(reference) if reference else "reference"
    name = _AXIS_NAMES.get(metric, metric)
    ax.set_xlabel(f"test {name} − {ref}\n(95% paired bootstrap CI by patient)")
    ax.set_title(f"{name}: each system vs {ref}\n(the best single model on validation)", fontsize=7.5)
    _small(ax)
    return fig


def plot_matrix(mat: pd.DataFrame, title: str, vmin: float = -1.0, vmax: float = 1.0,
                cmap: str = "RdBu_r", fmt: str = ".2f", ax=None):
    """Annotated heatmap of a square member x member matrix, one column wide, members in the one
    model order of :func:`~pneumoloc.plots.style.model_order`; values in white on dark cells."""
    plt = _plt()
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(COLUMN_IN, 3.1), layout="constrained")
    if set(mat.index) == set(mat.columns):
        order = model_order(mat.index)
        mat = mat.loc[order, order]
    values = mat.to_numpy(float)
    im = ax.imshow(values, vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_xticks(range(len(mat.columns)), [model_label(c) for c in mat.columns], rotation=90)
    ax.set_yticks(range(len(mat.index)), [model_label(r) for r in mat.index])
    size = 6 if len(mat) > 5 else 7
    for (i, j), v in np.ndenumerate(values):
        dark = np.isfinite(v) and abs(im.norm(v) - 0.5) > 0.35
        ax.text(j, i, "–" if not np.isfinite(v) else format(v, fmt).replace("-", "−"), ha="center", va="center",
                fontsize=size, color="white" if dark else "black")
    ax.set_title(textwrap.fill(title, 55), fontsize=7.5)
    _small(ax)
    bar = fig.colorbar(im, ax=ax, shrink=0.8)
    bar.ax.tick_params(labelsize=6.5)
    return fig


def plot_reliability(tables: dict[str, pd.DataFrame], ece: dict[str, float], ncols: int = 3):
    """Reliability diagrams, one column wide (one panel per system, in the one model order):
    fraction of positives against mean probability per bin, bar width = bin, marker area ~
    count; the diagonal is perfect calibration."""
    plt = _plt()
    names = model_order(tables)
    n = len(names)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    side = COLUMN_IN / ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(COLUMN_IN, min(side * nrows + 0.3, MAX_HEIGHT_IN)), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    for ax, name in zip(axes.flat, names):
        t, color = tables[name], _system_color(name)
        ok = t["count"] > 0
        ax.bar(t["low"], t["frac_pos"].where(ok, 0), width=t["high"] - t["low"], align="edge",
               color=color, alpha=0.3, edgecolor=color, lw=0.5)
        ax.scatter(t.loc[ok, "mean_prob"], t.loc[ok, "frac_pos"], s=3 + 20 * t.loc[ok, "count"] / t["count"].max(),
                   color=color, zorder=3)
        ax.plot([0, 1], [0, 1], color="0.4", ls="--", lw=0.7)
        ax.set_title(f"{model_label(name)}\nECE {ece[name]:.3f}", fontsize=6.5)
        ax.set_xlim(0, 1), ax.set_ylim(0, 1)
        ax.set_xticks([0, 0.5, 1], ["0", ".5", "1"]), ax.set_yticks([0, 0.5, 1], ["0", ".5", "1"])
        _small(ax)
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.supxlabel("mean P(pneumonia)", fontsize=7)
    fig.supylabel("fraction positive", fontsize=7)
    return fig


def plot_frontier(table: pd.DataFrame, costs: Sequence[str], scores: Sequence[str],
                  label: str = "model", highlight: Sequence[str] = (), note: str = ""):
    """Cost (x, log scale, one column per cost) against score (y, one row per score), one column
    wide, with the Pareto frontier as a step line.

    Points carry no text (names at nearby points overprint): each member has its colour of
    :mod:`pneumoloc.plots.style`, each ensemble a black marker of its own, and one legend below
    names them. Frontier points have a black edge; ``highlight`` names (e.g. the MobileNets whose
    efficiency the paper claims) a grey ring. ``table`` has columns ``label``, every cost and
    every score; ``note`` is a second title line (e.g. where latency was measured).
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullFormatter

    from ..ensembles.efficiency import pareto_front

    plt = _plt()
    systems = model_order(table[label])
    fig, axes = plt.subplots(len(scores), len(costs), figsize=(COLUMN_IN, 1.2 * len(scores) + 0.25 * (len(systems) // 2) + 1.0),
                             squeeze=False, sharex="col", sharey="row", layout="constrained")
    for i, s in enumerate(scores):
        for j, c in enumerate(costs):
            ax = axes[i, j]
            t = table[table[[c, s]].notna().all(axis=1)]
            front = pareto_front(t[c], t[s])
            f = t[front].sort_values(c)
            ax.step(f[c], f[s], where="post", color="k", lw=0.7, alpha=0.6, zorder=1)
            for name, x, v, on in zip(t[label], t[c], t[s], front):
                ax.scatter(x, v, marker=_system_marker(name, systems), s=22 if on else 12, color=_system_color(name),
                           edgecolors="k" if on else "none", linewidths=0.8, zorder=3)
                if name in highlight:
                    ax.scatter(x, v, marker="o", s=70, facecolors="none", edgecolors="0.45", linewidths=0.7, zorder=2)
            ax.set_xscale("log")
            # decades only: on a span under two decades matplotlib labels 2x, 3x, ... minor ticks into each other
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.grid(lw=0.3, alpha=0.5)
            if i == len(scores) - 1:
                ax.set_xlabel(_AXIS_NAMES.get(c, c))
            if j == 0:
                ax.set_ylabel(_AXIS_NAMES.get(s, metric_label(s)))
            _small(ax, 6)
    handles = [Line2D([], [], ls="none", marker=_system_marker(n, systems), color=_system_color(n), ms=4,
                      label=model_label(n)) for n in systems]
    handles.append(Line2D([], [], ls="-", marker="o", color="k", mfc="w", mec="k", ms=4, lw=0.7, label="Pareto frontier"))
    if any(n in highlight for n in systems):
        handles.append(Line2D([], [], ls="none", marker="o", ms=7, mfc="none", mec="0.45", label="highlighted"))
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=6, frameon=False)
    title = "Cost vs quality (up and to the left is better)"
    fig.suptitle("\n".join([title, *textwrap.wrap(note, 70)]), fontsize=7)
    return fig


def plot_map_cases(member_maps: np.ndarray, names: Sequence[str], ensemble: np.ndarray,
                   spread: np.ndarray, titles: Sequence[str], images: np.ndarray | None = None,
                   boxes: Sequence[np.ndarray] | None = None):
    """Rows = cases; columns = each member's map, the ensemble map, the per-pixel spread; the
    text width (:data:`~pneumoloc.plots.style.TWO_COLUMN_IN`) at most, panels shrunk to fit.

    Args:
        member_maps: ``[M, K, H, W]`` for the K cases shown.
        ensemble, spread: ``[K, H, W]``.
        titles: one title per case (e.g. image id, label, map agreement), printed beside its row.
        images: optional ``[K, S, S]`` radiographs drawn under the maps.
        boxes: optional per case ``[k, 4]`` boxes already scaled to the map frame (x, y, w, h).
    """
    plt = _plt()
    from matplotlib.patches import Rectangle

    m, k = member_maps.shape[:2]
    cols = [*(model_label(n) for n in names), "ensemble", "spread (sd)"]
    side = min((TWO_COLUMN_IN - 0.7) / (m + 2), (MAX_HEIGHT_IN - 0.5) / k, 1.6)
    fig, axes = plt.subplots(k, m + 2, figsize=(side * (m + 2) + 0.7, side * k + 0.4), squeeze=False,
                             layout="constrained")
    h, w = ensemble.shape[1:]
    for r in range(k):
        panels = [*member_maps[:, r], ensemble[r], spread[r]]
        for c, (ax, pan) in enumerate(zip(axes[r], panels)):
            if images is not None:
                ax.imshow(images[r], cmap="gray", extent=(0, w, h, 0), rasterized=True)
            is_spread = c == m + 1
            ax.imshow(pan, cmap="magma" if is_spread else "jet", vmin=0,
                      vmax=0.5 if is_spread else 1, alpha=0.5 if images is not None else 1,
                      extent=(0, w, h, 0), rasterized=True)
            for b in (boxes[r] if boxes is not None else []):
                ax.add_patch(Rectangle((b[0], b[1]), b[2], b[3], fill=False, ec="lime", lw=0.8))
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title("\n".join(textwrap.wrap(cols[c], 10)), fontsize=6)
        axes[r, 0].set_ylabel(titles[r], fontsize=6)
    return fig


_CHAR_EM = 0.5  # mean width of a character of DejaVu Sans in a table of numbers, in em: sizes a column


def _column_blocks(table: pd.DataFrame, fontsize: float, width_in: float) -> list[list[str]]:
    """The columns after the first split, in order, into blocks whose estimated printed width
    (the first column repeated in each) fits ``width_in``."""
    chars = {c: max(1.2 * len(str(c)), *(len(str(v)) for v in table[c])) + 2 for c in table.columns}  # bold header
    budget = width_in * 72 / (_CHAR_EM * fontsize) - chars[table.columns[0]]
    blocks: list[list[str]] = [[]]
    for c in table.columns[1:]:
        if blocks[-1] and sum(chars[x] for x in blocks[-1]) + chars[c] > budget:
            blocks.append([])
        blocks[-1].append(c)
    return blocks


def plot_table(table: pd.DataFrame, title: str = "", fontsize: float = 6, width: float = COLUMN_IN, note: str = ""):
    """Render a (formatted, string) table as a figure ``width`` inches wide: its columns after
    the first are split into stacked blocks that each fit the width, the first column (the row
    names) repeated in every block; ``note`` is printed below (e.g. what a mark means)."""
    plt = _plt()
    blocks = _column_blocks(table, fontsize, width)
    row_in = 1.45 * fontsize / 72  # one line of text and the cell padding
    heights = [len(table) + 1.0 for _ in blocks]
    fig, axes = plt.subplots(len(blocks), 1, figsize=(width, row_in * sum(heights) + 0.25 * len(blocks) + 0.35),
                             gridspec_kw={"height_ratios": heights}, squeeze=False, layout="constrained")
    first = table.columns[0]
    for ax, cols in zip(axes[:, 0], blocks):
        part = table[[first, *cols]].astype(str)
        chars = np.array([max(1.2 * len(str(c)), *(len(v) for v in part[c])) + 2 for c in part.columns], float)
        ax.axis("off")
        tab = ax.table(cellText=part.to_numpy(), colLabels=list(part.columns), cellLoc="center",
                       colWidths=list(chars / chars.sum()), bbox=[0, 0, 1, 1])
        tab.auto_set_font_size(False)
        tab.set_fontsize(fontsize)
        for (r, c), cell in tab.get_celld().items():
            cell.set_linewidth(0.3)
            if r == 0:
                cell.set_text_props(fontweight="bold")
    if title:
        fig.suptitle("\n".join(textwrap.wrap(title, int(width * 72 / (_CHAR_EM * (fontsize + 1))))), fontsize=fontsize + 1)
    if note:
        fig.supxlabel("\n".join(textwrap.wrap(note, int(width * 72 / (_CHAR_EM * fontsize)))), fontsize=fontsize)
    return fig


def _short_ci(text: str) -> str:
    """``"0.974 [0.947, 0.991]"`` -> ``"0.974 [.947, .991]"``: the interval without leading zeros."""
    return text.replace("[0.", "[.").replace(", 0.", ", .").replace("[-0.", "[−.").replace(", -0.", ", −.")


def plot_summary_table(pretty: pd.DataFrame, title: str = "", fontsize: float = 6):
    """Notebook 05's summary table (:func:`pneumoloc.ensembles.summary.summary_table`'s ``pretty``,
    indexed by system) one column wide: systems by name in the one model order, an undertrained
    member marked †, an ensemble with undertrained members ‡, a mixed recipe as its count of
    recipes (each one is in ``summary.tex``), intervals without leading zeros; the columns in
    stacked blocks (:func:`plot_table`)."""
    t = pretty.loc[model_order(pretty.index)].copy()
    under = t["undertrained"].astype(str).str.strip() if "undertrained" in t else pd.Series("", t.index)
    mark = np.where(under == "yes", "†", np.where(under.str.startswith("members"), "‡", ""))
    names = [model_label(sy).replace("ensemble: ", "ens. ") + m for sy, m in zip(t.index, mark)]
    if "recipe" in t:
        t["recipe"] = [f"mixed ({r.count('+') + 1})" if str(r).startswith("mixed") else r for r in t["recipe"]]
    t = t.drop(columns=[c for c in ("kind", "undertrained") if c in t]).map(lambda v: _short_ci(str(v)))
    t.insert(0, "system", names)
    note = ("† undertrained member, ‡ ensemble with undertrained members; " if (mark != "").any() else "") + \
        "mean [95% CI]"
    return plot_table(t.reset_index(drop=True), title, fontsize=fontsize, note=note)


def _note_figure(plt, text: str):
    """A small figure holding only ``text`` (what a table or plot would show is undefined)."""
    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9)
    ax.set_axis_off()
    return fig


def plot_localization(table: pd.DataFrame, reference: str = "", ncols: int = 2):
    """One panel per localization metric, one column wide (``ncols`` panels a row, systems on the
    shared y axis): each system's mean with its patient-bootstrap CI (``compare_localization``'s
    long table); the reference system's value as a dashed line."""
    plt = _plt()
    metrics = list(dict.fromkeys(table["metric"]))
    if not metrics:  # every map all zero: no localization metric is defined
        return _note_figure(plt, "no localization metric defined: every map is all zero on every image")
    systems = model_order(table["system"])
    ncols = min(ncols, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(COLUMN_IN, nrows * (0.13 * len(systems) + 0.45) + 0.4),
                             squeeze=False, sharey=True, layout="constrained")
    for ax, m in zip(axes.flat, metrics):
        t = table[table["metric"] == m].set_index("system").reindex(systems).dropna(subset=["value"])
        y = np.array([systems.index(sy) for sy in t.index])
        for k, sy in enumerate(t.index):
            ax.errorbar(t["value"].iloc[k], y[k], xerr=[[t["value"].iloc[k] - t["low"].iloc[k]],
                                                        [t["high"].iloc[k] - t["value"].iloc[k]]],
                        fmt=_system_marker(sy, systems), ms=3, color=_system_color(sy), ecolor="0.4", capsize=0, lw=0.8)
        if reference in t.index:
            ax.axvline(t.loc[reference, "value"], color="0.3", ls="--", lw=0.7)
        ax.set_title(f"{metric_label(m)}\nn={int(t['n'].max())}", fontsize=6.5)
        ax.grid(axis="x", lw=0.3, alpha=0.5)
        _small(ax, 6)
    for ax in axes.flat[len(metrics):]:
        ax.set_axis_off()
    axes[0, 0].set_yticks(range(len(systems)), [model_label(sy) for sy in systems])
    axes[0, 0].set_ylim(len(systems) - 0.5, -0.5)  # first system on top
    ref = model_label(reference) if reference else "reference"
    fig.suptitle(f"Localization of member and ensemble maps\n(mean, 95% CI by patient; dashed: {ref})", fontsize=7)
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
    titles = [f"{maps.image_ids[i]}\nlabel {img['label'].iloc[i]}\nagreement {agreement[i]:.2f}" for i in cases]
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
