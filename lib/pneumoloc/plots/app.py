"""The standalone page of a finished run: its headline table above the heatmap browser.

``pneumoloc browse RUN`` serves it with Voila (:mod:`pneumoloc.runs.browse`); it reads only
the run folder (tables, predictions, metrics, stored maps), never the notebooks.

The headline table has one row per model x method: the training recipe (id and line,
:mod:`pneumoloc.training.recipe`), whether the model is ``undertrained`` (validation ROC-AUC
below the bar), the test ROC-AUC with its bootstrap CI (notebook 02's ``metrics.json``) and the
pointing-game hit rate with its CI (notebook 04's ``localization/metrics.csv``), plus the chance
baselines' hit rates. An undefined number is "n/a", never "nan".
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["headline_table", "browser_app"]
COLUMNS = ["model", "method", "recipe", "undertrained", "ROC-AUC [95% CI]", "hit rate [95% CI]"]


def _with_ci(value: float, low: float, high: float) -> str:
    finite = [v is not None and np.isfinite(v) for v in (value, low, high)]
    if not finite[0]:
        return "n/a"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if all(finite) else f"{value:.3f} (no CI)"


def _roc_auc(run, model: str) -> str:
    from ..storage import load_json

    path = run.model_dir(model) / "metrics.json"
    if not path.exists():
        return "n/a"
    point = load_json(path).get("operating_points", {}).get("default", {})
    low, high = point.get("ci95", {}).get("roc_auc", (np.nan, np.nan))
    return _with_ci(point.get("roc_auc", np.nan), low, high)


def headline_table(run, pairs) -> pd.DataFrame:
    """``model, method, recipe, undertrained, ROC-AUC [95% CI], hit rate [95% CI]`` for each
    ``(model, method)`` of ``pairs``, then the chance baselines; 'n/a' where notebook 02 or 04 has
    not written it."""
    from ..training.recipe import model_recipes

    hits = pd.DataFrame(columns=["model", "method", "value", "low", "high"])
    if (run.localization / "metrics.csv").exists():
        m = pd.read_csv(run.localization / "metrics.csv")
        hits = m[(m["metric"] == "hit") & (m["variant"] == "maps")]
    hit = {(r.model, r.method): _with_ci(r.value, r.low, r.high) for r in hits.itertuples()}
    recipes = model_recipes(run, list(dict.fromkeys(model for model, _ in pairs)))
    rows = []
    for model, method in pairs:
        r = recipes.loc[model]
        rows.append({"model": model, "method": method, "recipe": f"{r.recipe}: {r.recipe_line}"
                     if r.recipe != r.recipe_line else r.recipe, "undertrained": "yes" if r.undertrained else "",
                     "ROC-AUC [95% CI]": _roc_auc(run, model), "hit rate [95% CI]": hit.get((model, method), "n/a")})
    rows += [{"model": "chance", "method": method, "recipe": "", "undertrained": "", "ROC-AUC [95% CI]": "",
              "hit rate [95% CI]": cell} for (model, method), cell in hit.items() if model == "chance"]
    return pd.DataFrame(rows, columns=COLUMNS)


def browser_app(run, split: str = "test", threshold: float = 0.5, **browser_options):
    """The page: title, headline table and a :class:`~pneumoloc.plots.browser.MapBrowser` over
    every stored model and method; returns ``(widget, browser)``."""
    import html

    import ipywidgets as w

    from ..explain.stored import list_maps
    from .browser import MapBrowser

    stored = list_maps(run)
    models = [m for m in dict.fromkeys(stored["model"]) if (run.model_dir(m) / "predictions.csv").exists()]
    methods = list(dict.fromkeys(stored["method"]))
    if not models:
        raise FileNotFoundError(f"{run.root} has no stored maps with predictions: run notebooks 02 and 03 first")
    browser = MapBrowser(run, models, methods, split=split, threshold=threshold, **browser_options)
    table = headline_table(run, [(r.model, r.method) for r in stored.itertuples() if r.model in models])
    title = w.HTML(f"<h2>Run {html.escape(run.name)}</h2><div>{html.escape(str(run.root))}: {split} split, "
                   f"threshold {threshold}</div>")
    headline = w.HTML(table.to_html(index=False, border=0, justify="left"))
    headline.add_class("pneumoloc-headline")
    return w.VBox([title, headline, browser.widget]), browser
