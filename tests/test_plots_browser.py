"""The widget browser: set controls, check what it shows."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest

from pneumoloc.explain.stored import compute_maps, load_maps
from pneumoloc.plots.browser import MapBrowser
from test_explain_stored import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    run = make_run(tmp, n=10)
    # a second backbone: same architecture, other weights, other predictions
    import shutil

    import pandas as pd
    import torch

    from pneumoloc.models.backbones import build_model
    from pneumoloc.models.checkpoints import save_checkpoint
    from pneumoloc.models.outputs import save_predictions

    torch.manual_seed(5)
    save_checkpoint(run.model_dir("resnet18b") / "best.pt", build_model("resnet18", image_size=64))
    pred = pd.read_csv(run.model_dir("resnet18") / "predictions.csv")
    pred["prob"] = 1 - pred["prob"]
    save_predictions(run, "resnet18b", pred)
    for model in ("resnet18", "resnet18b"):
        for method in ("gradcam", "hirescam"):
            compute_maps(run, model, method, map_size=16, target="predicted", progress=False)
    return run


@pytest.fixture
def browser(run):
    return MapBrowser(run, ["resnet18", "resnet18b"], ["gradcam", "hirescam"], display_size=32)


def _heat(browser, panel=0):
    return np.asarray([ax for ax in browser.figure.axes if ax.get_label() != "<colorbar>"][panel].images[1].get_array())


def test_initial_state_shows_a_case_with_its_map(browser, run):
    st = browser.state()
    assert st["n_cases"] == 8 and st["panels"] == [("resnet18", "gradcam")]
    assert np.allclose(_heat(browser), load_maps(run, "resnet18", "gradcam").take([st["image_id"]])[0])
    assert browser.index.max == 7


def test_outcome_filter_and_slider(browser):
    browser.outcome.value = "TP"
    cases = browser.cases()
    assert set(cases["outcome"]) == {"TP"} and browser.index.max == len(cases) - 1
    assert browser.state()["outcome"] == "TP"
    browser.outcome.value = "all"
    first = browser.state()["image_id"]
    browser.index.value = 3
    assert browser.state()["image_id"] != first
    assert str(browser.state()["image_id"]) in browser.figure._suptitle.get_text()


def test_sorting_by_confidence_and_localization(browser):
    conf = browser.cases()["confidence"].to_numpy()
    assert (np.diff(conf) <= 0).all()
    browser.sort.value = "localization (worst first)"
    loc = browser.cases()["localization"].to_numpy()
    has = ~np.isnan(loc)
    assert has.sum() == 4 and has[:4].all() and (np.diff(loc[:4]) >= 0).all()  # negatives (no box) last
    browser.sort.value = "localization (best first)"
    assert (np.diff(browser.cases()["localization"].to_numpy()[:4]) <= 0).all()


def test_method_and_backbone_change_the_map(browser, run):
    image = browser.state()["image_id"]
    before = _heat(browser).copy()
    browser.method.value = "hirescam"
    assert np.allclose(_heat(browser), load_maps(run, "resnet18", "hirescam").take([image])[0])
    browser.model.value = "resnet18b"
    assert browser.state()["panels"] == [("resnet18b", "hirescam")]
    assert not np.allclose(_heat(browser), before)


def test_side_by_side_modes(browser, run):
    browser.compare.value = "method"
    assert list(browser.other.options) == ["hirescam"]
    assert browser.state()["panels"] == [("resnet18", "gradcam"), ("resnet18", "hirescam")]
    image = browser.state()["image_id"]
    assert np.allclose(_heat(browser, 1), load_maps(run, "resnet18", "hirescam").take([image])[0])
    browser.compare.value = "backbone"
    assert browser.state()["panels"] == [("resnet18", "gradcam"), ("resnet18b", "gradcam")]
    assert len([ax for ax in browser.figure.axes if ax.get_label() != "<colorbar>"]) == 2


def test_overlay_controls(browser):
    browser.outcome.value = "TP"  # positives have boxes
    ax = browser.figure.axes[0]
    assert len(ax.patches) == 1 and ax.images[1].get_alpha() == 0.5
    n_lines = len(ax.collections)
    browser.show_boxes.value = False
    browser.opacity.value = 0.8
    ax = browser.figure.axes[0]
    assert len(ax.patches) == 0 and ax.images[1].get_alpha() == 0.8
    browser.show_lung.value = False
    assert len(browser.figure.axes[0].collections) < n_lines
    browser.show_contour.value = True
    browser.contour_level.value = 0.3
    assert len(browser.figure.axes[0].collections) >= 1


def test_missing_maps_are_an_error(run):
    with pytest.raises(FileNotFoundError, match="compute_maps"):
        MapBrowser(run, ["resnet18"], ["layercam"])


def test_shown_image_is_the_rendered_figure_and_follows_the_controls(browser):
    from PIL import Image
    import io

    first = browser.image.value
    assert Image.open(io.BytesIO(first)).format == "PNG"
    browser.opacity.value = 0.9
    second = browser.image.value
    assert second != first, "changing a control re-renders the shown PNG"
    browser.opacity.value = 0.5
    assert browser.image.value == first, "same controls, same picture"


def test_controls_with_nothing_to_show_are_disabled_and_the_notes_say_why(browser):
    st = browser.state()
    assert {"level", "versus"} <= set(st["disabled"]), "contour off, compare off"
    assert browser.other.options == (("(compare is off)", ""),)
    browser.outcome.value = "TN"  # negatives: no boxes
    st = browser.state()
    assert "boxes" in st["disabled"] and "no ground-truth box on this image" in st["notes"]
    assert "no ground-truth box" in browser.notes.value
    browser.show_contour.value = True
    assert "level" not in browser.state()["disabled"]


def test_png_is_drawn_for_the_shown_size_and_the_state_view_matches(browser):
    import hashlib
    import html
    import io
    import json

    from PIL import Image

    width = int(browser.image.layout.width.removesuffix("px"))
    assert Image.open(io.BytesIO(browser.image.value)).size[0] == width * browser.pixel_ratio
    shown = json.loads(html.unescape(browser.state_view.value))
    assert shown["png_sha256"] == hashlib.sha256(browser.image.value).hexdigest()
    assert shown["controls"] == browser.state()["controls"]


def _shown_texts(browser) -> str:
    fig = browser.figure
    texts = [fig._suptitle.get_text() if fig._suptitle else ""]
    for ax in fig.axes:
        texts += [ax.get_title()] + [t.get_text() for t in ax.texts]
    return "\n".join(texts + [browser.notes.value, browser.state_view.value])


def test_all_zero_map_says_no_positive_evidence_and_never_nan(run):
    """An all-zero map (a dead Grad-CAM) has no box energy: the page says why, never 'nan'."""
    import re

    from pneumoloc.explain.stored import save_maps

    src = load_maps(run, "resnet18", "gradcam")
    save_maps(run.maps / "resnet18" / "zero.npz", np.zeros_like(src.maps), src.image_ids,
              {**src.meta, "method": "zero"})
    b = MapBrowser(run, ["resnet18"], ["gradcam", "zero"], display_size=32)
    b.method.value = "zero"
    b.outcome.value = "TP"  # positives: they have boxes, so a box energy would be expected
    b.compare.value = "method"
    b.other.value = "gradcam"
    shown = _shown_texts(b)
    assert not re.search(r"\bnan\b", shown, re.IGNORECASE), shown
    assert shown.count("no positive evidence (all-zero map)") >= 3, shown  # title, overlay, note
    titles = [ax.get_title() for ax in b.figure.axes if ax.get_label() != "<colorbar>"]
    assert "box energy" in titles[1] and "no positive evidence" not in titles[1]  # the other panel's own energy
