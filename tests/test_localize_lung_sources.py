"""Lung mask sources: CheXmask (more in test_data_chexmask.py), dataset PNGs, classical fallback, PSPNet from a local file."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from references import otsu_lung_mask

from pneumoloc.localize import lung_sources as LM


def _encode(mask):
    flat = np.concatenate([[0], mask.ravel().astype(int), [0]])
    runs = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs[1::2] -= runs[::2]
    return " ".join(map(str, runs))


def test_chexmask_table_read_by_id(tmp_path):
    left = np.zeros((40, 60), bool)
    left[5:35, 5:25] = True
    right = np.zeros((40, 60), bool)
    right[5:35, 35:55] = True
    # MIMIC-CXR-JPG.csv names its id column dicom_id (found without id_column)
    pd.DataFrame({"dicom_id": ["a"], "Dice RCA (Mean)": [0.8], "Dice RCA (Max)": [0.9], "Landmarks": ["1,2"],
                  "Left Lung": [_encode(left)], "Right Lung": [_encode(right)],
                  "Heart": [""], "Height": [40], "Width": [60]}).to_csv(tmp_path / "cm.csv", index=False)
    images = pd.DataFrame({"image_id": ["a", "zzz"]})
    out = LM.lung_masks("chexmask", images, 12, table=tmp_path / "cm.csv")
    assert out.missing == 1 and not out.approximate
    assert (out.masks[0] == LM.resize_mask(left | right, 12)).all()
    assert not out.masks[1].any()


def test_dataset_masks_from_png(tmp_path):
    mask = np.zeros((64, 32), np.uint8)
    mask[8:56, 4:14] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    images = pd.DataFrame({"image_id": ["a", "b"], "mask_path": [str(tmp_path / "m.png"), None]})
    out = LM.lung_masks("dataset", images, 16)
    expected = np.zeros((16, 16), bool)
    expected[2:14, 2:7] = True  # rows 8..56 of 64 -> 2..14; cols 4..14 of 32 -> 2..7
    assert (out.masks[0] == expected).all() and out.missing == 1
    with pytest.raises(ValueError, match="mask_path"):
        LM.lung_masks("dataset", images.drop(columns="mask_path"), 16)


def test_classical_fallback_finds_two_dark_lungs():
    yy, xx = np.mgrid[:96, :96]
    body = ((yy - 48) / 46) ** 2 + ((xx - 48) / 40) ** 2 < 1
    lungs = (((yy - 45) / 28) ** 2 + ((xx - 30) / 12) ** 2 < 1) | (((yy - 45) / 28) ** 2 + ((xx - 66) / 12) ** 2 < 1)
    img = np.where(body, 200, 20) - 140 * lungs + np.random.default_rng(0).normal(0, 5, body.shape)
    out = LM.lung_masks("classical", pd.DataFrame({"image_id": ["a"]}), 96,
                        pixels=np.clip(img, 0, 255).astype(np.uint8)[None])
    assert out.approximate
    found = out.masks[0]
    assert (found & lungs).sum() / lungs.sum() > 0.98  # every dark lung pixel
    # ellipses are not lung-shaped: where the atlas is confident (> 0.6) it adds lung
    assert (found & lungs).sum() / (found | lungs).sum() > 0.75
    assert not (found & ~body).any()


def test_classical_fallback_of_a_blank_image_is_empty():
    assert not LM.classical_lung_mask(np.full((32, 32), 7, np.uint8)).any()


def test_pspnet_without_weights_says_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="classical"):
        LM.lung_masks("pspnet", pd.DataFrame({"image_id": ["a"]}), 8,
                      weights=tmp_path / LM.PSPNET_WEIGHTS_NAME)


def test_unknown_source_lists_known():
    with pytest.raises(KeyError, match="chexmask"):
        LM.lung_masks("nope", pd.DataFrame(), 8)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from pneumoloc.phantom.writer import generate_phantom
    from pneumoloc.data.readers import read_dataset

    root = generate_phantom(tmp_path_factory.mktemp("ph") / "ph", n_images=8, size=128, workers=1, seed=1)
    return read_dataset("phantom", str(root))


def test_phantom_dataset_masks_are_exact_and_classical_is_approximate(phantom):
    from pneumoloc.data.images import read_grayscale
    from pneumoloc.localize.lung_atlas import lung_atlas

    exact = LM.lung_masks("dataset", phantom.images, 128)
    assert exact.missing == 0 and not exact.approximate
    for i, p in enumerate(phantom.images["mask_path"]):
        assert (exact.masks[i] == (read_grayscale(p) > 0)).all()  # same size: no resampling loss
    # the prior must not have seen the shapes it is scored on: leave the phantom's masks out
    atlas = lung_atlas(frozenset(phantom.images["lung_source"]))
    approx = LM.lung_masks("classical", phantom.images, 128, atlas=atlas)
    assert approx.approximate and approx.missing == 0
    iou = [(a & b).sum() / (a | b).sum() for a, b in zip(exact.masks, approx.masks)]
    before = [(a & otsu_lung_mask(read_grayscale(p))).sum() / (a | otsu_lung_mask(read_grayscale(p))).sum()
              for a, p in zip(exact.masks, phantom.images["path"])]
    # measured: 0.87 mean at 256 px over 60 images (bench/bench_lung_fallback.py); Otsu alone 0.62
    assert np.mean(iou) > 0.8 and min(iou) > 0.6
    assert np.mean(iou) > np.mean(before) + 0.1


# --------------------------------------------------------------------------- PSPNet
# torchxrayvision's PSPNet (ResNet-101, dilated) always runs at 512 x 512 (its forward
# resizes any input), ~7-13 s per image on one CPU thread: the two model tests are slow.


class _NotATensor:  # a pickled object that torch.load(weights_only=True) must refuse
    pass


def _chest_png(path, seed):
    yy, xx = np.mgrid[:64, :64]
    body = ((yy - 32) / 31) ** 2 + ((xx - 32) / 27) ** 2 < 1
    lungs = (((yy - 30) / 19) ** 2 + ((xx - 20) / 8) ** 2 < 1) | (((yy - 30) / 19) ** 2 + ((xx - 44) / 8) ** 2 < 1)
    img = np.where(body, 200, 20) - 140 * lungs + np.random.default_rng(seed).normal(0, 8, body.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def pspnet_run(tmp_path_factory):
    """A random-init PSPNet saved like the published file, our masks and a direct reference."""
    import torch
    import torchxrayvision as xrv
    from torchxrayvision.baseline_models.chestx_det.ptsemseg.pspnet import pspnet

    d = tmp_path_factory.mktemp("pspnet")
    torch.manual_seed(0)
    net = pspnet(n_classes=14)
    # the published file is a DataParallel state dict: every key starts with "module."
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, d / LM.PSPNET_WEIGHTS_NAME)
    del net
    paths = [_chest_png(d / f"im{i}.png", i) for i in range(2)]
    reference = xrv.baseline_models.chestx_det.PSPNet(cache_dir=str(d))
    x = torch.stack([torch.from_numpy(
        (2 * np.asarray(Image.open(p).resize((512, 512), Image.Resampling.BILINEAR), np.float32) / 255 - 1) * 1024)
        for p in paths])[:, None]
    with torch.no_grad():
        prob = torch.sigmoid(reference(x)).numpy()  # [2, 14, 512, 512]
    left, right = (xrv.baseline_models.chestx_det.PSPNet.targets.index(n) for n in ("Left Lung", "Right Lung"))
    assert (left, right) == (4, 5)  # the documented target order
    # random weights give near-constant probabilities: cut at their median so the mask is not trivial
    threshold = float(np.median(np.maximum(prob[:, 4], prob[:, 5])))
    images = pd.DataFrame({"image_id": ["a", "b"], "path": paths})
    ours = LM.lung_masks("pspnet", images, 512, weights=d / LM.PSPNET_WEIGHTS_NAME, threshold=threshold)
    return ours, prob, threshold


@pytest.mark.slow
def test_pspnet_masks_from_a_local_state_dict_file(pspnet_run):
    ours, _, _ = pspnet_run
    assert ours.masks.shape == (2, 512, 512) and ours.masks.dtype == bool
    assert ours.source == "pspnet" and not ours.approximate and ours.missing == 0
    assert 0.05 < ours.masks.mean() < 0.95  # neither all lung nor none


@pytest.mark.slow
def test_pspnet_masks_equal_torchxrayvision_lung_channels(pspnet_run):
    ours, prob, t = pspnet_run
    expected = (prob[:, 4] > t) | (prob[:, 5] > t)  # Left Lung or Right Lung
    assert (ours.masks == expected).all()
    assert (ours.masks != ((prob[:, 0] > t) | (prob[:, 1] > t))).any()  # other channels differ


def test_pspnet_weights_load_with_weights_only(tmp_path):
    import torch

    torch.save({"module.x": _NotATensor()}, tmp_path / LM.PSPNET_WEIGHTS_NAME)
    with pytest.raises(ValueError, match="not a loadable PSPNet") as err:
        LM.lung_masks("pspnet", pd.DataFrame({"image_id": ["a"]}), 8,
                      weights=tmp_path / LM.PSPNET_WEIGHTS_NAME, pixels=np.zeros((1, 8, 8), np.uint8))
    assert "weights_only" in str(err.value) or "Unpickl" in str(err.value)


class _WritesAFile:
    """Unpickling calls ``open(path, "w")``: proof that code ran during the load."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


