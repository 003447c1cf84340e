"""Notebook 04's tables carry recipe columns; the best model x method follows the recipe rule."""
from __future__ import annotations

import pandas as pd

from pneumoloc.localize.tables import best_localizer, format_table, with_recipes


def _metrics() -> pd.DataFrame:
    rows = [("resnet18", "gradcam", "maps", 0.60, 0.55, 0.65), ("vit_b_16", "gradcam", "maps", 0.90, 0.85, 0.95),
            ("mobilenet_v2", "gradcam", "maps", 0.95, 0.90, 0.99), ("densenet121", "gradcam", "maps", 0.50, 0.40, 0.6),
            ("resnet18", "gradcam", "shuffled_boxes", 0.30, 0.25, 0.35), ("chance", "box_prior", "maps", 0.57, 0.50, 0.62),
            ("chance", "uniform_image", "maps", 0.20, 0.15, 0.25)]
    return pd.DataFrame([{"model": a, "method": b, "variant": v, "metric": "hit", "value": x, "low": lo, "high": hi,
                          "target_layer": "", "feature_size": "", "map_size": 32} for a, b, v, x, lo, hi in rows])


RECIPES = pd.DataFrame({"recipe": ["r-main", "r-vit", "r-main", "r-main"], "undertrained": [False, False, True, False],
                        "val_roc_auc": [0.97, 0.9, 0.6, 0.9]},
                       index=["resnet18", "vit_b_16", "mobilenet_v2", "densenet121"])


def test_tables_carry_recipe_and_undertrained_columns():
    wide = with_recipes(format_table(_metrics(), ["hit"]), RECIPES).set_index(["model", "method"])
    assert list(wide.columns[:2]) == ["recipe", "undertrained"]
    assert wide.loc[("mobilenet_v2", "gradcam"), "undertrained"] == "yes"
    assert wide.loc[("chance", "box_prior"), "recipe"] == "chance"
    assert wide.loc[("vit_b_16", "gradcam"), "recipe"] == "r-vit"


def test_best_localizer_skips_undertrained_and_other_recipes_and_reads_the_chance_line():
    line = best_localizer(_metrics(), RECIPES)
    assert "resnet18 gradcam 0.600" in line and "overlaps" in line and "box_prior chance 0.570" in line
    across = best_localizer(_metrics(), RECIPES, compare_recipes=True)
    assert "vit_b_16 gradcam 0.900" in across and "lies above" in across
