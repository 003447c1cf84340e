"""Backbones: every registered entry at tiny size, grayscale weights, local weights, offline error."""
from __future__ import annotations

import pytest
import torch

from pneumoloc.models.backbones import Classifier, _derived_spec, build_model, resolve_layer
from pneumoloc.models.kinds import model_from_config
from pneumoloc.models.specs import BACKBONES, ChannelsFirst, TokensToGrid

SIZE = {"vit_b_16": 32, "vit_ti_16": 32}  # ViTs at 32 px: a 2×2 patch grid; CNNs at 64 px (2×2 maps at stride 32)
# Backbone parameters without classifier, from the published totals (torchvision/timm docs)
# minus the 1000-class layer; 1-channel stems are slightly smaller, hence the tolerance.
PUBLISHED_MILLIONS = {"resnet18": 11.18, "resnet50": 23.51, "densenet121": 6.95, "efficientnet_b0": 4.01,
                      "mobilenet_v2": 2.22, "mobilenet_v3": 4.20, "vit_b_16": 85.8,
                      "vit_ti_16": 5.53}  # DeiT-Ti: 5.72M with its 1000-class head




@pytest.fixture(scope="module", params=sorted(BACKBONES))
def built(request):
    name = request.param
    torch.manual_seed(0)
    size = SIZE.get(name, 64)
    return name, size, build_model(name, image_size=size).eval()


def test_forward_features_target_layer_reshape_and_gradcam(built):
    """One forward+backward per backbone (pytorch-grad-cam as the independent consumer)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    name, size, model = built
    x = torch.randn(2, 1, size, size)
    layer = resolve_layer(model, model.spec.target_layer)
    seen = {}
    hook = layer.register_forward_hook(lambda m, i, o: seen.update(out=o.detach()))  # returns None
    with GradCAM(model, [layer], reshape_transform=model.spec.reshape_transform) as cam:
        maps = cam(x, targets=[BinaryClassifierOutputTarget(1)] * 2)
        logits = cam.outputs
    hook.remove()
    assert maps.shape == (2, size, size) and logits.shape == (2, 1)
    with torch.no_grad():
        feats = model.forward_features(x)
    assert feats.shape == (2, model.head.fc.in_features, 2, 2)  # 64/32 (CNNs) or 32/16 (ViT)
    act = seen["out"]
    if model.spec.reshape_transform is not None:
        act = model.spec.reshape_transform(act)
    assert act.ndim == 4 and act.shape[0] == 2 and act.shape[2:] == feats.shape[2:]
    probs = model.probabilities(logits)
    assert torch.allclose(probs, torch.sigmoid(logits)) and model.positive_index == 0
    if name == "vit_b_16":  # built at 32 px, runs at other sizes (dynamic_img_size)
        with torch.no_grad():
            assert model.forward_features(torch.randn(1, 1, 48, 48)).shape == (1, 768, 3, 3)
        assert resolve_layer(model, "backbone.blocks.-1.norm1") is layer


def test_parameter_count_matches_published_size(built):
    name, _, model = built
    n = sum(p.numel() for p in model.backbone.parameters()) / 1e6
    assert n == pytest.approx(PUBLISHED_MILLIONS[name], rel=0.03)


def test_config_rebuilds_the_same_architecture(built):
    _, _, model = built
    with torch.device("meta"):  # shapes only: no memory, no init cost
        again = model_from_config(model.config)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert again.spec.target_layer == model.spec.target_layer


def test_other_target_layers_by_path_and_bad_paths():
    model = build_model("resnet18", target_layer="backbone.layer3")
    assert model.spec.target_layer == "backbone.layer3" and model.config["target_layer"] == "backbone.layer3"
    assert BACKBONES["resnet18"].target_layer == "backbone.layer4"  # registry untouched
    with pytest.raises(ValueError, match="has no child 'layer5'.*layer4"):
        build_model("resnet18", target_layer="backbone.layer5")


def test_any_timm_model_by_name_gets_a_derived_spec():
    cnn = build_model("resnet10t")
    assert cnn.spec.target_layer == "backbone.layer4" and cnn.spec.reshape_transform is None
    vit = build_model("vit_tiny_patch16_224", image_size=32)
    assert vit.spec.target_layer == "backbone.blocks.11.norm1"
    assert isinstance(vit.spec.reshape_transform, TokensToGrid)
    assert vit(torch.randn(2, 1, 32, 32)).shape == (2, 1)
    swin = build_model("swin_tiny_patch4_window7_224")  # NHWC feature maps in timm
    assert isinstance(swin.spec.reshape_transform, ChannelsFirst) and swin.spec.target_layer == "backbone.layers.3"
    with torch.no_grad():
        assert swin.forward_features(torch.randn(1, 1, 224, 224)).shape == (1, 768, 7, 7)
    plain = torch.nn.Conv2d(1, 4, 3)
    plain.pretrained_cfg = {}
    with pytest.raises(ValueError, match="target_layer="):
        _derived_spec("plain", plain, 8, 1)
    with pytest.raises(ValueError, match="resnet18.*timm model name"):
        build_model("no_such_net_v9")


def test_grey_input_only_and_in_chans_3_repeats_grey():
    torch.manual_seed(0)
    rgb = build_model("resnet18", in_chans=3).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(rgb.forward_features(x), rgb.backbone(x.repeat(1, 3, 1, 1)))
    with pytest.raises(ValueError, match=r"\[B, 1, S, S\]"):
        rgb(torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match="in_chans=2"):
        build_model("resnet18", in_chans=2)


def test_wildcat_head_gives_class_maps():
    model = build_model("resnet18", head="wildcat", num_outputs=3, k=1, alpha=0.5, maps=2).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert model.class_maps(x).shape == (2, 3, 2, 2) and model(x).shape == (2, 3)
    mlp = build_model("resnet18", head="mlp")
    with pytest.raises(ValueError, match="no class maps"):
        mlp.class_maps(x)


def test_classifier_is_an_nn_module_with_the_contract_attributes():
    model = build_model("mobilenet_v2", num_outputs=14)
    assert isinstance(model, Classifier) and isinstance(model, torch.nn.Module)
    assert model.config["num_outputs"] == 14 and model.config["kind"] == "timm"
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 14)


def test_output_names_set_the_pneumonia_index_for_multilabel_models():
    names = ["Atelectasis", "Cardiomegaly", "Pneumonia", "Effusion"]
    model = build_model("mobilenet_v2", num_outputs=4, output_names=names)
    assert model.positive_index == 2 and model.config["output_names"] == names
    assert model_from_config(model.config).positive_index == 2
    assert build_model("mobilenet_v2", num_outputs=2, output_names=["a", "b"]).positive_index == 0
    with pytest.raises(ValueError, match="output_names has 1 names for num_outputs=2"):
        build_model("mobilenet_v2", num_outputs=2, output_names=["a"])




def test_unknown_model_kind_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown model kind 'keras'; known model kinds: paper, timm"):
        model_from_config({"kind": "keras"})
