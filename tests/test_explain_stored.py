"""The compute-once map store on a tiny run with a random-weight checkpoint."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pneumoloc.data.tables import DatasetTables, save_tables
from pneumoloc.environment import RunPaths
from pneumoloc.explain import cams, stored as M, explainable
from pneumoloc.models.backbones import build_model
from pneumoloc.models.checkpoints import save_checkpoint
from pneumoloc.models.outputs import save_predictions

torch.set_num_threads(1)
SIZE = 64


def make_run(tmp_path, n: int = 8, findings: tuple[str, ...] = (), backbone: str = "resnet18",
             seed: int = 0) -> RunPaths:
    """A run with n non-square images (half positive, with boxes and lung masks), a split,
    a random-weight checkpoint and predictions."""
    rng = np.random.default_rng(seed)
    run = RunPaths.from_params(str(tmp_path / "run"), str(tmp_path / "figures")).ensure()
    rows, boxes = [], []
    for i in range(n):
        img = (rng.random((40, 48)) * 255).astype(np.uint8)
        lung = np.zeros((40, 48), np.uint8)
        lung[8:32, 6:20] = 255
        lung[8:32, 28:42] = 255
        Image.fromarray(img).save(tmp_path / f"im{i}.png")
        Image.fromarray(lung).save(tmp_path / f"mask{i}.png")
        label = i % 2
        row = {"image_id": f"im{i}", "patient_id": f"p{i // 2}", "path": str(tmp_path / f"im{i}.png"),
               "label": label, "width": 48, "height": 40, "mask_path": str(tmp_path / f"mask{i}.png"),
               "split": "test" if i >= 2 else "train"}
        for k, f in enumerate(findings):
            row[f] = float((i + k) % 2)
        rows.append(row)
        if label:
            boxes.append({"image_id": f"im{i}", "x": 8.0, "y": 10.0, "w": 12.0, "h": 16.0})
    images = pd.DataFrame(rows)
    tables = DatasetTables(images.drop(columns="split"), pd.DataFrame(boxes, columns=["image_id", "x", "y", "w", "h"]),
                           name="test", root=str(tmp_path), findings=list(findings))
    save_tables(run, tables, images=images)
    torch.manual_seed(seed)
    model = build_model(backbone, num_outputs=max(1, len(findings)), image_size=SIZE)
    save_checkpoint(run.model_dir(backbone) / "best.pt", model)
    test = images[images["split"] == "test"]
    probs = np.linspace(0.05, 0.95, len(test))
    save_predictions(run, backbone, pd.DataFrame({"image_id": test["image_id"], "patient_id": test["patient_id"],
                                                  "split": "test", "label": test["label"], "prob": probs}))
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("maps"))


def test_compute_store_and_load(run):
    out = M.compute_maps(run, "resnet18", "gradcam", map_size=16, batch_size=4, target="predicted", progress=False)
    stored = M.load_maps(run, "resnet18", "gradcam")
    assert list(out) == ["gradcam"]
    assert stored.maps.dtype == np.float16 and stored.maps.shape == (6, 16, 16)
    assert list(stored.image_ids) == [f"im{i}" for i in range(2, 8)]
    assert float(stored.maps.min()) >= 0 and float(stored.maps.max()) <= 1
    assert stored.meta["checkpoint_sha256"] and stored.meta["target_layer"] == "backbone.layer4"
    assert stored.meta["input_size"] == SIZE and stored.meta["parameters"]["map_size"] == 16
    listed = M.list_maps(run).set_index("method")  # other tests add methods to this run, in any order
    assert listed.loc["gradcam", ["model", "n", "map_size"]].tolist() == ["resnet18", 6, 16]


def test_stored_maps_equal_the_grad_cam_package_resized(run):
    from pneumoloc.data.cache import cached_images
    from pneumoloc.models.checkpoints import load_model
    from pneumoloc.data.tables import load_tables
    from pneumoloc.training.transforms import to_input

    M.compute_maps(run, "resnet18", "gradcam", map_size=16, target="predicted", progress=False)
    stored = M.load_maps(run, "resnet18", "gradcam")
    images = load_tables(run).images.set_index("image_id").loc[list(stored.image_ids)].reset_index()
    x = to_input(np.asarray(cached_images(images, SIZE, progress=False)))
    ex = explainable.prepare_model(load_model(run.model_dir("resnet18") / "best.pt"))
    ref = M.resize_maps(cams.library_cams(ex, x, "predicted", "gradcam"), 16)[:, 0].numpy()
    assert np.abs(stored.maps.astype(np.float32) - ref).max() < 2e-3  # float16 storage


def test_up_to_date_maps_are_not_recomputed_and_changes_are(run, monkeypatch):
    M.compute_maps(run, "resnet18", "hirescam", map_size=16, progress=False)
    real = cams.explain
    calls = []
    monkeypatch.setattr(cams, "explain", lambda *a, **k: calls.append(1) or real(*a, **k))
    M.compute_maps(run, "resnet18", "hirescam", map_size=16, progress=False)
    assert calls == []
    M.compute_maps(run, "resnet18", "hirescam", map_size=8, progress=False)  # parameters changed
    assert calls and M.load_maps(run, "resnet18", "hirescam").map_size == 8
    calls.clear()
    torch.manual_seed(99)  # a retrained checkpoint: new sha256
    save_checkpoint(run.model_dir("resnet18") / "best.pt", build_model("resnet18", image_size=SIZE))
    M.compute_maps(run, "resnet18", "hirescam", map_size=8, progress=False)
    assert calls


def test_reusing_up_to_date_maps_does_not_load_the_model_again(run, monkeypatch):
    """Notebook 03's gallery stage asks for every stored method of every model: once the model's
    facts are known in the process, an up-to-date file is returned without loading the checkpoint."""
    import pneumoloc.models.checkpoints as checkpoints

    M.compute_maps(run, "resnet18", "gradcam", map_size=16, progress=False)
    M.compute_maps(run, "resnet18", "gradcam++", map_size=16, progress=False)
    loads = []
    real = checkpoints.load_model
    monkeypatch.setattr(checkpoints, "load_model", lambda *a, **k: loads.append(1) or real(*a, **k))
    again = M.compute_maps(run, "resnet18", "gradcam++", map_size=16, progress=False)
    assert loads == [] and again["gradcam++"].map_size == 16
    M.compute_maps(run, "resnet18", "gradcam++", map_size=8, progress=False)  # recomputed: loads the model
    assert loads == [1]


def test_findings_store_one_file_per_finding(tmp_path):
    run = make_run(tmp_path, n=4, findings=("Effusion", "Pneumonia"))
    out = M.compute_maps(run, "resnet18", "gradcam", map_size=8, target="findings", progress=False)
    assert sorted(out) == ["gradcam@Effusion", "gradcam@Pneumonia"]
    assert set(M.list_maps(run)["method"]) == {"gradcam@Effusion", "gradcam@Pneumonia"}
    assert M.load_maps(run, "resnet18", "gradcam@Effusion").maps.shape == (2, 8, 8)


def test_clear_errors(run):
    with pytest.raises(FileNotFoundError, match="compute_maps"):
        M.load_maps(run, "resnet18", "layercam")
    with pytest.raises(KeyError, match="gradcam"):
        M.compute_maps(run, "resnet18", "gradcan", progress=False)
    with pytest.raises(FileNotFoundError, match="notebook 02"):
        M.compute_maps(run, "densenet121", "gradcam", progress=False)


def test_mapset_take_by_id():
    s = M.MapSet(np.array(["a", "b"]), np.stack([np.zeros((2, 2)), np.ones((2, 2))]).astype(np.float16))
    assert s.take(["b", "a"])[:, 0, 0].tolist() == [1.0, 0.0]
    with pytest.raises(KeyError, match="c"):
        s.take(["c"])


def test_store_as_keeps_a_layer_variant_beside_the_default_and_holds_several_splits(tmp_path):
    run = make_run(tmp_path)
    default = M.compute_maps(run, "resnet18", "gradcam", progress=False)["gradcam"]
    both = M.compute_maps(run, "resnet18", "gradcam", split=["train", "test"], target_layer="backbone.layer3",
                          store_as="gradcam@layer3", progress=False)["gradcam@layer3"]
    assert list(both.image_ids) == [f"im{i}" for i in range(8)], "train and test rows, table order"
    assert both.meta["splits"] == ["train", "test"] and both.meta["target_layer"] == "backbone.layer3"
    listed = M.list_maps(run).set_index("method")
    assert {"gradcam", "gradcam@layer3"} <= set(listed.index)
    test_only = M.compute_maps(run, "resnet18", "gradcam", target_layer="backbone.layer3",
                               store_as="l3_test", progress=False)["l3_test"]
    tol = _stored_map_tolerance(run, "resnet18", "backbone.layer3", test_only)
    np.testing.assert_array_less(np.abs(both.take(test_only.image_ids).astype(np.float64)
                                        - test_only.take(test_only.image_ids)).max(axis=(1, 2)), tol)


def _stored_map_tolerance(run, model_name: str, layer: str, stored: M.MapSet) -> np.ndarray:
    """Per-map bound on two stores of the same maps computed in different batches.

    Batch composition may change float32 rounding (tests/tolerances.py bounds it from the
    Grad-CAM terms, then once more for the min-max after the resize); each store then rounds
    values in [0, 1] to float16, which two nearby values may straddle by one float16 ulp at
    1 (2**-10 spacing in [1, 2), 2**-11 in [0.5, 1)): 2**-10 covers it.
    """
    from pneumoloc.data.cache import cached_images
    from pneumoloc.models.checkpoints import load_model
    from pneumoloc.data.tables import load_tables
    from pneumoloc.training.transforms import to_input
    from tolerances import cam_tolerance, fast_cam_terms, normalized_error

    images = load_tables(run).images.set_index("image_id").loc[list(stored.image_ids)].reset_index()
    ex = explainable.prepare_model(load_model(run.model_dir(model_name) / "best.pt"), target_layer=layer)
    x = to_input(np.array(cached_images(images, SIZE, progress=False)))
    cam = cams.explain(ex, x, "gradcam")
    before_resize = cam_tolerance(fast_cam_terms(ex, x, "pneumonia", "gradcam")[0], (SIZE, SIZE))
    size = stored.maps.shape[-1]  # resize_maps without its final min-max, whose range matters here
    resized = torch.nn.functional.interpolate(cam.double(), size=(size, size), mode="bilinear",
                                              align_corners=False, antialias=size < SIZE)[:, 0]
    return (normalized_error(resized, before_resize[:, None, None]) + 2.0 ** -10).numpy()
    reloaded = M.load_maps(run, "resnet18", "gradcam")
    np.testing.assert_array_equal(reloaded.maps, default.maps)
    assert np.abs(both.take(default.image_ids) - default.take(default.image_ids)).max() > 0.05


def test_unknown_split_is_an_error(run):
    with pytest.raises(ValueError, match="split"):
        M.compute_maps(run, "resnet18", "gradcam", split=["val", "tset"], progress=False)


class Killed(BaseException):
    """Stands for a kill at an exact instant (BaseException: no handler in the library catches it)."""


def test_maps_and_their_parameters_are_one_unit(tmp_path, monkeypatch):
    import os

    run = make_run(tmp_path)
    M.compute_maps(run, "resnet18", "gradcam", map_size=16, progress=False)
    real, renamed = os.replace, []

    def replace(src, dst):  # the first rename goes through, the process dies at the next one
        if renamed:
            raise Killed(f"killed before renaming onto {dst}")
        renamed.append(dst)
        real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    try:
        M.compute_maps(run, "resnet18", "gradcam", map_size=8, progress=False)
    except Killed:
        pass
    monkeypatch.undo()
    stored = M.load_maps(run, "resnet18", "gradcam")
    assert stored.meta["map_size"] == stored.meta["parameters"]["map_size"] == stored.map_size
    assert sorted(p.name for p in (run.maps / "resnet18").iterdir()) == ["gradcam.npz"]


def test_maps_of_another_checkpoint_are_refused_naming_the_stage(tmp_path):
    from pneumoloc.models.outputs import StaleArtifactError

    run = make_run(tmp_path)
    M.compute_maps(run, "resnet18", "gradcam", map_size=8, progress=False)
    torch.manual_seed(7)  # retrained: best.pt changes, the stored maps do not
    save_checkpoint(run.model_dir("resnet18") / "best.pt", build_model("resnet18", image_size=SIZE))
    with pytest.raises(StaleArtifactError, match=r"gradcam.npz of resnet18 was made by checkpoint \w+.* "
                                                 r"but .*best.pt is \w+.*rerun 03_gradcam_gallery"):
        M.load_maps(run, "resnet18", "gradcam")
    M.compute_maps(run, "resnet18", "gradcam", map_size=8, progress=False)  # recomputed for the new one
    assert M.load_maps(run, "resnet18", "gradcam").meta["checkpoint_sha256"] == M.checkpoint_sha256(
        run.model_dir("resnet18") / "best.pt")
    (run.model_dir("resnet18") / "best.pt").unlink()
    with pytest.raises(StaleArtifactError, match="does not exist.*rerun 02_train_backbone"):
        M.load_maps(run, "resnet18", "gradcam")


def test_maps_stored_with_a_separate_json_are_refused_and_recomputed(tmp_path):
    from pneumoloc.models.outputs import StaleArtifactError
    from pneumoloc.storage import save_arrays, save_json

    run = make_run(tmp_path)
    fresh = M.compute_maps(run, "resnet18", "gradcam", map_size=8, progress=False)["gradcam"]
    path = M.map_file(run, "resnet18", "gradcam")
    save_arrays(path, maps=fresh.maps, image_ids=fresh.image_ids.astype(str))  # the layout with metadata beside
    save_json(path.with_suffix(".json"), fresh.meta)
    with pytest.raises(StaleArtifactError, match="gradcam.npz.*no metadata inside.*rerun 03_gradcam_gallery"):
        M.load_maps(run, "resnet18", "gradcam")
    with pytest.warns(UserWarning, match="gradcam.npz"):
        assert M.list_maps(run).empty
    again = M.compute_maps(run, "resnet18", "gradcam", map_size=8, progress=False)["gradcam"]
    np.testing.assert_array_equal(again.maps, fresh.maps)
    assert M.load_maps(run, "resnet18", "gradcam").meta["parameters"] == fresh.meta["parameters"]
    assert not path.with_suffix(".json").exists()


def test_compute_maps_removes_temp_files_of_a_killed_run(run):
    import subprocess
    import sys

    from pneumoloc import storage

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = run.maps / "resnet18"
    folder.mkdir(parents=True, exist_ok=True)
    left = folder / f".gradcam.npz.{dead.pid}@{storage._host_tag()}.abc.tmp"
    left.write_bytes(b"half a file")
    M.compute_maps(run, "resnet18", "gradcam", map_size=16, target="predicted", progress=False)
    assert not left.exists()


def test_the_activation_choice_is_a_map_parameter(run, monkeypatch):
    """``activation`` (which value of an in-place-modified target layer the CAM weights, see
    explain.explainable.prepare_model) is stored with the maps; changing it recomputes them."""
    M.compute_maps(run, "resnet18", "gradcam++", map_size=8, progress=False)
    assert M.load_maps(run, "resnet18", "gradcam++").meta["parameters"]["activation"] == "as_produced"
    real = cams.explain
    calls = []
    monkeypatch.setattr(cams, "explain", lambda *a, **k: calls.append(1) or real(*a, **k))
    M.compute_maps(run, "resnet18", "gradcam++", map_size=8, activation="as_library", progress=False)
    assert calls and M.load_maps(run, "resnet18", "gradcam++").meta["parameters"]["activation"] == "as_library"
    with pytest.raises(ValueError, match="activation='as_libary' unknown"):
        M.compute_maps(run, "resnet18", "gradcam++", activation="as_libary", progress=False)
