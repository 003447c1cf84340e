"""Gallery: outcome logic, case choice, and the figure's panels."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import pytest

from pneumoloc.data.tables import load_tables
from pneumoloc.explain.stored import MapSet, compute_maps
from pneumoloc.plots import gallery as G
from test_explain_stored import make_run


def test_outcomes_by_hand():
    got = G.outcomes([1, 0, 1, 0, 1], [0.9, 0.7, 0.2, 0.1, 0.5], threshold=0.5)
    assert got.tolist() == ["TP", "FP", "FN", "TN", "TP"]


def test_select_cases_takes_the_most_confident_of_each_outcome_in_order():
    pred = pd.DataFrame({"image_id": list("abcdefgh"), "label": [1, 1, 0, 0, 1, 1, 0, 0],
                         "prob": [0.6, 0.99, 0.8, 0.55, 0.4, 0.01, 0.3, 0.02]})
    cases = G.select_cases(pred, n_per_outcome=1)
    assert cases["image_id"].tolist() == ["b", "c", "f", "h"]
    assert cases["outcome"].tolist() == ["TP", "FP", "FN", "TN"]
    assert G.select_cases(pred, 2, image_ids=["a", "c"])["image_id"].tolist() == ["a", "c"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("gallery"))
    for method in ("gradcam", "hirescam"):
        compute_maps(run, "resnet18", method, map_size=16, target="predicted", progress=False)
    return run


def test_case_data_scales_boxes_and_reads_masks(run):
    data = G.load_case_data(load_tables(run), ["im3", "im2"], size=24)
    assert data.images.shape == (2, 24, 24) and data.images.dtype == np.uint8
    # box x=8, y=10, w=12, h=16 in a 48 x 40 image -> factors 0.5 and 0.6 at 24 px
    assert np.allclose(data.boxes[0], [[4.0, 6.0, 6.0, 9.6]]) and len(data.boxes[1]) == 0
    assert data.lungs.shape == (2, 24, 24) and data.lungs[0, 12, 6] and not data.lungs[0, 12, 12]


def test_gallery_figure_has_a_panel_per_case_and_column(run):
    pred = G.load_predictions(run, "resnet18")
    cases = G.select_cases(pred, n_per_outcome=1)
    columns = {m: __import__("pneumoloc.explain.stored", fromlist=["load_maps"]).load_maps(run, "resnet18", m)
               for m in ("gradcam", "hirescam")}
    data = G.load_case_data(load_tables(run), cases["image_id"], size=32)
    fig = G.gallery_figure(cases, columns, data, contour=0.5)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == len(cases) * 2
    assert panels[0].get_title().startswith("Grad-CAM\n" + cases["outcome"].iloc[0])
    first = cases.iloc[0]
    assert f"p={first['prob']:.2f}" in panels[0].get_title()
    heat = panels[1].images[1].get_array()
    assert np.allclose(heat, columns["hirescam"].take([first["image_id"]])[0])
    assert sum(1 for ax in fig.axes if ax.get_label() == "<colorbar>") == 1


def test_draw_panel_toggles():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    lung = np.zeros((8, 8), bool)
    lung[2:6, 2:6] = True
    G.draw_panel(ax, np.zeros((32, 32), np.uint8), np.eye(8), boxes=[[1, 2, 3, 4]], lung=lung)
    assert len(ax.patches) == 1 and ax.collections  # box and lung contour
    ax.clear()
    G.draw_panel(ax, np.zeros((32, 32), np.uint8), np.eye(8), boxes=[[1, 2, 3, 4]], lung=lung,
                 show_boxes=False, show_lung=False)
    assert not ax.patches and not ax.collections
    plt.close(fig)


def test_empty_cases_is_a_clear_error():
    with pytest.raises(ValueError, match="no cases"):
        G.gallery_figure(pd.DataFrame(columns=["image_id"]), {}, None)
