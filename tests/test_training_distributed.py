"""Training on several ranks (gloo on the CPU): shards, per-sample augmentation, one process vs two.

Tolerance of the loss curves (one process vs two ranks of half the batch). Both runs see the same
global batches, the same per-image augmentation and BatchNorm statistics over the global batch, so
they differ only in the order of float32 sums: the loss mean and the BatchNorm moments over B images
become two partial sums added, and each weight gradient (a sum over the B x H x W positions of a
layer) becomes two partial sums added by the all-reduce. With u = 2**-24 and n terms, a reordered
sum moves by gamma~(n) = exp(lam sqrt(n) u) - 1 relative to the sum of |terms| (Higham & Mary 2019,
Thm 3.1, lam = 8, as in tests/tolerances.py). An Adam step turns a relative gradient error e into a
relative update error of at most about 2e (its update m / sqrt(v) is homogeneous of degree 0 in the
gradients: e in m, e/2 in sqrt(v)); to first order the loss moves with the weights, and over T
steps the errors add up at most linearly: ``2 T gamma~(n_max)``, n_max the longest reduction (the
stem convolution's weight gradient, B x 16 x 16 positions at 32 px). With T = 4, B = 8: 1.7e-4.
The first-order model assumes gradient sums that do not cancel badly; on this run the measured gap
is ~1e-7, while a real mismatch (each rank normalising its shard with its own BatchNorm statistics)
moves the curve by 2-4e-2 (test_local_batchnorm_changes_the_curve).
"""
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tolerances import gamma_lambda

from pneumoloc.training.batches import prepare_data, rank_positions, sample_keys
from pneumoloc.training.config import TrainConfig
from pneumoloc.training.distributed import DistributedTrainingError, rendezvous
from pneumoloc.training.transforms import AugmentConfig, augment_batch, to_unit

# timm's test ResNet has BatchNorm in every block and no dropout: the BatchNorm choice shows in the curves
TINY = dict(backbone="test_resnet", image_size=32, epochs=2, batch_size=8, eval_batch_size=8,
            sampler="weighted", scheduler="cosine", lr=3e-3, device="cpu", channels_last=False)


def loss_tolerance(steps: int, n_max: int) -> float:
    """Relative bound on the loss difference of two reduction orders after ``steps`` (module docstring)."""
    return 2 * steps * gamma_lambda(n_max)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """20 images (16 train, 4 val); positives carry a bright square, a third of them only."""
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(1)
    rows = []
    for i in range(20):
        lab = int(i % 3 == 0)
        img = rng.normal(100, 20, (36, 36))
        if lab:
            img[6:20, 8:22] += 80
        path = folder / f"{i}.png"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)
        rows.append({"image_id": f"im{i}", "patient_id": f"p{i}", "path": str(path), "label": lab,
                     "width": 36, "height": 36, "split": "train" if i < 16 else "val"})
    return pd.DataFrame(rows), folder / "cache"


def _data(images, **over):
    df, cache = images
    cfg = TrainConfig.from_dict({**TINY, **over})
    return cfg, prepare_data(df, cfg, cache_dir=cache, progress=False)


# -- pure pieces: shards and per-sample augmentation ----------------------------------------
@pytest.mark.parametrize("n, batch, world", [(16, 8, 2), (17, 6, 3), (5, 4, 2)])
def test_rank_shards_make_up_the_global_batches(n, batch, world):
    per_rank = [list(rank_positions(n, batch, r, world)) for r in range(world)]
    assert len({len(p) for p in per_rank}) == 1  # every rank takes the same number of steps
    for step in range(len(per_rank[0])):
        got = np.sort(np.concatenate([per_rank[r][step] for r in range(world)]))
        start = step * batch
        np.testing.assert_array_equal(got, np.arange(start, min(start + batch, n)))
    assert all(len(per_rank[r][-1]) >= 1 for r in range(world))


def test_augmentation_of_an_image_depends_on_its_key_not_on_its_batch():
    x = to_unit(np.random.default_rng(0).integers(0, 256, (6, 32, 32), dtype=np.uint8))
    keys = sample_keys(seed=0, epoch=3, positions=np.arange(6))
    whole = augment_batch(x, AugmentConfig(p_blur=1.0, p_noise=1.0), keys=keys)
    halves = torch.cat([augment_batch(x[0::2], AugmentConfig(p_blur=1.0, p_noise=1.0), keys=keys[0::2]),
                        augment_batch(x[1::2], AugmentConfig(p_blur=1.0, p_noise=1.0), keys=keys[1::2])])
    torch.testing.assert_close(halves, whole[[0, 2, 4, 1, 3, 5]], rtol=0, atol=1e-6)
    other = augment_batch(x, AugmentConfig(), keys=sample_keys(seed=0, epoch=4, positions=np.arange(6)))
    assert not torch.equal(other, augment_batch(x, AugmentConfig(), keys=keys))
    # noise alone: torch seeds from the low 32 bits, where the keys of two epochs agree
    noise = dataclasses.replace(AugmentConfig(), p_affine=0, p_color=0, p_gamma=0, p_noise=1.0, p_blur=0, p_cutout=0)
    epoch4 = sample_keys(seed=0, epoch=4, positions=np.arange(6))
    assert not torch.equal(augment_batch(x, noise, keys=keys), augment_batch(x, noise, keys=epoch4))


