"""The CAM engine against the grad-cam package (the independent reference)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch
from torch import nn

from pneumoloc.explain import cams, explainable
from pneumoloc.models.backbones import build_model
from pneumoloc.models.specs import BACKBONES
from tolerances import assert_maps_close, cam_tolerance, fast_cam_terms, library_cam_reference

torch.set_num_threads(1)  # the test machine is shared; avoid oversubscription
SIZE = 64  # CNN feature maps 2x2, ViT-B/16 token grid 4x4: small but not constant


@lru_cache(maxsize=None)
def _model(name: str, outputs: int = 1):
    torch.manual_seed(0)
    return build_model(name, num_outputs=outputs, image_size=SIZE).eval()


@lru_cache(maxsize=None)
def _explainable(name: str) -> cams.Explainable:
    return explainable.prepare_model(_model(name))


def _x(b: int = 2, size: int = SIZE, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 1, size, size, generator=torch.Generator().manual_seed(seed))


class TinyNet(nn.Module):
    """Conv net with an in-place ReLU after the target layer; ``k`` logits."""

    def __init__(self, k: int = 1, positive_index: int = 0):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(6, 8, 3, stride=2, padding=1))
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8, k)
        self.positive_index = positive_index

    def forward(self, x):
        return self.fc(self.act(self.features(x)).mean(dim=(2, 3)))


def _tol(ex: cams.Explainable, x: torch.Tensor, method: str, target: str = "pneumonia") -> torch.Tensor:
    """Per-map float32 bound ``[B, T]`` of the fast CAM (tests/tolerances.py)."""
    size = tuple(x.shape[-2:])
    return torch.stack([cam_tolerance(t, size) for t in fast_cam_terms(ex, x, target, method)], 1)


def _reference(model, layer, x, targets, cls="GradCAM", reshape=None):
    import pytorch_grad_cam as pgc

    model = model.eval()
    with getattr(pgc, cls)(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        return torch.from_numpy(cam(input_tensor=x, targets=targets))


@pytest.mark.parametrize("method", sorted(cams.FAST_CAMS))
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_fast_path_equals_grad_cam_package(backbone, method):
    ex = _explainable(backbone)
    x = _x(4)
    # "predicted": a random linear head's pneumonia CAM can be negative everywhere (ReLU -> 0);
    # explaining the predicted side (sign flipped for negative logits) always leaves evidence.
    fast = cams.explain(ex, x, method, "predicted")
    # reference: the library on the same prepared copy (the memory format changes float rounding,
    # which XGradCAM's division by sum(A) amplifies; layouts are compared on GradCAM below)
    ref = cams.library_cams(ex, x, "predicted", method)
    assert fast.shape == (4, 1, SIZE, SIZE)
    assert fast.amax(dim=(1, 2, 3)).max() > 0.99  # a real map, not only all-zero ones
    assert_maps_close(fast, ref, _tol(ex, x, method, "predicted"))


@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
@pytest.mark.parametrize("backbone,layers", [("resnet18", "backbone.layer3+backbone.layer4"),
                                             ("vit_b_16", "backbone.blocks.10.norm1+backbone.blocks.11.norm1")])
def test_several_target_layers_equal_the_package_aggregate(backbone, layers, method):
    """One map per layer, averaged as pytorch-grad-cam does for ``target_layers=[l1, l2]``."""
    ex = explainable.prepare_model(_model(backbone), target_layer=layers)
    x = _x(3)
    fast = cams.explain(ex, x, method, "predicted")
    ref = cams.library_cams(ex, x, "predicted", method)
    assert_maps_close(fast, ref, _tol(ex, x, method, "predicted"))
    single = cams.explain(explainable.prepare_model(_model(backbone), layers.split("+")[1]), x, method, "predicted")
    assert (fast - single).abs().max() > 0.05, "the earlier layer changes the map"


def test_target_layer_typo_names_the_path():
    with pytest.raises(Exception, match="layer9"):
        explainable.prepare_model(_model("resnet18"), target_layer="backbone.layer3+backbone.layer9")


def test_gradcam_matches_package_with_its_own_targets_and_model():
    """The binary target is BinaryClassifierOutputTarget(1), on the caller's own (unprepared) model."""
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    torch.manual_seed(0)
    net = TinyNet()
    ex = explainable.prepare_model(net, target_layer="features.2")
    x = _x(3, 16)
    ref_net = TinyNet()
    ref_net.load_state_dict(net.state_dict())
    for m in ref_net.modules():  # the package itself needs out-of-place ReLUs after the hook
        if isinstance(m, nn.ReLU):
            m.inplace = False
    ref = _reference(ref_net, ref_net.features[2], x, [BinaryClassifierOutputTarget(1)] * 3)
    assert_maps_close(cams.explain(ex, x, "gradcam")[:, 0], ref, _tol(ex, x, "gradcam")[:, 0])


