"""Pretrained weights: local files adapted the way timm adapts hub weights, and the offline error."""
from __future__ import annotations

import socket

import pytest
import torch

from pneumoloc.models.backbones import build_model
from pneumoloc.models.weights import WeightsUnavailableError, load_state_dict_file




def _timm_resnet18_state(tmp_path):
    import timm

    torch.manual_seed(3)
    sd = timm.create_model("resnet18", pretrained=False, num_classes=1000).state_dict()  # RGB stem + fc
    return sd


def test_local_weights_state_dict_adapts_rgb_stem_by_summing(tmp_path):
    sd = _timm_resnet18_state(tmp_path)
    torch.save(sd, tmp_path / "rn18.pth")
    model = build_model("resnet18", weights=tmp_path / "rn18.pth")
    assert model.backbone.conv1.weight.shape == (64, 1, 7, 7)
    assert torch.allclose(model.backbone.conv1.weight, sd["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(model.backbone.layer4[1].conv2.weight, sd["layer4.1.conv2.weight"])
    assert model.config["init"].endswith("rn18.pth")
    rgb = build_model("resnet18", in_chans=3, weights=tmp_path / "rn18.pth")
    assert torch.equal(rgb.backbone.conv1.weight, sd["conv1.weight"])


def test_local_weights_timm_style_checkpoint_and_vit_position_resampling(tmp_path):
    sd = _timm_resnet18_state(tmp_path)
    torch.save({"epoch": 7, "state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "ckpt.pth.tar")
    model = build_model("resnet18", weights=tmp_path / "ckpt.pth.tar")
    assert torch.equal(model.backbone.layer1[0].conv1.weight, sd["layer1.0.conv1.weight"])
    import timm

    vit_sd = timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict()  # 14×14 grid
    torch.save(vit_sd, tmp_path / "vit.pth")
    vit = build_model("vit_tiny_patch16_224", image_size=32, weights=tmp_path / "vit.pth")
    assert vit.backbone.pos_embed.shape == (1, 1 + 4, 192)  # resampled to the 2×2 grid
    assert torch.equal(vit.backbone.blocks[3].attn.qkv.weight, vit_sd["blocks.3.attn.qkv.weight"])


def test_local_weights_from_an_earlier_pneumoloc_checkpoint(tmp_path):
    from pneumoloc.models.checkpoints import save_checkpoint

    torch.manual_seed(5)
    first = build_model("resnet18", num_outputs=14)
    save_checkpoint(tmp_path / "best.pt", first, epoch=3)
    second = build_model("resnet18", weights=tmp_path / "best.pt")  # new head, same backbone
    for (k, a), b in zip(first.backbone.state_dict().items(), second.backbone.state_dict().values()):
        assert torch.equal(a, b), k


def test_local_weights_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights="):
        build_model("resnet18", weights=tmp_path / "missing.pth")
    sd = _timm_resnet18_state(tmp_path)
    torch.save(sd, tmp_path / "rn18.pth")
    with pytest.raises(ValueError, match="does not fit timm model 'resnet50'"):
        build_model("resnet50", weights=tmp_path / "rn18.pth")
    torch.save({"note": "no tensors"}, tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="not a state dict"):
        build_model("resnet18", weights=tmp_path / "junk.pth")


def test_pretrained_offline_gives_one_error_naming_both_options(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise OSError("network disabled in tests")
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(WeightsUnavailableError, match=r"(?s)pretrained=True.*hub.*weights=<path"):
        build_model("resnet18", pretrained=True)


def test_state_dict_file_layouts(tmp_path):
    t = torch.ones(2)
    for name, obj in {"plain": {"a.w": t}, "timm": {"state_dict": {"module.a.w": t}, "epoch": 1},
                      "ema": {"state_dict": {"a.w": t * 0}, "state_dict_ema": {"a.w": t}},
                      "ours": {"format": "x", "model_state": {"backbone.a.w": t, "head.fc.weight": t * 0}}}.items():
        torch.save(obj, tmp_path / f"{name}.pt")
        assert {k: v.tolist() for k, v in load_state_dict_file(tmp_path / f"{name}.pt").items()} == {"a.w": [1, 1]}, name
    torch.save({}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        load_state_dict_file(tmp_path / "empty.pt")