def test_rendezvous_reads_torchrun_and_slurm_variables():
    assert rendezvous(1, {}) == ("127.0.0.1", None, 0)
    assert rendezvous(2, {"MASTER_ADDR": "n1", "MASTER_PORT": "29500", "NODE_RANK": "1"}) == ("n1", 29500, 1)
    assert rendezvous(2, {"MASTER_ADDR": "n1", "MASTER_PORT": "29500", "SLURM_NODEID": "1"}) == ("n1", 29500, 1)
    with pytest.raises(ValueError, match="nodes=2.*MASTER_ADDR"):
        rendezvous(2, {})


# -- one process vs two ranks ---------------------------------------------------------------
@pytest.fixture(scope="module")
def curves(images, tmp_path_factory):
    from pneumoloc.training.distributed import train_on_devices

    root = tmp_path_factory.mktemp("ddp")
    cfg, data = _data(images)
    one = train_on_devices(cfg, data, root / "one", devices=1, progress=False)
    two_cfg, _ = _data(images, batch_size=8)  # the same global batch: 4 images per rank
    two = train_on_devices(two_cfg, data, root / "two", devices=2, progress=False)
    return {"one": one, "two": two, "root": root, "data": data}


@pytest.mark.slow
def test_two_ranks_give_the_loss_curve_of_one_process(curves):
    one, two = curves["one"].history, curves["two"].history
    steps = 2 * 2  # 2 epochs of 16 training images in global batches of 8
    tol = loss_tolerance(steps, n_max=8 * 16 * 16)
    for col in ("train_loss", "val_loss"):
        np.testing.assert_allclose(two[col], one[col], rtol=tol, err_msg=col)
    assert list(two["epoch"]) == list(one["epoch"])
    # only rank 0 wrote, once: the model folder holds the files of one process
    assert sorted(p.name for p in (curves["root"] / "two").iterdir()) == ["best.pt", "history.csv", "last.pt"]
    assert curves["two"].device == "cpu" and curves["two"].best_epoch == curves["one"].best_epoch


@pytest.mark.slow
def test_local_batchnorm_changes_the_curve(images, curves):
    """The tolerance can fail: BatchNorm over each rank's half batch moves the curve far beyond it."""
    from pneumoloc.training.distributed import train_on_devices

    cfg, data = _data(images)
    local = train_on_devices(cfg, data, curves["root"] / "local_bn", devices=2, progress=False,
                             synced_batchnorm=False)
    one = curves["one"].history["train_loss"].to_numpy()
    rel = np.abs(local.history["train_loss"].to_numpy() - one) / np.abs(one)
    assert rel.max() > 10 * loss_tolerance(4, n_max=8 * 16 * 16)


@pytest.mark.slow
def test_killing_one_rank_fails_the_stage_naming_it(images, tmp_path):
    """A rank killed mid-run: the launcher exits non-zero, names the rank, and does not hang."""
    import psutil

    df, cache = images
    df.to_csv(tmp_path / "images.csv", index=False)
    out = tmp_path / "killed"
    driver = Path(__file__).with_name("distributed_driver.py")
    proc = subprocess.Popen([sys.executable, str(driver), str(tmp_path / "images.csv"), str(cache), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists():  # rank 0 finished an epoch: both ranks are training
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.1)
    workers = [p for p in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(p.cmdline())]
    workers.sort(key=lambda p: (p.create_time(), p.pid))
    assert len(workers) == 2, [p.cmdline() for p in workers]
    workers[1].send_signal(signal.SIGKILL)
    try:
        _, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the launcher hung after a rank was killed")
    assert proc.returncode != 0
    assert "rank 1 of 2 died from SIGKILL" in err, err[-2000:]
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)


def test_error_type_is_exported():
    assert issubclass(DistributedTrainingError, RuntimeError)


# -- pneumoloc train --------------------------------------------------------------------------
def _run_folder(images, root: Path) -> Path:
    """A run folder as notebook 01 leaves it: images (with split), boxes, dataset.json."""
    from pneumoloc.storage import save_json

    df, _ = images
    data = root / "data"
    data.mkdir(parents=True)
    df.to_csv(data / "images.csv", index=False)
    pd.DataFrame(columns=["image_id", "x", "y", "w", "h"]).to_csv(data / "boxes.csv", index=False)
    save_json(data / "dataset.json", {"name": "fixture", "root": str(root), "findings": [], "options": {}})
    return root