def test_two_logit_model_explains_positive_index_and_predicted_uses_argmax():
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    net = TinyNet(k=2, positive_index=1)
    ex = explainable.prepare_model(net, target_layer="features.2")
    x = _x(4, 16)
    with explainable.prepare_model(net, target_layer="features.2").trainable() as ref_net:
        ref1 = _reference(ref_net, ref_net.features[2], x, [ClassifierOutputTarget(1)] * 4)
        pred = net(x).argmax(1).tolist()
        ref_pred = _reference(ref_net, ref_net.features[2], x, [ClassifierOutputTarget(p) for p in pred])
    assert_maps_close(cams.explain(ex, x, "gradcam", "pneumonia")[:, 0], ref1, _tol(ex, x, "gradcam")[:, 0])
    assert_maps_close(cams.explain(ex, x, "gradcam", "predicted")[:, 0], ref_pred,
                      _tol(ex, x, "gradcam", "predicted")[:, 0])


def test_predicted_target_flips_sign_for_negative_single_logit():
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    torch.manual_seed(3)
    net = TinyNet()
    x = _x(6, 16, seed=4)
    with torch.no_grad():
        net.fc.bias -= net(x)[:, 0].median() + 1e-4  # about half the images predicted negative
    logits = net(x)[:, 0].detach()
    assert (logits < 0).any() and (logits >= 0).any(), "test needs both predictions"
    ex = explainable.prepare_model(net, target_layer="features.2")
    ref_net = ex.model
    with ex.trainable():
        ref = _reference(ref_net, ref_net.features[2], x,
                         [BinaryClassifierOutputTarget(int(v >= 0)) for v in logits], "HiResCAM")
    got = cams.explain(ex, x, "hirescam", "predicted")[:, 0]
    assert_maps_close(got, ref, _tol(ex, x, "hirescam", "predicted")[:, 0])
    neg = logits < 0
    assert (got[neg] - cams.explain(ex, x, "hirescam", "pneumonia")[neg, 0]).abs().max() > 0.05


def test_findings_give_one_map_per_output():
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    net = TinyNet(k=3)
    ex = explainable.prepare_model(net, target_layer="features.2")
    x = _x(2, 16)
    got = cams.explain(ex, x, "gradcam++", "findings")
    assert got.shape == (2, 3, 16, 16)
    tol = _tol(ex, x, "gradcam++", "findings")
    with ex.trainable():
        for k in range(3):
            ref = _reference(ex.model, ex.model.features[2], x, [ClassifierOutputTarget(k)] * 2, "GradCAMPlusPlus")
            assert_maps_close(got[:, k], ref, tol[:, k])


def test_prepare_model_copies_freezes_and_switches_inplace_off_only_for_hooks():
    model = _model("densenet121")
    assert any(getattr(m, "inplace", False) for m in model.modules())
    ex = _explainable("densenet121")
    assert any(getattr(m, "inplace", False) for m in ex.model.modules()), "fast path keeps in-place ops"
    with ex.trainable():
        assert not any(getattr(m, "inplace", False) for m in ex.model.modules())
        assert all(p.requires_grad for p in ex.model.parameters())
    assert any(getattr(m, "inplace", False) for m in ex.model.modules()), "restored after the block"
    assert not any(p.requires_grad for p in ex.model.parameters())
    def first_conv(m):  # one with several input channels: a [C,1,k,k] weight is both layouts
        return next(c for c in m.modules() if isinstance(c, nn.Conv2d) and c.in_channels > 1).weight

    assert first_conv(ex.model).is_contiguous(memory_format=torch.channels_last)
    assert first_conv(model).is_contiguous(), "caller's model untouched"
    cams.explain(ex, _x(1), "gradcam")
    assert all(p.grad is None for p in ex.model.parameters()), "no parameter gradients on the fast path"


