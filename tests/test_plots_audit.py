import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pneumoloc.plots import audit as audit_plots


@pytest.fixture
def tiny(tmp_path):
    rows = []
    for i in range(6):
        img = np.full((40, 50), 100, np.uint8)
        path = tmp_path / f"i{i}.png"
        Image.fromarray(img).save(path)
        mask = np.zeros((40, 50), np.uint8)
        mask[5:35, 5:20] = 255
        Image.fromarray(mask).save(tmp_path / f"m{i}.png")
        rows.append({"image_id": f"i{i}", "patient_id": f"p{i // 2}", "path": str(path), "label": i % 2,
                     "width": 50, "height": 40, "mask_path": str(tmp_path / f"m{i}.png"),
                     "split": ["train", "val", "test"][i // 2]})
    boxes = pd.DataFrame({"image_id": ["i1", "i1", "i3"], "x": [10, 0, 25], "y": [4, 0, 20], "w": [10, 50, 5], "h": [8, 40, 10]})
    return pd.DataFrame(rows), boxes


def test_relative_boxes_hand_computed(tiny):
    images, boxes = tiny
    rel = audit_plots.relative_boxes(images, boxes)
    np.testing.assert_allclose(rel["cx"], [15 / 50, 25 / 50, 27.5 / 50])
    np.testing.assert_allclose(rel["cy"], [8 / 40, 20 / 40, 25 / 40])
    np.testing.assert_allclose(rel["area"], [80 / 2000, 1.0, 50 / 2000])


def test_figures_render(tiny):
    import matplotlib.pyplot as plt

    images, boxes = tiny
    figs = [
        audit_plots.plot_split_counts(images),
        audit_plots.plot_images_per_patient(images),
        audit_plots.plot_leakage({"image": 0.4, "patient": 0.0}),
        audit_plots.plot_sample_grid(images, boxes, n=6),
        audit_plots.plot_box_statistics(images, boxes),
    ]
    grid = figs[3]
    # n=6 shows all three pneumonia images, so all 3 boxes are drawn
    assert sum(len(ax.patches) for ax in grid.axes) == 3
    assert figs[0].axes[0].get_title().startswith("images")
    for f in figs:
        plt.close(f)


def test_torchxrayvision_table_figures_build():
    """The real NIH leakage audit and RSNA box statistics (tables shipped in torchxrayvision)."""
    from pneumoloc.data.xrv_assets import load_nih_table, nih_leakage_audit, rsna_box_stats

    fig = audit_plots.plot_nih_leakage(nih_leakage_audit(load_nih_table().iloc[:3000], seed=1))
    assert len(fig.axes[0].patches) == 4
    fig2 = audit_plots.plot_rsna_boxes(rsna_box_stats())
    assert len(fig2.axes) >= 3
