"""Stacked OpenCV component boxes: hand-worked cases, the scipy reference and per-image scipy."""
import numpy as np
import pytest
from references import cam_to_boxes
from scipy import ndimage

from pneumoloc.localize import boxes as C


def _maps(kind, rng, n=12, side=40):
    if kind == "noise":  # speckle: hundreds of components, many of equal size
        return rng.random((n, side, side)).astype(np.float16)
    if kind == "smooth":  # CAM-like: a few blobs
        low = rng.random((n, 5, 5)) ** 3
        return np.kron(low, np.ones((side // 5, side // 5))).astype(np.float32)
    grid = np.indices((side, side)).sum(0) % 3 == 0  # diagonal stripes: 8-connected, equal sizes
    return np.broadcast_to(grid * 0.8, (n, side, side)).astype(np.float64)


def _reference(m, t, w, h, p, min_cells, max_boxes):
    """One map with scipy's 2-D labelling: the largest components (ties: first in raster
    order), in label order, as x, y, w, h in original pixels and peak x probability."""
    m = np.asarray(m, np.float32)
    side = m.shape[-1]
    labels, k = ndimage.label(m > np.float32(t), structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel(), minlength=k + 1)[1:]
    rank = np.empty(k, int)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(k)
    rows = []
    for j, sl in enumerate(ndimage.find_objects(labels)):
        if sizes[j] >= min_cells and (not max_boxes or rank[j] < max_boxes):
            y0, x0 = sl[0].start, sl[1].start
            peak = float(m[labels == j + 1].max())
            rows.append([x0 * (w / side), y0 * (h / side), (sl[1].stop - x0) * (w / side),
                         (sl[0].stop - y0) * (h / side), peak * p])
    return np.asarray(rows, float).reshape(-1, 5)


@pytest.mark.parametrize("kind", ["noise", "smooth", "stripes"])
@pytest.mark.parametrize("max_boxes,min_cells", [(0, 1), (4, 1), (2, 3), (1, 1)])
def test_component_boxes_equal_cam_to_boxes_and_per_image_scipy(kind, max_boxes, min_cells):
    rng = np.random.default_rng(max_boxes * 10 + min_cells)
    maps = _maps(kind, rng)
    n = len(maps)
    t = rng.uniform(0.3, 0.7, n)
    w, h, p = rng.uniform(500, 1500, n), rng.uniform(500, 1500, n), rng.random(n)
    ref = cam_to_boxes(maps, t, w, h, p, min_cells=min_cells, max_boxes=max_boxes)
    new = C.component_boxes(maps, t, w, h, p, min_cells=min_cells, max_boxes=max_boxes)
    assert len(new) == n
    for i, (a, b) in enumerate(zip(ref, new)):
        assert a.dtype == b.dtype and np.array_equal(a, b)  # same boxes, order and float bits
        assert np.array_equal(b, _reference(maps[i], t[i], w[i], h[i], p[i], min_cells, max_boxes))


def test_component_boxes_edge_cases():
    assert C.component_boxes(np.zeros((0, 4, 4)), 0.5) == []
    empty = C.component_boxes(np.zeros((3, 4, 4)), 0.5)
    assert [b.shape for b in empty] == [(0, 5)] * 3
    full = C.component_boxes(np.ones((2, 4, 4)), 0.5, widths=[8, 8], heights=[4, 4])
    assert [b.tolist() for b in full] == [[[0, 0, 8, 4, 1]]] * 2  # no component crosses maps


def test_label_stack_matches_scipy_per_image():
    """Same labels as scipy's 2-D labelling of each map, offset by the earlier maps' counts."""
    rng = np.random.default_rng(5)
    masks = rng.random((6, 30, 23)) < 0.45  # rectangular maps too
    labels, image, stats = C.label_stack(masks)
    offset = 0
    for i, mk in enumerate(masks):
        ref, k = ndimage.label(mk, structure=np.ones((3, 3)))
        assert np.array_equal(np.where(ref > 0, ref + offset, 0), labels[i])
        objs = ndimage.find_objects(ref)
        for j, sl in enumerate(objs):
            x0, y0, ww, hh, cells = stats[offset + j]
            assert (image[offset + j], y0, x0, hh, ww) == (i, sl[0].start, sl[1].start,
                                                           sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
            assert cells == (ref == j + 1).sum()
        offset += k
    assert offset == len(stats)


@pytest.mark.parametrize("density", [0.3, 0.5, 0.7])  # below, at and above 8-connected percolation
def test_label_stack_numbers_like_scipy_on_a_large_stack(density):
    """OpenCV's SAUF numbering (first-pixel raster order, also when it runs in stripes on
    several threads) is what the tie-breaking relies on: equal to scipy's labels cell for cell."""
    masks = np.random.default_rng(int(density * 10)).random((16, 96, 96)) < density
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True
    ref, k = ndimage.label(masks, structure=structure)
    labels, image, stats = C.label_stack(masks)
    assert np.array_equal(labels, ref) and len(stats) == k
    assert np.array_equal(stats[:, 4], np.bincount(ref.ravel())[1:])


def test_components_scaled_and_scored():
    m = np.zeros((1, 8, 8))
    m[0, 1:3, 1:4] = 0.9  # component A: rows 1-2, cols 1-3, peak 0.9
    m[0, 5:8, 6] = 0.6    # component B: rows 5-7, col 6
    boxes = C.component_boxes(m, 0.5, widths=[80], heights=[160], probs=[0.5])[0]
    boxes = boxes[np.argsort(-boxes[:, 4])]
    assert boxes[0].tolist() == pytest.approx([10, 20, 30, 40, 0.45])
    assert boxes[1].tolist() == pytest.approx([60, 100, 10, 60, 0.30])
    assert len(C.component_boxes(m, 0.5, min_cells=4)[0]) == 1  # B has 3 cells
    only = C.component_boxes(m, 0.5, max_boxes=1)[0]  # A (6 cells) is the larger component
    assert only[:, :4].tolist() == [[1, 1, 3, 2]]


def test_batch_equals_one_by_one():
    rng = np.random.default_rng(0)
    maps = rng.random((5, 12, 12))
    maps[2] = 0.0  # an image without components between others
    batch = C.component_boxes(maps, 0.7, max_boxes=3)
    for i in range(5):
        single = C.component_boxes(maps[i:i + 1], 0.7, max_boxes=3)[0]
        assert np.array_equal(batch[i], single)
    assert batch[2].shape == (0, 5) and all(len(b) <= 3 for b in batch)
    assert C.component_boxes(np.zeros((1, 4, 4)), 0.5)[0].shape == (0, 5)


def _reference_boxes(m, t, min_cells):
    """One image at a time with plain 2-D labelling (independent of the batched code)."""
    from scipy import ndimage

    labels, k = ndimage.label(m > t, structure=np.ones((3, 3)))
    rows = []
    for j in range(1, k + 1):
        ys, xs = np.nonzero(labels == j)
        if len(ys) >= min_cells:
            rows.append([xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min(), m[ys, xs].max()])
    return np.array(sorted(rows)).reshape(-1, 5)


@pytest.mark.parametrize("threshold", [0.5, 0.9])  # 0.9 on noise: speckle, the vectorized path
def test_the_scipy_reference_matches_per_image_labelling(threshold):
    maps = np.random.default_rng(2).random((4, 40, 40))
    for m, boxes in zip(maps, cam_to_boxes(maps, threshold, min_cells=2)):
        assert np.allclose(np.array(sorted(boxes.tolist())).reshape(-1, 5), _reference_boxes(m, threshold, 2))