def test_fast_path_with_inplace_ops_equals_a_contiguous_copy_without_them():
    torch.manual_seed(0)
    model = _model("densenet121")
    x = _x(2)
    ex = explainable.prepare_model(model)
    # "predicted" leaves evidence: the random head's pneumonia maps are all zero after ReLU
    fast = cams.explain(ex, x, "gradcam", "predicted")
    plain = explainable.prepare_model(model, channels_last=False)
    with plain.no_inplace():
        ref = cams.explain(plain, x, "gradcam", "predicted")
    assert_maps_close(fast, ref, _tol(ex, x, "gradcam", "predicted"))


# EigenCAM's first principal direction is weakly determined when sigma_1 - sigma_2 is small
# (tests/tolerances.py step 8): a few % of sigma_1 for the random-weight backbones, which
# makes its bound ~0.1; that still rejects a flipped or wrong component (map error ~1).
_USEFUL = {"eigencam": 0.5, "scorecam": 0.05, "ablationcam": 0.05}


def _library_reference(model, x: torch.Tensor, method: str, target_layer: str = "") -> dict:
    """The package's maps on a plain contiguous copy of ``model`` and their float32 bounds."""
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    plain = explainable.prepare_model(model, target_layer=target_layer, channels_last=False)
    return library_cam_reference(plain, x, method, [BinaryClassifierOutputTarget(1)] * len(x))


@pytest.mark.parametrize("method", ["eigencam", "scorecam", "ablationcam"])
def test_library_only_methods_run_through_the_registry(method):
    torch.manual_seed(0)
    net = TinyNet()
    ex = explainable.prepare_model(net, target_layer="features.2")
    x = _x(2, 16)
    got = cams.explain(ex, x, method)
    ref = _library_reference(net, x, method, "features.2")
    assert got.shape == (2, 1, 16, 16)
    assert float(got.min()) >= 0 and float(got.max()) <= 1
    assert_maps_close(got[:, 0], cams.normalize_maps(ref["maps"]), ref["tol"], _USEFUL[method])


def test_normalize_keeps_constant_maps_at_zero():
    m = torch.stack([torch.full((4, 4), 3.0), torch.arange(16.0).view(4, 4)])
    out = cams.normalize_maps(m)
    assert out[0].abs().max() == 0
    assert out[1].min() == 0 and abs(float(out[1].max()) - 1) < 1e-6


def test_unknown_names_list_the_registry():
    ex = explainable.prepare_model(TinyNet(), target_layer="features.2")
    with pytest.raises(KeyError, match="gradcam"):
        cams.explain(ex, _x(1, 16), "gradcamm")
    with pytest.raises(KeyError, match="pneumonia"):
        cams.explain(ex, _x(1, 16), "gradcam", target="normal")
    with pytest.raises(ValueError, match="target_layer"):
        explainable.prepare_model(TinyNet())


def test_registry_holds_every_required_method():
    required = {"gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "scorecam",
                "ablationcam", "gradient", "smoothgrad", "intgrad", "smoothgrad_ig", "guided_backprop",
                "guided_gradcam", "wildcat"}
    assert required <= set(cams.method_names())


def test_feature_sizes_are_the_native_cam_resolution():
    ex = explainable.prepare_model(_model("resnet18"), target_layer="backbone.layer3+backbone.layer4")
    assert explainable.feature_sizes(ex, 128) == [(8, 8), (4, 4)]
    vit = _explainable("vit_b_16")
    assert explainable.feature_sizes(vit, SIZE) == [(SIZE // 16, SIZE // 16)]


@pytest.mark.parametrize("backbone,method", [("densenet121", "eigencam"), ("vit_b_16", "eigencam"),
                                             ("mobilenet_v3", "scorecam"), ("mobilenet_v3", "ablationcam"),
                                             # ViT-Tiny: the same token reshape as ViT-B/16, 192 channels not 768
                                             ("vit_tiny_patch16_224", "scorecam"),
                                             ("vit_tiny_patch16_224", "ablationcam")])
def test_library_only_methods_on_real_backbones(backbone, method):
    """In-place activations (DenseNet, MobileNet) and the ViT token reshape (with
    AblationLayerVit) through the registry, against the package called directly on an
    independent plain copy."""
    ex = _explainable(backbone)
    x = _x(2)
    got = cams.explain(ex, x, method)
    ref = _library_reference(_model(backbone), x, method)
    assert got.shape == (2, 1, SIZE, SIZE)
    assert (got[:, 0].amax(dim=(1, 2)) > 0.99).all(), "a real map per image"
    assert_maps_close(got[:, 0], cams.normalize_maps(ref["maps"]), ref["tol"], _USEFUL[method])
