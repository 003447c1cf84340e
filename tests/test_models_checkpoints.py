"""Checkpoints: round trip, code-running pickles refused, truncation detected, fallback to the last good one."""
from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumoloc.models.backbones import build_model
from pneumoloc.models.checkpoints import (FORMAT, latest_good_checkpoint, load_checkpoint, load_model,
                                          save_checkpoint)
from pneumoloc.storage import CorruptFileError, save_torch, write_checked




@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model("mobilenet_v2", head="wildcat", num_outputs=2, k=2, alpha=0.5, maps=3)
    m.train()
    with torch.no_grad():  # move BatchNorm running statistics away from their defaults
        m(torch.randn(4, 1, 64, 64))
    return m.eval()


class RunsCode:
    """A pickle payload that writes a marker file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _write_with_valid_checksum(path: Path, obj, sidecar: bool = False) -> None:
    """torch.save with a matching checksum (header, or the sidecar format), so only weights_only
    stands between the file and its code."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    if not sidecar:
        write_checked(path, buf.getvalue())
        return
    path.write_bytes(buf.getvalue())
    path.with_name(path.name + ".sha256").write_text(hashlib.sha256(buf.getvalue()).hexdigest() + "\n")


def test_round_trip_gives_identical_outputs_and_metadata(tmp_path, model):
    x = torch.randn(3, 1, 64, 64)
    path = save_checkpoint(tmp_path / "best.pt", model, epoch=4, metrics={"val_auc": 0.91},
                           optimizer={"state": {0: {"exp_avg": torch.ones(2)}}, "lr": [1e-4]})
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"], "the checksum lives inside the file"
    again = load_model(path)
    assert not again.training and next(again.parameters()).device.type == "cpu"
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
        assert torch.equal(again.class_maps(x), model.class_maps(x))
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == FORMAT and ckpt["epoch"] == 4 and ckpt["metrics"] == {"val_auc": 0.91}
    assert ckpt["config"] == model.config and again.config == model.config
    assert torch.equal(ckpt["optimizer"]["state"][0]["exp_avg"], torch.ones(2))


def test_metadata_must_be_plain(tmp_path, model):
    with pytest.raises(TypeError, match=r"metadata.metrics.auc is a float64.*float\(x\)"):
        save_checkpoint(tmp_path / "a.pt", model, metrics={"auc": np.float64(0.5)})
    with pytest.raises(TypeError, match="PosixPath"):
        save_checkpoint(tmp_path / "a.pt", model, source=tmp_path)
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "a.pt", model, config={})
    assert not (tmp_path / "a.pt").exists()


@pytest.mark.parametrize("sidecar", [False, True])
def test_code_running_pickle_is_refused_even_when_env_forces_unsafe_load(tmp_path, monkeypatch, model, sidecar):
    live = tmp_path / "proof.txt"
    pickle.loads(pickle.dumps(RunsCode(live)))  # the payload is live: a plain unpickle runs it
    assert live.read_text() == "ran"

    marker = tmp_path / "marker.txt"
    evil = tmp_path / "last.pt"
    state = {k: v for k, v in model.state_dict().items()}
    _write_with_valid_checksum(evil, {"format": FORMAT, "model_state": state, "config": model.config,
                                      "payload": RunsCode(marker)}, sidecar=sidecar)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(evil)
    with pytest.raises(pickle.UnpicklingError):
        load_model(evil)
    assert latest_good_checkpoint([evil]) is None
    assert not marker.exists()


def test_truncated_or_unchecksummed_checkpoint_is_detected(tmp_path, model):
    path = save_checkpoint(tmp_path / "last.pt", model, epoch=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="checksum"):
        load_checkpoint(path)
    with pytest.raises(CorruptFileError):
        load_model(path)
    bare = tmp_path / "bare.pt"
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "model_state": {}, "config": {}}, buf)
    bare.write_bytes(buf.getvalue())
    with pytest.raises(CorruptFileError, match="no checksum"):
        load_checkpoint(bare)


def test_other_torch_files_are_not_mistaken_for_checkpoints(tmp_path):
    save_torch(tmp_path / "maps.pt", {"maps": torch.zeros(2)})
    with pytest.raises(ValueError, match="import_paper_checkpoint"):
        load_checkpoint(tmp_path / "maps.pt")


def test_latest_good_checkpoint_falls_back_past_damaged_files(tmp_path, model):
    first = save_checkpoint(tmp_path / "epoch1.pt", model, epoch=1)
    second = save_checkpoint(tmp_path / "epoch2.pt", model, epoch=2)
    os.utime(first, (2e9, 2e9))  # a newer file time must not beat a later epoch
    assert latest_good_checkpoint([first, second, tmp_path / "never_written.pt"]) == second
    data = second.read_bytes()
    second.write_bytes(data[:-100])  # truncated after the fact
    assert latest_good_checkpoint([first, second]) == first
    first.write_bytes(first.read_bytes().replace(b"pneumoloc-sha256:", b"pneumoloc-sha256:0", 1)[:-1])
    assert latest_good_checkpoint([first, second]) is None
    assert latest_good_checkpoint([]) is None


def test_latest_good_checkpoint_uses_file_time_without_epochs(tmp_path, model):
    a = save_checkpoint(tmp_path / "a.pt", model)
    b = save_checkpoint(tmp_path / "b.pt", model)
    os.utime(a, (1e9, 1e9))
    os.utime(b, (1.5e9, 1.5e9))
    assert latest_good_checkpoint([b, a]) == b


def test_interrupted_save_leaves_previous_checkpoint_intact(tmp_path, model, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", model, epoch=1)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")
    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, epoch=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert latest_good_checkpoint([path]) == path
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp files left behind


def test_optimizer_and_scheduler_state_pass_as_plain_metadata(tmp_path, model):
    params = [torch.nn.Parameter(torch.ones(3))]
    opt = torch.optim.AdamW(params, lr=1e-3)
    params[0].grad = torch.ones(3)
    opt.step()
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1)
    path = save_checkpoint(tmp_path / "last.pt", model, optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                           rng={"torch": torch.get_rng_state()}, history=[{"epoch": 1, "loss": 0.5}])
    ckpt = load_checkpoint(path)
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=1e-3)
    opt2.load_state_dict(ckpt["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
