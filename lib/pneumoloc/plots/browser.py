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
"""
from __future__ import annotations

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


class MapBrowser:
    """Browse stored maps by backbone, method and outcome, one image (or two maps) at a time.

    Args:
        run: :class:`~pneumoloc.environment.RunPaths` with tables, predictions and stored maps.
        models: model folder names (each needs ``predictions.csv`` and stored maps).
        methods: stored method names.
        split: predictions split the maps were computed for.
        threshold: decision threshold for TP/FP/FN/TN.
        display_size: pixel side of the shown radiograph; 0 = 4x the map size, at most 256.
        dpi: resolution of the shown PNG.
    """

    def __init__(self, run, models: Sequence[str], methods: Sequence[str], split: str = "test",
                 threshold: float = 0.5, display_size: int = 0, dpi: int = 80):
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
        self.dpi = dpi
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
        controls = [self.model, self.method, self.outcome, self.sort, self.index, self.opacity, self.show_boxes,
                    self.show_lung, self.show_contour, self.contour_level, self.compare, self.other]
        for c in controls:
            c.observe(self._changed, names="value")
        self.widget = w.VBox([w.HBox([self.model, self.method, self.sort]), self.outcome, self.index,
                              w.HBox([self.opacity, self.show_boxes, self.show_lung]),
                              w.HBox([self.show_contour, self.contour_level]),
                              w.HBox([self.compare, self.other]), self.image])
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
        if self.compare.value == "off" or self.other.value is None:
            return [left]
        right = (self.other.value, left[1]) if self.compare.value == "backbone" else (left[0], self.other.value)
        return [left, right]

    def state(self) -> dict:
        """What is shown now: the image, its outcome and probability, and the panels."""
        cases = self.cases()
        base = {"n_cases": len(cases), "panels": self.panels(), "opacity": self.opacity.value}
        if cases.empty:
            return {**base, "image_id": None}
        case = cases.iloc[min(self.index.value, len(cases) - 1)]
        return {**base, "image_id": case["image_id"], "outcome": case["outcome"], "prob": float(case["prob"]),
                "label": int(case["label"]), "localization": float(case["localization"])}

    # --- widgets -------------------------------------------------------------------------
    def _sync(self) -> None:
        """Keep dependent controls consistent (slider range, 'versus' choices), then draw."""
        self._busy = True
        try:
            pool = {"backbone": self.models, "method": self.methods}.get(self.compare.value, [])
            choices = [p for p in pool if p != (self.model.value if self.compare.value == "backbone" else self.method.value)]
            if list(self.other.options) != choices:
                self.other.options = choices
            self.other.value = choices[0] if choices and self.other.value not in choices else self.other.value
            n = len(self.cases())
            self.index.max = max(n - 1, 0)
            self.index.value = min(self.index.value, self.index.max)
        finally:
            self._busy = False
        self.render()

    def _changed(self, change) -> None:
        if not self._busy:
            self._sync()

    def render(self):
        """Draw the current state into :attr:`image` (PNG); returns the figure (kept in :attr:`figure`)."""
        import io

        import matplotlib.pyplot as plt

        st = self.state()
        fig, axes = plt.subplots(1, len(st["panels"]), figsize=(4.2 * len(st["panels"]), 4.4), squeeze=False)
        if st["image_id"] is None:
            axes[0, 0].text(0.5, 0.5, "no case matches the filter", ha="center", va="center")
            axes[0, 0].set_axis_off()
        else:
            i = self.data.row(st["image_id"])
            art = None
            for ax, (model, method) in zip(axes[0], st["panels"]):
                maps = self.maps(model, method)
                heat = maps.take([st["image_id"]])[0] if maps is not None else None
                prob = self.predictions[model].set_index("image_id")["prob"].get(st["image_id"], np.nan)
                title = (f"{model} | {method}\n{st['outcome']} p={prob:.2f} y={st['label']} "
                         f"| box energy {st['localization']:.2f}" if maps is not None else f"{model} | {method}: not computed")
                art = draw_panel(ax, self.data.images[i], heat, boxes=self.data.boxes[i],
                                 lung=None if self.data.lungs is None else self.data.lungs[i],
                                 alpha=self.opacity.value, show_boxes=self.show_boxes.value,
                                 show_lung=self.show_lung.value,
                                 contour=self.contour_level.value if self.show_contour.value else None,
                                 title=title) or art
            if art is not None:
                fig.colorbar(colorbar_mappable(), ax=axes.ravel().tolist(), fraction=0.04)
            fig.suptitle(f"{st['image_id']}  (case {self.index.value + 1} of {st['n_cases']})", fontsize=9)
        if self.figure is not None:
            plt.close(self.figure)
        self.figure = fig
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=self.dpi)
        self.image.value = png.getvalue()
        plt.close(fig)
        return fig

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
