"""Import of the paper's checkpoints, proven on files the test writes in their format from torchvision models."""
from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from torch import nn

from pneumoloc.models.backbones import resolve_layer
from pneumoloc.models.checkpoints import load_model, save_checkpoint
from pneumoloc.models.paper import PAPER_ARCHS, import_paper_checkpoint




# Restated from their src/model.py: where PneumoniaNet puts the MLP head in each torchvision model.
def _their_head(in_features: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                         nn.Dropout(0.3), nn.Linear(512, 128), nn.ReLU(inplace=True), nn.Dropout(0.2),
                         nn.Linear(128, k))


def _their_net(arch: str, k: int, size: int) -> nn.Module:
    if arch in ("resnet18", "resnet50"):
        tv = getattr(tvm, arch)(weights=None)
        tv.fc = _their_head(tv.fc.in_features, k)
    elif arch == "densenet121":
        tv = tvm.densenet121(weights=None)
        tv.classifier = _their_head(tv.classifier.in_features, k)
    elif arch == "vit_b_16":
        tv = tvm.vit_b_16(weights=None, image_size=size)
        tv.heads.head = _their_head(tv.heads.head.in_features, k)
    else:
        tv = {"efficientnet_b0": tvm.efficientnet_b0, "mobilenet_v2": tvm.mobilenet_v2,
              "mobilenet_v3": tvm.mobilenet_v3_large}[arch](weights=None)
        layers = list(tv.classifier.children())
        layers[-1] = _their_head(layers[-1].in_features, k)
        tv.classifier = nn.Sequential(*layers)
    net = nn.Module()
    net.backbone = tv
    return net


def _their_input(x: torch.Tensor) -> torch.Tensor:
    """pneumoloc input (u-0.5)/0.25 → their grey-repeated-to-RGB, ImageNet-normalized input."""
    u = x * 0.25 + 0.5
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (u.repeat(1, 3, 1, 1) - mean) / std


def _write(path, arch, size, class_to_idx=None, seed=0, label_arch=None):
    torch.manual_seed(seed)
    net = _their_net(arch, 2, size)
    net.train()
    with torch.no_grad():  # non-default BatchNorm statistics, so a wrong load shows
        net.backbone(torch.randn(4, 3, size, size))
    net.eval()
    torch.save({"model_state": net.state_dict(), "class_to_idx": class_to_idx or {"NORMAL": 0, "PNEUMONIA": 1},
                "img_size": size, "arch": label_arch or arch, "val_acc": 0.93, "val_auc": np.float64(0.97),
                "val_pr_auc": {"micro": np.float64(0.9)}}, path)
    return net


@pytest.mark.parametrize("arch", sorted(PAPER_ARCHS))
def test_import_reproduces_their_network_and_runs_through_the_workbench(tmp_path, arch):
    size = 32 if arch == "vit_b_16" else 64
    net = _write(tmp_path / f"best_{arch}.pt", arch, size)
    model = import_paper_checkpoint(tmp_path / f"best_{arch}.pt")
    assert not model.training and model.positive_index == 1
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        theirs = net.backbone(_their_input(x))
        logits = model(x)
        feats = model.forward_features(x)
    assert torch.allclose(logits, theirs, atol=1e-5)
    assert torch.allclose(model.probabilities(logits), theirs.softmax(1)[:, 1:], atol=1e-6)
    assert feats.ndim == 4 and feats.shape[:1] == (2,) and feats.shape[2:] == (2, 2)
    layer = resolve_layer(model, model.spec.target_layer)
    seen = {}
    hook = layer.register_forward_hook(lambda m, i, o: seen.update(out=o))
    model(x).sum().backward()
    hook.remove()
    act = seen["out"] if model.spec.reshape_transform is None else model.spec.reshape_transform(seen["out"])
    assert act.ndim == 4 and act.shape[2:] == (2, 2)
    if arch == "vit_b_16":
        return  # 86M parameters: the round trip below is proven on the CNNs at a fraction of the I/O
    save_checkpoint(tmp_path / "best.pt", model, epoch=0)  # our own format, rebuilt from config
    again = load_model(tmp_path / "best.pt")
    with torch.no_grad():
        assert torch.equal(again(x), logits)
    assert again.config["class_to_idx"] == {"NORMAL": 0, "PNEUMONIA": 1}


def test_pneumonia_index_follows_class_to_idx(tmp_path):
    net = _write(tmp_path / "p.pt", "resnet18", 64, class_to_idx={"PNEUMONIA": 0, "NORMAL": 1})
    model = import_paper_checkpoint(tmp_path / "p.pt")
    assert model.positive_index == 0
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.probabilities(model(x)), net.backbone(_their_input(x)).softmax(1)[:, :1],
                              atol=1e-6)


def test_bad_paper_files_are_clear_errors(tmp_path):
    torch.save({"model_state": {}, "arch": "resnet18"}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match="missing.*class_to_idx"):
        import_paper_checkpoint(tmp_path / "a.pt")
    torch.save({"model_state": {}, "arch": "alexnet", "class_to_idx": {"NORMAL": 0, "PNEUMONIA": 1}},
               tmp_path / "b.pt")
    with pytest.raises(ValueError, match="alexnet.*known.*resnet18"):
        import_paper_checkpoint(tmp_path / "b.pt")
    torch.save({"model_state": {}, "arch": "resnet18", "class_to_idx": {"A": 0, "B": 1}}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="PNEUMONIA"):
        import_paper_checkpoint(tmp_path / "c.pt")
    _write(tmp_path / "d.pt", "resnet18", 64, label_arch="resnet50")
    with pytest.raises(ValueError, match="do not fit the paper's resnet50"):
        import_paper_checkpoint(tmp_path / "d.pt")


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_paper_import_refuses_code_running_pickles(tmp_path, monkeypatch):
    marker = tmp_path / "marker.txt"
    buf = io.BytesIO()
    torch.save({"model_state": {}, "arch": "resnet18", "class_to_idx": {"PNEUMONIA": 1},
                "extra": RunsCode(marker)}, buf)
    (tmp_path / "evil.pt").write_bytes(buf.getvalue())
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(pickle.UnpicklingError):
        import_paper_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_dataparallel_prefixed_keys_import(tmp_path):
    net = _write(tmp_path / "p.pt", "resnet18", 64)
    ckpt = torch.load(tmp_path / "p.pt", weights_only=False)  # the test's own file
    ckpt["model_state"] = {"module." + k: v for k, v in ckpt["model_state"].items()}
    torch.save(ckpt, tmp_path / "dp.pt")
    model = import_paper_checkpoint(tmp_path / "dp.pt")
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), net.backbone(_their_input(x)), atol=1e-5)
