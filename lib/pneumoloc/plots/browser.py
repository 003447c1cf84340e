"""An ipywidgets heatmap browser over a run's stored maps (notebook 03).

The notebook only creates and displays it::

    browser = MapBrowser(run, models=["resnet18"], methods=["gradcam", "hirescam"])
    browser            # displays the controls and the figure

Everything it shows is derived from its controls by :meth:`MapBrowser.cases` and
:meth:`MapBrowser.state`, so tests set the controls and check what changes.

The figure is shown as PNG bytes in an ``ipywidgets.Image``, not through an ``Output``
widget: an ``Output`` widget executed headless (papermill / nbclient) makes the client
send comm messages back to the kernel on the shell channel while it waits there for
the cell's reply, and cells hung intermittently (jupyter/nbclient#312). An ``Image``
only sends state from the kernel, so the browser runs the same in JupyterLab and in
a papermill run.

The PNG is drawn at the pixel size it is shown at: ``panel_px`` CSS pixels per panel times
``pixel_ratio`` device pixels per CSS pixel (2 is sharp on HiDPI screens and on ordinary
ones), and the image is shown at exactly that CSS width, never stretched to the cell.
Every control carries the CSS class ``pneumoloc-<description>`` and a hidden HTML widget
(class ``pneumoloc-state``) holds :meth:`MapBrowser.state` as JSON with the digest of the
shown PNG, so a browser test can check the page against the kernel.
"""
from __future__ import annotations

import hashlib
import html
import json
from typing import Sequence

import numpy as np
import pandas as pd

from ..explain.stored import MapSet, load_maps
from .gallery import OUTCOMES, colorbar_mappable, draw_panel, load_case_data, load_predictions, outcomes

__all__ = ["MapBrowser", "SORTS", "COMPARE"]

# Sort orders: name -> (column, ascending). Localization = share of map energy inside the
# ground-truth boxes (pneumoloc.localize.metrics.energy_in_boxes); images without boxes go last.
SORTS = {"confidence": ("confidence", False), "localization (worst first)": ("localization", True),
         "localization (best first)": ("localization", False)}
COMPARE = ("off", "backbone", "method")
NO_OTHER = ""  # the 'versus' value while there is nothing to compare with
# An all-zero map has no energy to share out (box energy, LAR are undefined): said in words, never "nan".
ALL_ZERO = "no positive evidence (all-zero map)"
CSS_DPI = 96  # CSS pixels per inch: a figure inch is shown as 96 CSS pixels