class _TorchLoadWithoutWeightsOnly:
    """``torch`` as a torchxrayvision release that calls ``torch.load(path)`` bare would see it."""

    def __getattr__(self, name):
        import torch

        return getattr(torch, name)

    @staticmethod
    def load(f, map_location=None, weights_only=None, **kwargs):
        import torch

        return torch.load(f, map_location=map_location, **kwargs)


def _code_running_weights(tmp_path):
    import torch

    marker = tmp_path / "pwned.txt"
    torch.save({"module.x": _WritesAFile(marker)}, tmp_path / LM.PSPNET_WEIGHTS_NAME)
    assert not marker.exists()
    return tmp_path / LM.PSPNET_WEIGHTS_NAME, marker


@pytest.mark.parametrize("bare_torch_load", [False, True])
def test_pspnet_load_runs_no_code_when_the_environment_forces_unsafe_loads(tmp_path, monkeypatch,
                                                                           bare_torch_load):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 makes every torch.load that leaves ``weights_only``
    unset unpickle arbitrary code (torch/serialization.py, ``load``); the weights must still be
    read with the restricted unpickler, also by a torchxrayvision that calls torch.load bare."""
    import torchxrayvision as xrv

    weights, marker = _code_running_weights(tmp_path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    if bare_torch_load:
        monkeypatch.setattr(xrv.baseline_models.chestx_det, "torch", _TorchLoadWithoutWeightsOnly())
    LM._load_pspnet.cache_clear()
    with pytest.raises(ValueError, match=r"not a loadable PSPNet.*weights_only=True\) refused"):
        LM.lung_masks("pspnet", pd.DataFrame({"image_id": ["a"]}), 8, weights=weights,
                      pixels=np.zeros((1, 8, 8), np.uint8))
    assert not marker.exists(), "unpickling ran code"


def test_pspnet_weights_file_must_keep_its_published_name(tmp_path):
    (tmp_path / "lungs.pth").write_bytes(b"x")
    with pytest.raises(ValueError, match=LM.PSPNET_WEIGHTS_NAME):
        LM.lung_masks("pspnet", pd.DataFrame({"image_id": ["a"]}), 8, weights=tmp_path / "lungs.pth")


def test_pspnet_mask_is_the_union_of_both_lung_channels(tmp_path, monkeypatch):
    """Random weights give nearly constant channels, so the channel choice is checked with a
    stand-in network whose Left Lung / Right Lung / other channels are known half-planes."""
    import torch

    class Known(torch.nn.Module):
        targets = ["Heart", "Left Lung", "Right Lung", "Spine"]

        def forward(self, x):
            out = torch.full((len(x), 4, 512, 512), -10.0)
            out[:, 1, :, 256:] = 10.0  # Left Lung: image right half (patient's left)
            out[:, 2, :, :128] = 10.0  # Right Lung: leftmost quarter
            out[:, 0, :256] = 10.0  # Heart: top half, must not count
            return out

    weights = tmp_path / LM.PSPNET_WEIGHTS_NAME
    weights.write_bytes(b"stand-in")
    monkeypatch.setattr(LM, "_load_pspnet", lambda path, stamp: Known())
    got = LM.lung_masks("pspnet", pd.DataFrame({"image_id": ["a"]}), 8, weights=weights,
                        pixels=np.zeros((1, 32, 32), np.uint8))
    expected = np.zeros((8, 8), bool)
    expected[:, 4:] = True
    expected[:, :2] = True
    np.testing.assert_array_equal(got.masks[0], expected)
    assert got.source == "pspnet" and not got.approximate
