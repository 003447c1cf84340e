"""A checkpoint saved by the Shahi & Bagale code imported as a model of a run (``pneumoloc
import-checkpoint``): the files notebook 02 writes, predictions equal to their network's own
forward, and maps computed from it as notebook 03 does."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pneumoloc.cli import main
from pneumoloc.data.cache import cached_images
from pneumoloc.data.tables import load_tables
from pneumoloc.environment import RunPaths
from pneumoloc.explain.cams import InplaceActivationWarning
from pneumoloc.explain.stored import compute_maps, require_trained
from pneumoloc.models.checkpoints import load_checkpoint, load_model
from pneumoloc.models.outputs import load_metrics, load_predictions
from pneumoloc.training.recipe import recipe_line
from pneumoloc.storage import sha256_of
from pneumoloc.training.imported import IMPORTED_RECIPE, install_checkpoint
from test_models_paper import _their_input, _write
from tolerances import other_path_error

torch.set_num_threads(1)  # the test machine is shared
ARCH, SIZE = "densenet121", 64  # the tiny run's image size; an architecture the tiny run did not train


def on_tiny_run(test):
    """Marks a test on a copy of the session's tiny run (its notebooks executed once, shared with
    tests/test_notebooks.py in the same xdist group)."""
    for mark in (pytest.mark.slow, pytest.mark.notebooks, pytest.mark.xdist_group("notebooks")):
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def imported(tiny_run, tmp_path_factory):
    """A copy of the tiny run (the session's stays untouched) with their DenseNet-121 imported by the CLI."""
    root = tmp_path_factory.mktemp("imported")
    shutil.copytree(tiny_run[0] / "run", root / "run")
    net = _write(root / "their_densenet.pt", ARCH, SIZE)
    code = main(["import-checkpoint", str(root / "their_densenet.pt"), "--backbone", ARCH,
                 "--run", str(root / "run"), "--n-boot", "20", "--device", "cpu"])
    assert code == 0
    return RunPaths.from_params(str(root / "run")), root / "their_densenet.pt", net


@on_tiny_run
def test_cli_writes_the_files_training_writes(imported):
    run, source, _ = imported
    folder = run.model_dir(ARCH)
    assert {"best.pt", "config.json", "predictions.csv", "metrics.json"} <= {p.name for p in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    assert config["recipe"] == IMPORTED_RECIPE and config["train"] == {}
    assert config["imported_from"] == str(source.resolve()) and config["sha256"] == sha256_of(source)
    assert config["model"]["image_size"] == SIZE and config["model"]["kind"] == "paper"
    ckpt = load_checkpoint(run.best_checkpoint(ARCH))  # pneumoloc format: checksum verified, weights_only
    assert ckpt["imported_from"] == str(source.resolve()) and ckpt["recipe"] == IMPORTED_RECIPE
    metrics = load_metrics(run, ARCH)  # stamped with best.pt's digest
    assert metrics["stopped"] == "imported" and "roc_auc" in metrics["operating_points"]["default"]
    require_trained(run, [ARCH])
    assert recipe_line(config) == IMPORTED_RECIPE  # the recipe column of every table


@on_tiny_run
def test_predictions_equal_their_network_on_the_run_images(imported):
    run, _, net = imported
    pred = load_predictions(run, ARCH)  # refuses predictions not made by the current best.pt
    images = load_tables(run).images.set_index("image_id").loc[pred["image_id"]].reset_index()
    assert list(pred["split"]) == list(images["split"]) and set(pred["split"]) == {"val", "test"}
    u = torch.from_numpy(np.asarray(cached_images(images, SIZE, progress=False), dtype=np.float32) / 255)
    x = (u[:, None] - 0.5) / 0.25  # pneumoloc's input normalization, restated
    with torch.no_grad():
        p32 = net.backbone(_their_input(x)).softmax(1)[:, 1]
        p64 = net.double().backbone(_their_input(x).double()).softmax(1)[:, 1]
    net.float()
    # both float32 paths round like the one measured against float64 (tests/tolerances.py step 6)
    tol = other_path_error(p32[:, None], p64[:, None], torch.ones(1))[:, 0]
    err = (torch.tensor(pred["prob"].to_numpy()).double() - p32.double()).abs()
    assert (err <= tol).all(), f"images {torch.nonzero(err > tol).flatten().tolist()} differ by more than {tol.max()}"


@on_tiny_run
def test_notebook_03_computes_maps_of_the_imported_model(imported):
    run, _, _ = imported
    with pytest.warns(InplaceActivationWarning, match="norm5"):  # torchvision DenseNet's in-place ReLU
        # "predicted": a random head's pneumonia maps can be all zero after Grad-CAM's ReLU
        maps = compute_maps(run, ARCH, "gradcam", split=["val", "test"], map_size=16, target="predicted",
                            progress=False)
    stored = maps["gradcam"]
    assert stored.maps.shape[1:] == (16, 16) and len(stored) == len(load_predictions(run, ARCH))
    assert stored.meta["input_size"] == SIZE and stored.meta["target_layer"] == "backbone.features.norm5"
    assert np.isfinite(stored.maps.astype(np.float32)).all() and stored.maps.max() > 0.99
    again = load_model(run.best_checkpoint(ARCH))
    assert again.config["recipe"] == IMPORTED_RECIPE


def test_missing_or_placeholder_files_name_the_file_and_the_fix(tmp_path, capsys):
    missing = tmp_path / "nowhere.pt"
    assert main(["import-checkpoint", str(missing), "--backbone", ARCH, "--run", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err and "copy the checkpoint" in err
    pointer = tmp_path / "lfs.pt"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab12\nsize 32000000\n")
    assert main(["import-checkpoint", str(pointer), "--backbone", ARCH, "--run", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert str(pointer) in err and "Git LFS pointer" in err and "git lfs pull" in err


@pytest.mark.parametrize("content", [b"hello, not a checkpoint", bytes(range(256)) * 4])
def test_files_that_are_not_checkpoints_are_option_errors_naming_the_file(tmp_path, capsys, content):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(content)
    assert main(["import-checkpoint", str(junk), "--backbone", ARCH, "--run", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert str(junk) in err and "weights_only=False" not in err  # torch's advice to load unsafely is dropped


def test_arch_mismatch_names_the_file_and_the_backbone_to_use(tmp_path):
    _write(tmp_path / "resnet.pt", "resnet18", SIZE)
    run = RunPaths.from_params(str(tmp_path / "run"))
    with pytest.raises(ValueError, match=r"resnet\.pt holds the paper's resnet18.*--backbone resnet18"):
        install_checkpoint(tmp_path / "resnet.pt", run, ARCH)
    assert not run.best_checkpoint(ARCH).exists()


def test_a_run_without_a_split_is_refused_before_best_pt_is_written(tmp_path):
    _write(tmp_path / "resnet.pt", "resnet18", SIZE)
    run = RunPaths.from_params(str(tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match=r"images\.csv does not exist: run notebook 01"):
        install_checkpoint(tmp_path / "resnet.pt", run, "resnet18")
    assert not run.best_checkpoint("resnet18").exists()


@on_tiny_run
def test_importing_over_a_trained_backbone_keeps_its_training_state_apart(tiny_run, tmp_path):
    """A trained backbone's ``last.pt`` and ``history.csv`` would make a later ``resume=True``
    continue the old training on top of the imported model: they move to ``before_import/``
    (kept, not deleted), and the import is what the folder then holds."""
    shutil.copytree(tiny_run[0] / "run", tmp_path / "run")
    run = RunPaths.from_params(str(tmp_path / "run"))
    folder = run.model_dir("resnet18")
    before = {name: (folder / name).read_bytes() for name in ("last.pt", "history.csv", "best.pt")}
    _write(tmp_path / "their_resnet.pt", "resnet18", SIZE)
    with pytest.warns(UserWarning, match=r"resnet18 held a trained model: its files moved to .*before_import"):
        install_checkpoint(tmp_path / "their_resnet.pt", run, "resnet18")
    assert not (folder / "last.pt").exists() and not (folder / "history.csv").exists()
    kept = folder / "before_import"
    assert {name: (kept / name).read_bytes() for name in before} == before
    assert load_checkpoint(run.best_checkpoint("resnet18"))["recipe"] == IMPORTED_RECIPE