class MapBrowser:
    """Browse stored maps by backbone, method and outcome, one image (or two maps) at a time.

    Args:
        run: :class:`~pneumoloc.environment.RunPaths` with tables, predictions and stored maps.
        models: model folder names (each needs ``predictions.csv`` and stored maps).
        methods: stored method names.
        split: predictions split the maps were computed for.
        threshold: decision threshold for TP/FP/FN/TN.
        display_size: pixel side of the radiograph drawn under the maps; 0 = 4x the map size,
            at most 256.
        panel_px: CSS pixels per panel of the shown figure.
        pixel_ratio: device pixels per CSS pixel the PNG is drawn for (the screen's
            ``devicePixelRatio``; 2 stays sharp on 1x and 2x screens).
    """

    def __init__(self, run, models: Sequence[str], methods: Sequence[str], split: str = "test",
                 threshold: float = 0.5, display_size: int = 0, panel_px: int = 380, pixel_ratio: float = 2.0):
        import ipywidgets as w

        from ..data.tables import load_tables

        if not models or not methods:
            raise ValueError("MapBrowser needs at least one model and one method")
        self.run, self.models, self.methods, self.threshold = run, list(models), list(methods), threshold
        self.predictions = {m: load_predictions(run, m, split) for m in self.models}
        self._maps: dict[tuple[str, str], MapSet | None] = {}
        first = next((s for s in (self.maps(m, k) for m in self.models for k in self.methods) if s), None)
        if first is None:
            raise FileNotFoundError(f"no stored maps for models {self.models} x methods {self.methods} "
                                    f"under {run.maps}: run pneumoloc.explain.stored.compute_maps first")
        self.map_size = first.map_size
        size = display_size or min(256, 4 * self.map_size)
        self.data = load_case_data(load_tables(run), first.image_ids, size)
        self._box_cells = self._box_masks()
        self._busy = False
        self.figure = None
        self.panel_px, self.pixel_ratio = panel_px, pixel_ratio
        self.model = w.Dropdown(options=self.models, description="backbone")
        self.method = w.Dropdown(options=self.methods, description="method")
        self.outcome = w.ToggleButtons(options=("all",) + OUTCOMES, description="outcome")
        self.sort = w.Dropdown(options=list(SORTS), description="sort by")
        self.index = w.IntSlider(min=0, max=0, description="case")
        self.opacity = w.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="opacity")
        self.show_boxes = w.Checkbox(value=True, description="boxes")
        self.show_lung = w.Checkbox(value=True, description="lung mask")
        self.show_contour = w.Checkbox(value=False, description="contour")
        self.contour_level = w.FloatSlider(value=0.5, min=0.05, max=0.95, step=0.05, description="level")
        self.compare = w.ToggleButtons(options=COMPARE, description="compare")
        self.other = w.Dropdown(options=[], description="versus")
        self.image = w.Image(format="png")
        self.notes = w.HTML()  # what the figure cannot show, in words
        self.state_view = w.HTML(layout=w.Layout(display="none"))  # state() as JSON, for tests
        self.controls = [self.model, self.method, self.outcome, self.sort, self.index, self.opacity, self.show_boxes,
                         self.show_lung, self.show_contour, self.contour_level, self.compare, self.other]
        for c in self.controls:
            c.observe(self._changed, names="value")
            c.add_class("pneumoloc-" + c.description.replace(" ", "-"))
        for name, widget in (("image", self.image), ("notes", self.notes), ("state", self.state_view)):
            widget.add_class(f"pneumoloc-{name}")
        self.widget = w.VBox([w.HBox([self.model, self.method, self.sort]), self.outcome, self.index,
                              w.HBox([self.opacity, self.show_boxes, self.show_lung]),
                              w.HBox([self.show_contour, self.contour_level]),
                              w.HBox([self.compare, self.other]), self.image, self.notes, self.state_view])
        self.widget.add_class("pneumoloc-browser")
        self._sync()

    # --- data ----------------------------------------------------------------------------
    def maps(self, model: str, method: str) -> MapSet | None:
        """Stored maps of (model, method), None when that pair was not computed."""
        if (model, method) not in self._maps:
            try:
                self._maps[model, method] = load_maps(self.run, model, method)
            except FileNotFoundError:
                self._maps[model, method] = None
        return self._maps[model, method]

    def _box_masks(self) -> np.ndarray:
        from ..localize.metrics import box_masks

        s = self.data.images.shape[1]
        n = len(self.data.image_ids)
        return box_masks(self.data.boxes, [s] * n, [s] * n, self.map_size)

    def cases(self) -> pd.DataFrame:
        """The cases the current controls select, in display order."""
        from ..localize.metrics import energy_in_boxes

        pred = self.predictions[self.model.value]
        pred = pred[pred["image_id"].isin(set(self.data.image_ids))].copy()
        pred["outcome"] = outcomes(pred["label"], pred["prob"], self.threshold)
        pred["confidence"] = np.where(pred["prob"] >= self.threshold, pred["prob"], 1 - pred["prob"])
        pred["localization"] = np.nan
        maps = self.maps(self.model.value, self.method.value)
        if maps is not None and len(pred):
            rows = [self.data.row(i) for i in pred["image_id"]]
            score = energy_in_boxes(maps.take(pred["image_id"]), self._box_cells[rows])
            pred["localization"] = np.where(score.valid, score.values, np.nan)
        if self.outcome.value != "all":
            pred = pred[pred["outcome"] == self.outcome.value]
        column, ascending = SORTS[self.sort.value]
        return pred.sort_values(column, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)

    def panels(self) -> list[tuple[str, str]]:
        """(model, method) of each shown panel: one, or two in side-by-side mode."""
        left = (self.model.value, self.method.value)
        if self.compare.value == "off" or not self.other.value:
            return [left]
        right = (self.other.value, left[1]) if self.compare.value == "backbone" else (left[0], self.other.value)
        return [left, right]

    def state(self) -> dict:
        """What is shown now: the image, its outcome and probability, the panels, the control
        values (keyed by their descriptions), which controls are disabled, and the notes."""
        cases = self.cases()
        base = {"n_cases": len(cases), "panels": self.panels(), "opacity": self.opacity.value,
                "controls": {c.description: c.value for c in self.controls},
                "disabled": sorted(c.description for c in self.controls if c.disabled)}
        if cases.empty:
            return {**base, "image_id": None, "notes": ["no case matches the filter"]}
        case = cases.iloc[min(self.index.value, len(cases) - 1)]
        st = {**base, "image_id": case["image_id"], "outcome": case["outcome"], "prob": float(case["prob"]),
              "label": int(case["label"]), "localization": float(case["localization"])}
        return {**st, "notes": self._notes(st)}

    def _notes(self, st: dict) -> list[str]:
        """What the current picture lacks, in words: no box, no lung mask, a missing or all-zero map."""
        i = self.data.row(st["image_id"])
        notes = [] if len(self.data.boxes[i]) else ["no ground-truth box on this image"]
        if self.data.lungs is None:
            notes.append("no lung masks in this dataset")
        elif not self.data.lungs[i].any():
            notes.append("no lung mask for this image")
        for model, method in st["panels"]:
            maps = self.maps(model, method)
            if maps is None:
                notes.append(f"{model} | {method}: maps not computed")
            elif not maps.take([st["image_id"]])[0].any():
                notes.append(f"{model} | {method}: {ALL_ZERO}")
        if self.compare.value != "off" and len(st["panels"]) == 1:
            notes.append(f"no other {self.compare.value} to compare with")
        return notes

    # --- widgets -------------------------------------------------------------------------
    def _sync(self) -> None:
        """Keep dependent controls consistent (slider range, 'versus' choices), then draw."""
        self._busy = True
        try:
            pool = {"backbone": self.models, "method": self.methods}.get(self.compare.value, [])
            choices = [p for p in pool if p != (self.model.value if self.compare.value == "backbone" else self.method.value)]
            options = choices or [("(compare is off)" if self.compare.value == "off"
                                   else f"(no other {self.compare.value})", NO_OTHER)]
            if list(self.other.options) != options:
                self.other.options = options
            self.other.value = choices[0] if choices and self.other.value not in choices else \
                (self.other.value if choices else NO_OTHER)
            n = len(self.cases())
            self.index.max = max(n - 1, 0)
            self.index.value = min(self.index.value, self.index.max)
            self._disable_empty_controls(n)
        finally:
            self._busy = False
        self.render()

    def _disable_empty_controls(self, n_cases: int) -> None:
        """Disable a control that has nothing to show (rather than leaving it empty or inert)."""
        st = self.state()
        shown = [self.maps(m, k) for m, k in st["panels"]]
        heats = [s.take([st["image_id"]])[0] for s in shown if s is not None] if st["image_id"] is not None else []
        row = self.data.row(st["image_id"]) if st["image_id"] is not None else None
        self.model.disabled = len(self.models) < 2
        self.method.disabled = len(self.methods) < 2
        self.compare.disabled = len(self.models) < 2 and len(self.methods) < 2
        self.other.disabled = not self.other.value
        self.index.disabled = n_cases < 2
        self.opacity.disabled = not heats
        self.show_boxes.disabled = row is None or not len(self.data.boxes[row])
        self.show_lung.disabled = row is None or self.data.lungs is None or not self.data.lungs[row].any()
        self.show_contour.disabled = not any(h.any() for h in heats)
        self.contour_level.disabled = self.show_contour.disabled or not self.show_contour.value

    def _changed(self, change) -> None:
        if not self._busy:
            self._sync()

    def render(self):
        """Draw the current state into :attr:`image` (PNG); returns the figure (kept in :attr:`figure`)."""
        import io

        import matplotlib.pyplot as plt

        st = self.state()
        n = len(st["panels"])
        width, height = self.panel_px * n + 70, self.panel_px + 104  # CSS px: colorbar, titles
        fig, axes = plt.subplots(1, n, figsize=(width / CSS_DPI, height / CSS_DPI), squeeze=False)
        fig.subplots_adjust(left=8 / width, right=1 - 70 / width, bottom=8 / height, top=1 - 96 / height,
                            wspace=0.05)
        if st["image_id"] is None:
            axes[0, 0].text(0.5, 0.5, "no case matches the filter", ha="center", va="center", fontsize=11)
            axes[0, 0].set_axis_off()
        else:
            i = self.data.row(st["image_id"])
            art = None
            for ax, (model, method) in zip(axes[0], st["panels"]):
                maps = self.maps(model, method)
                heat = maps.take([st["image_id"]])[0] if maps is not None else None
                title = self._panel_title(model, method, st, heat)
                art = draw_panel(ax, self.data.images[i], heat, boxes=self.data.boxes[i],
                                 lung=None if self.data.lungs is None else self.data.lungs[i],
                                 alpha=self.opacity.value, show_boxes=self.show_boxes.value,
                                 show_lung=self.show_lung.value,
                                 contour=self.contour_level.value if self.show_contour.value else None) or art
                ax.set_title(title, fontsize=10)
                if heat is None or not heat.any():
                    ax.text(0.5, 0.04, "maps not computed" if heat is None else ALL_ZERO, color="white",
                            fontsize=10, ha="center", va="bottom", transform=ax.transAxes,
                            bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none"})
            if art is not None:
                cax = fig.add_axes((1 - 55 / width, 8 / height, 12 / width, 1 - 104 / height), label="<colorbar>")
                fig.colorbar(colorbar_mappable(), cax=cax).ax.tick_params(labelsize=9)
            filt = "all cases" if self.outcome.value == "all" else f"{self.outcome.value} cases"
            fig.suptitle(f"{st['image_id']}: case {self.index.value + 1} of {st['n_cases']}\n"
                         f"{filt}, by {self.sort.value}", fontsize=11, y=1 - 6 / height, va="top")
        if self.figure is not None:
            plt.close(self.figure)
        self.figure = fig
        png = io.BytesIO()
        # fastest zlib level: the PNG is redrawn on every control change and compression dominated
        fig.savefig(png, format="png", dpi=CSS_DPI * self.pixel_ratio, pil_kwargs={"compress_level": 1})
        self.image.layout.width = f"{width}px"  # shown at the size it was drawn for, never stretched
        self.image.value = png.getvalue()
        self.notes.value = "".join(f"<div>{html.escape(n)}</div>" for n in st["notes"])
        digest = hashlib.sha256(self.image.value).hexdigest()
        shown = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in st.items()}
        self.state_view.value = html.escape(json.dumps({**shown, "png_sha256": digest}, default=str))
        plt.close(fig)
        return fig

    def _panel_title(self, model: str, method: str, st: dict, heat: np.ndarray | None) -> str:
        """``model | method``, then outcome, probability, label and this panel's own box energy;
        words (``ALL_ZERO``, "no box", "n/a") wherever a number is undefined."""
        from ..localize.metrics import energy_in_boxes

        if heat is None:
            return f"{model} | {method}\nmaps not computed"
        i = self.data.row(st["image_id"])
        prob = self.predictions[model].set_index("image_id")["prob"].get(st["image_id"], np.nan)
        p = "p n/a" if not np.isfinite(prob) else f"p={prob:.2f}"
        if not len(self.data.boxes[i]):
            energy = "no box"
        elif not np.isfinite(heat).all() or not heat.any():
            energy = ALL_ZERO if np.isfinite(heat).all() else "non-finite map"
        else:
            score = energy_in_boxes(heat[None].astype(np.float32), self._box_cells[[i]])
            energy = f"box energy {score.values[0]:.2f}" if score.valid[0] else "box energy n/a"
        return f"{model} | {method}\n{st['outcome']} {p} y={st['label']} | {energy}"

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
