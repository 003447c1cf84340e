"""Figures of notebooks 01, 03 (randomization test), 04 and 06 readable printed in a paper:
line, bar and histogram figures one column wide (3.5 in), image grids and the randomization
panels at most two columns (7.16 in) and 9 in tall, no text under 6 pt, no text over text
(:mod:`figure_checks`), on inputs as large as the demo's (seven backbones, five methods)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from figure_checks import assert_readable, text_boxes
from pneumoloc.plots.style import COLUMN_IN, TWO_COLUMN_IN, method_label, model_label

SEVEN = ["resnet18", "resnet50", "densenet121", "efficientnet_b0", "mobilenet_v2", "mobilenet_v3", "vit_ti_16"]
FIVE = ["gradcam", "gradcam++", "hirescam", "gradient", "guided_gradcam"]
RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _texts(fig) -> list[str]:
    return [t for t, _, _ in text_boxes(fig)]


# --- notebook 03: cascading randomization ------------------------------------------------------

def _sanity_table(backbones=SEVEN, methods=FIVE) -> pd.DataFrame:
    steps = {"resnet18": 7, "resnet50": 7, "densenet121": 11, "efficientnet_b0": 6, "mobilenet_v2": 6,
             "mobilenet_v3": 11, "vit_ti_16": 16}
    rows = [{"backbone": b, "method": m, "step": s, "layer": "original" if s == 0 else f"blocks.{s}",
             "spearman": 1.0 if s == 0 else RNG.uniform(-0.3, 1), "ssim": 1.0 if s == 0 else RNG.uniform(-0.1, 1),
             "n": 8} for b in backbones for m in methods for s in range(steps[b] + 1)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("backbones", [SEVEN, SEVEN[:1], ["resnet18", "densenet121", "mobilenet_v3", "vit_ti_16"]])
def test_randomization_panels_are_at_most_two_columns_with_one_legend(backbones):
    from pneumoloc.plots.sanity import plot_sanity

    table = _sanity_table(backbones)
    table.loc[len(table) // 2, "spearman"] = -0.9  # a reversed map stays inside every (shared) y range
    fig = plot_sanity(table, threshold=0.5)
    assert_readable(fig, TWO_COLUMN_IN)
    assert all(ax.get_ylim()[0] <= -0.9 for ax in fig.axes if ax.get_visible() and ax.axison)
    texts = _texts(fig)
    for m in FIVE:  # one legend entry per method, as the literature names it
        assert texts.count(method_label(m)) == 1, m
    assert sum("threshold" in t for t in texts) == 1  # the flag line is labelled once
    for b in backbones:
        assert any(t.startswith(model_label(b)) for t in texts), b


def test_randomization_figure_is_drawn_by_the_plots_stage_only():
    from pneumoloc.explain import sanity

    assert not hasattr(sanity, "plot_sanity")


# --- notebook 01: data audit -------------------------------------------------------------------

@pytest.fixture
def audit_tables(tmp_path):
    rows = []
    for i in range(40):
        path = tmp_path / f"PH{i:05d}_{i % 3}.png"
        Image.fromarray(RNG.integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
        rows.append({"image_id": path.stem, "patient_id": f"PH{i // 3:05d}", "path": str(path), "label": i % 2,
                     "width": 64, "height": 64, "split": ["train", "train", "train", "val", "test"][i % 5]})
    images = pd.DataFrame(rows)
    pos = images[images["label"] == 1]["image_id"]
    boxes = pd.DataFrame({"image_id": list(pos) + list(pos[:6]), "x": RNG.uniform(5, 30, len(pos) + 6),
                          "y": RNG.uniform(5, 30, len(pos) + 6), "w": RNG.uniform(5, 20, len(pos) + 6),
                          "h": RNG.uniform(5, 25, len(pos) + 6)})
    return images, boxes


def test_split_counts_are_one_column(audit_tables):
    from pneumoloc.plots.audit import plot_split_counts

    assert_readable(plot_split_counts(audit_tables[0]), COLUMN_IN)


def test_images_per_patient_and_leakage_are_one_column(audit_tables):
    from pneumoloc.plots.audit import plot_images_per_patient, plot_leakage

    assert_readable(plot_images_per_patient(audit_tables[0]), COLUMN_IN)
    assert_readable(plot_leakage({"image-level random split": 0.412, "patient-wise split": 0.0}), COLUMN_IN)


def test_box_statistics_are_one_column(audit_tables):
    from pneumoloc.plots.audit import plot_box_statistics

    assert_readable(plot_box_statistics(*audit_tables), COLUMN_IN)


def test_sample_grid_is_at_most_two_columns(audit_tables):
    from pneumoloc.plots.audit import plot_sample_grid

    assert_readable(plot_sample_grid(*audit_tables, n=8), TWO_COLUMN_IN)


def test_nih_leakage_is_one_column():
    from pneumoloc.plots.audit import plot_nih_leakage

    audit = pd.DataFrame({"leaked_images": [2311, 4730, 0, 0]},
                         index=pd.MultiIndex.from_product([["image-level", "patient-wise"], ["val", "test"]],
                                                          names=["scheme", "split"]))
    assert_readable(plot_nih_leakage(audit), COLUMN_IN)


def test_rsna_boxes_are_one_column():
    from pneumoloc.plots.audit import plot_rsna_boxes

    n = 600
    w, h = RNG.uniform(40, 400, n), RNG.uniform(40, 700, n)
    boxes = pd.DataFrame({"w": w, "h": h, "cx": RNG.uniform(100, 900, n), "cy": RNG.uniform(150, 850, n)})
    stats = {"boxes": boxes, "n_boxes": 9555, "n_positive_images": 6012, "n_images": 26684,
             "boxes_per_positive_image": pd.Series([2614, 3266, 119, 13], index=[1, 2, 3, 4])}
    assert_readable(plot_rsna_boxes(stats), COLUMN_IN)


# --- notebook 06: the shortcut figure ----------------------------------------------------------

def _shortcut_cases(n=4):
    from pneumoloc.plots.gallery import CaseData
    from pneumoloc.plots.shortcut import ShortcutCases

    ids = np.array([f"PH{k:05d}_0" for k in range(n)])
    data = {v: CaseData(ids, RNG.integers(0, 255, (n, 128, 128), dtype=np.uint8),
                        [np.array([[30.0, 40, 15, 20]])] * n, None) for v in ("shortcut", "clean")}
    return ShortcutCases(data=data, maps={v: RNG.random((n, 16, 16)).astype(np.float32) for v in data},
                         markers=[np.array([[4.0, 4, 12, 12]])] * n, labels=np.arange(n) % 2 == 0)


def _shortcut_summary() -> pd.DataFrame:
    rows = []
    for model in ("shortcut", "clean"):
        for q in ("energy_on_marker", "energy_on_lesions", "pointing_on_marker", "pointing_on_lesions"):
            rows.append({"quantity": q, "model": model, "images": "own", "value": 0.1, "low": 0.05, "high": 0.19})
        for q in ("val_roc_auc", "test_roc_auc"):
            rows.append({"quantity": q, "model": model, "images": model, "value": 0.9, "low": 0.8, "high": 1.0})
        rows.append({"quantity": "marker_reliance", "model": model, "images": "both", "value": 0.13, "low": 0.1,
                     "high": 0.17})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n", [2, 4, 6])
def test_shortcut_figure_is_at_most_two_columns(n):
    from pneumoloc.plots.shortcut import shortcut_figure

    fig = shortcut_figure(_shortcut_cases(n), _shortcut_summary(),
                          title="demo: does the resnet18 / gradcam@layer3 map reveal the shortcut?")
    assert_readable(fig, TWO_COLUMN_IN)


# --- notebook 04's small figures ---------------------------------------------------------------

def _metrics(models, methods, names) -> pd.DataFrame:
    rows = [{"model": mo, "method": me, "variant": v, "metric": n, "value": x, "low": x - 0.05, "high": x + 0.05}
            for mo in models for me in methods for n in names for v in ("maps", "shuffled_boxes")
            for x in [RNG.uniform(0.05, 0.9)]]
    rows += [{"model": "chance", "method": c, "variant": "maps", "metric": n, "value": RNG.uniform(0.05, 0.6),
              "low": np.nan, "high": np.nan} for n in names for c in ("uniform_image", "box_prior", "uniform_lung")
             if not (n == "lar" and c != "uniform_image")]
    return pd.DataFrame(rows)


def test_lar_bars_of_seven_backbones_and_five_methods_are_one_column():
    from pneumoloc.plots.localization import metric_bars

    assert_readable(metric_bars(_metrics(SEVEN, FIVE, ["lar"]), ["lar"], ncols=1), COLUMN_IN)


def test_cam_depth_is_one_column():
    from pneumoloc.plots.localization import metric_bars

    m = _metrics(["resnet18"], ["gradcam", "gradcam@layer3", "gradcam@layer3+4"], ["hit", "energy", "auprc", "lar"])
    assert_readable(metric_bars(m, ["hit", "energy", "auprc", "lar"]), COLUMN_IN)


@pytest.mark.parametrize("metric", ["hit", "energy"])
def test_localization_vs_auc_names_close_models_without_overlap(metric):
    from pneumoloc.plots.localization import localization_vs_auc

    aucs = pd.Series(dict(zip(SEVEN, [0.971, 0.676, 0.895, 0.557, 0.561, 0.563, 0.578])))  # four within 0.02
    fig = localization_vs_auc(_metrics(SEVEN, FIVE, [metric]), aucs, metric)
    assert_readable(fig, COLUMN_IN)
    texts = _texts(fig)
    for b in SEVEN:
        assert texts.count(model_label(b)) == 1, b
