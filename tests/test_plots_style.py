"""One look for every figure: names as the literature spells them, one model order and palette,
and notebook 04's metric figure readable one column wide (no text drawn over other text)."""
from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import pytest

from pneumoloc.plots import style

SEVEN = ["resnet18", "mobilenet_v3", "mobilenet_v2", "efficientnet_b0", "densenet121", "resnet50", "vit_b_16"]


def _methods():
    import pneumoloc.explain.attributions  # noqa: F401  (registers the attribution methods)
    from pneumoloc.explain.cams import METHODS

    return METHODS.names()


@pytest.mark.parametrize("method", _methods())
def test_every_registered_method_has_a_literature_name_and_its_own_colour(method):
    assert method in style.METHOD_NAMES and method in style.METHOD_COLORS
    assert style.method_label(f"{method}@layer3") == f"{style.METHOD_NAMES[method]} (layer3)"
    assert style.method_color(f"{method}@layer3") == style.method_color(method)


def test_literature_spellings_and_distinct_method_colours():
    assert [style.method_label(m) for m in ("gradcam", "gradcam++", "hirescam", "guided_gradcam", "intgrad",
                                            "smoothgrad")] == ["Grad-CAM", "Grad-CAM++", "HiResCAM", "Guided Grad-CAM",
                                                               "Integrated Gradients", "SmoothGrad"]
    assert len(set(style.METHOD_COLORS.values())) == len(style.METHOD_COLORS)


def test_one_model_order_and_fixed_colours():
    from pneumoloc.models.specs import BACKBONES

    registered = [b for b in BACKBONES if b in SEVEN]  # registry order (small relatives such as ViT-Ti/16 aside)
    assert style.model_order(["ens_mean", "zeta", *SEVEN[::-1]]) == [*registered, "zeta", "ens_mean"]
    colours = [style.model_color(m) for m in registered]
    assert len(set(colours)) == len(colours)
    assert style.model_color("resnet18", shown=["vit_b_16"]) == style.model_color("resnet18")  # never shifts
    assert style.model_label("vit_b_16") == "ViT-B/16" and style.model_label("ens_greedy") == "ensemble: greedy"


def _seven_by_five() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    methods = ["gradcam", "gradcam++", "hirescam", "gradient", "guided_gradcam"]
    names = ["lar", "hit", "energy", "lung_energy", "auprc", "iou@otsu"]
    rows = []
    for model, method, metric in itertools.product(SEVEN, methods, names):
        v = rng.uniform(0.1, 0.9)
        rows += [{"model": model, "method": method, "variant": variant, "metric": metric, "value": v,
                  "low": v - 0.05, "high": v + 0.05, "target_layer": "x", "feature_size": "4x4", "map_size": 64}
                 for variant in ("maps", "shuffled_boxes")]
    rows += [{"model": "chance", "method": c, "variant": "maps", "metric": n, "value": 0.3, "low": 0.25, "high": 0.35}
             for c in ("uniform_image", "uniform_lung", "box_prior") for n in names]
    return pd.DataFrame(rows)


def _text_boxes(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in texts]


def test_metric_figure_of_seven_models_and_five_methods_is_one_column_and_no_text_overlaps():
    from pneumoloc.plots.localization import metric_bars

    fig = metric_bars(_seven_by_five(), ["lar", "hit", "energy", "lung_energy", "auprc", "iou@otsu"])
    assert fig.get_size_inches()[0] <= 3.5
    boxes = _text_boxes(fig)
    labels = [t for t, _ in boxes]
    assert "ResNet-18" in labels and "Grad-CAM++" in labels and "Guided Grad-CAM" in labels
    overlaps = [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]
    assert not overlaps, overlaps[:5]
    fig_box = fig.bbox
    outside = [t for t, b in boxes if b.x0 < fig_box.x0 - 1 or b.x1 > fig_box.x1 + 1]
    assert not outside, outside