def test_pneumoloc_train_trains_a_run_model_and_checks_its_options(images, tmp_path, capsys):
    from pneumoloc.cli import main

    run = _run_folder(images, tmp_path / "run")
    flags = ["train", "--run-dir", str(run), "--set", "backbone=test_resnet", "image_size=32", "epochs=1",
             "batch_size=8", "device=cpu", "channels_last=false", "head_options={}"]
    assert main(flags + ["--devices", "0"]) == 2
    assert "devices must be an integer >= 1" in capsys.readouterr().err
    assert main(flags + ["epoch=1"]) == 2
    assert "unknown training option(s) ['epoch']" in capsys.readouterr().err
    assert main(flags + ["focal_alpha=0.25"]) == 0
    out = capsys.readouterr().out
    assert "best epoch 1" in out and (run / "models" / "test_resnet" / "best.pt").exists()
    from pneumoloc.models.checkpoints import load_checkpoint
    assert load_checkpoint(run / "models" / "test_resnet" / "best.pt")["train_config"]["focal_alpha"] == 0.25


@pytest.mark.slow
@pytest.mark.notebooks
def test_notebook_02_trains_on_two_ranks_from_its_kernel(tmp_path):
    """devices=2 from inside a papermill kernel: the ranks spawn, rank 0 writes, the notebook evaluates."""
    import papermill as pm

    from pneumoloc.environment import PROJECT_ROOT

    rng, rows = np.random.default_rng(3), []
    for i in range(30):  # 18 train, 6 val, 6 test; both classes in every split
        lab, img = i % 2, rng.normal(100, 20, (36, 36))
        img[6:20, 8:22] += 80 * lab
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
        rows.append({"image_id": f"im{i}", "patient_id": f"p{i}", "path": str(tmp_path / f"{i}.png"), "label": lab,
                     "width": 36, "height": 36, "split": "train" if i < 18 else "val" if i < 24 else "test"})
    run = _run_folder((pd.DataFrame(rows), None), tmp_path / "run")
    pm.execute_notebook(str(PROJECT_ROOT / "notebooks" / "02_train_backbone.ipynb"), str(tmp_path / "02.ipynb"),
                        parameters=dict(run_dir=str(run), figures_dir=str(tmp_path / "figures"),
                                        backbone="test_resnet", image_size=32, epochs=2, batch_size=8,
                                        device="cpu", devices=2, n_boot=10),
                        progress_bar=False, cwd=str(tmp_path), kernel_name="python3")
    model = run / "models" / "test_resnet"
    assert {"best.pt", "last.pt", "history.csv", "predictions.csv", "metrics.json"} <= {p.name for p in model.iterdir()}
    assert len(pd.read_csv(model / "history.csv")) == 2


def test_train_data_sends_a_cached_memmap_by_name_and_a_view_by_value(images):
    import pickle

    _, data = _data(images)
    assert isinstance(data.images, np.memmap)
    whole = pickle.dumps(data)
    assert len(whole) < data.images.nbytes  # the file name travels, not the pixels
    np.testing.assert_array_equal(pickle.loads(whole).images, data.images)
    data.images = data.images[2:]  # a view: its offset is the file's, so it must travel by value
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(data)).images, data.images)


def test_dropout_mask_of_an_image_depends_on_its_key_not_on_its_batch():
    from pneumoloc.training.keyed_dropout import batch_keys, key_dropout

    net = torch.nn.Sequential(torch.nn.Linear(6, 64), torch.nn.Dropout(0.5)).train()
    assert key_dropout(net) == 1
    x, keys = torch.randn(6, 6), sample_keys(seed=0, epoch=1, positions=np.arange(6))
    with batch_keys(keys):
        whole = net(x)
    with batch_keys(keys[0::2]):
        even = net(x[0::2])
    with batch_keys(keys[1::2]):
        odd = net(x[1::2])
    torch.testing.assert_close(torch.cat([even, odd]), whole[[0, 2, 4, 1, 3, 5]], rtol=0, atol=0)
    assert 0.3 < float((whole == 0).float().mean()) < 0.7
    with batch_keys(sample_keys(seed=0, epoch=2, positions=np.arange(6))):
        assert not torch.equal(net(x), whole)


@pytest.mark.slow
def test_two_ranks_match_one_process_with_the_dropout_head(images, tmp_path):
    """The paper's MLP head (dropout 0.3 / 0.2, BatchNorm1d) trains alike on one process and two ranks."""
    from pneumoloc.training.distributed import train_on_devices

    cfg, data = _data(images, head="mlp")
    one = train_on_devices(cfg, data, tmp_path / "one", devices=1, progress=False).history
    two = train_on_devices(cfg, data, tmp_path / "two", devices=2, progress=False).history
    tol = loss_tolerance(4, n_max=8 * 16 * 16)
    for col in ("train_loss", "val_loss"):
        np.testing.assert_allclose(two[col], one[col], rtol=tol, err_msg=col)
