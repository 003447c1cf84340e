"""captum attributions and head maps against independent references."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pneumoloc.explain import attributions, cams, explainable
from pneumoloc.models.backbones import build_model
from tolerances import U, assert_maps_close, gamma_lambda, cam_tolerance, conv_input_grad_error, fast_cam_terms, normalized_error

torch.set_num_threads(1)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 1)
        self.positive_index = 0

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


@pytest.fixture
def net():
    torch.manual_seed(0)
    return TinyNet()


def _x(b=3, size=16, seed=1):
    return torch.randn(b, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _ex(net):
    return explainable.prepare_model(net, target_layer="features.2")


def _first_conv_grad(model: nn.Module, run) -> torch.Tensor:
    """dScore/d(output of ``model.features[0]``) while ``run()`` backpropagates through ``model``."""
    store = {}

    def capture(module, inputs, output):
        output.register_hook(lambda g: store.setdefault("g", g))
        return output.clone()  # the in-place ReLU after it must not touch the hooked tensor

    handle = model.features[0].register_forward_hook(capture)
    try:
        run()
    finally:
        handle.remove()
    return store["g"]


def _input_grad_error(model: nn.Module, x: torch.Tensor, run) -> torch.Tensor:
    """Float32 bound of an input gradient: the first conv's transposed sum (tests/tolerances.py)."""
    return conv_input_grad_error(model.features[0], _first_conv_grad(model, run), x.shape)[:, 0]


def test_gradient_is_the_absolute_input_gradient(net):
    x = _x().requires_grad_(True)
    (g,) = torch.autograd.grad(net(x)[:, 0].sum(), x)
    ref = cams.normalize_maps(g.abs()[:, 0])
    err = _input_grad_error(net, x, lambda: torch.autograd.grad(net(x)[:, 0].sum(), x))
    assert_maps_close(cams.explain(_ex(net), x.detach(), "gradient")[:, 0], ref, normalized_error(g.abs()[:, 0], err))


def test_smoothgrad_without_noise_is_the_gradient(net, monkeypatch):
    monkeypatch.setitem(attributions.PARAMETERS, "smoothgrad", {"nt_samples": 3, "noise": 0.0})
    ex = _ex(net)
    x = _x()
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xg)[:, 0].sum(), xg)
    # the same gradient 3 times, summed and divided by 3: a few roundings of |g|
    tol = normalized_error(g.abs()[:, 0], 4 * U * g.abs()[:, 0])
    assert_maps_close(cams.explain(ex, x, "smoothgrad")[:, 0], cams.explain(ex, x, "gradient")[:, 0], tol)


def test_integrated_gradients_are_complete(net, monkeypatch):
    """Sundararajan et al. 2017, Prop. 1: attributions sum to f(x) - f(baseline)."""
    monkeypatch.setitem(attributions.PARAMETERS, "intgrad", {"n_steps": 256, "baseline": "black"})
    ex = _ex(net)
    x = _x()
    raw = attributions.input_attributions(ex, x, "pneumonia", "intgrad")[:, 0].double()
    black = torch.full_like(x, -2.0)  # (0/255 - 0.5) / 0.25
    with torch.no_grad():
        delta = (net(x) - net(black))[:, 0].double()
    ref, quadrature_error, rounding = _gauss_legendre_ig(net, x, black, 256)
    # the same integral by an independent float64 rule: equal up to the float32 rounding of
    # the sum of n_steps * pixels gradient terms
    assert (raw - ref).abs().amax(dim=(1, 2, 3)).le(rounding).all()
    # completeness holds up to the 256-node rule's own error (measured in float64, where
    # rounding is negligible) plus float32 rounding
    assert ((raw.sum(dim=(1, 2, 3)) - delta).abs() <= quadrature_error.abs() + rounding).all()


def _gauss_legendre_ig(net, x, baseline, n_steps):
    """Integrated Gradients by hand in float64 with captum's default rule (Gauss-Legendre).

    Returns the attributions ``[B,1,S,S]``, the rule's completeness error per image
    (``sum(IG) - (f(x) - f(baseline))``) and a float32 rounding bound per image for a sum of
    ``n_steps * pixels`` terms ``w_i g_i (x - b)`` (tolerances.gamma_lambda).
    """
    net64 = copy.deepcopy(net).double()
    x64, b64 = x.double(), baseline.double()
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    grads = torch.zeros_like(x64)
    terms = torch.zeros_like(x64)
    for alpha, w in zip((nodes + 1) / 2, weights / 2):  # [-1, 1] -> [0, 1]
        point = (b64 + float(alpha) * (x64 - b64)).requires_grad_(True)
        (g,) = torch.autograd.grad(net64(point)[:, 0].sum(), point)
        grads += float(w) * g
        terms += (float(w) * g * (x64 - b64)).abs()
    ig = (x64 - b64) * grads
    with torch.no_grad():
        exact = (net64(x64) - net64(b64))[:, 0]
    rounding = gamma_lambda(n_steps * x[0].numel()) * terms.sum(dim=(1, 2, 3))
    return ig, ig.sum(dim=(1, 2, 3)) - exact, rounding


def _reference_copy(net):
    """An independent copy for the grad-cam package: trainable, in-place ops off."""
    with explainable.prepare_model(net, "features.2", channels_last=False).trainable() as model:
        return copy.deepcopy(model)


def test_guided_backprop_matches_grad_cam_package(net):
    from pytorch_grad_cam.guided_backprop import GuidedBackpropReLUModel

    x = _x()
    got = cams.explain(_ex(net), x, "guided_backprop")[:, 0]
    ref_model = GuidedBackpropReLUModel(_reference_copy(net))
    for i in range(len(x)):
        holder = {}
        err = _input_grad_error(ref_model.model, x[i:i + 1], lambda: holder.setdefault(
            "gb", torch.from_numpy(ref_model(x[i:i + 1].clone(), target_category=0)[:, :, 0])))
        gb = holder["gb"]
        assert_maps_close(got[i], cams.normalize_maps(gb.abs()), normalized_error(gb.abs(), err[0]))


def test_guided_gradcam_is_guided_backprop_times_gradcam(net):
    """Selvaraju et al. 2017, Sec. 3.1, with the grad-cam package's own pieces."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.guided_backprop import GuidedBackpropReLUModel
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    x = _x()
    got = cams.explain(_ex(net), x, "guided_gradcam")[:, 0]
    ref_net = _reference_copy(net)
    with pgc.GradCAM(model=ref_net, target_layers=[ref_net.features[2]]) as cam:
        grayscale = torch.from_numpy(cam(input_tensor=x, targets=[BinaryClassifierOutputTarget(1)] * len(x)))
    gb_model = GuidedBackpropReLUModel(copy.deepcopy(ref_net))
    ex = _ex(net)
    cam_err = cam_tolerance(fast_cam_terms(ex, x, "pneumonia", "gradcam")[0], tuple(x.shape[-2:]))
    for i in range(len(x)):
        holder = {}
        gb_err = _input_grad_error(gb_model.model, x[i:i + 1], lambda: holder.setdefault(
            "gb", torch.from_numpy(gb_model(x[i:i + 1].clone(), target_category=0)[:, :, 0]).abs()))[0]
        gb, cam = holder["gb"], grayscale[i]
        # product rule: |d(gb cam)| <= cam d_gb + gb d_cam, plus the product's own rounding
        err = cam.double() * gb_err + gb.double() * float(cam_err[i]) + 2 * U * (gb * cam).double()
        assert_maps_close(got[i], cams.normalize_maps(gb * cam), normalized_error(gb * cam, err))


def test_wildcat_maps_are_the_heads_class_maps_upsampled():
    torch.manual_seed(0)
    model = build_model("resnet18", head="wildcat", image_size=64).eval()
    x = _x(2, 64)
    got = cams.explain(explainable.prepare_model(model), x, "wildcat")[:, 0]
    with torch.no_grad():
        cm = model.class_maps(x)[:, 0]  # [B, 2, 2]
    lo = cm.amin(dim=(1, 2), keepdim=True)
    cm = (cm - lo) / (cm - lo).amax(dim=(1, 2), keepdim=True)
    ref = F.interpolate(cm[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    ref = (ref - ref.amin(dim=(1, 2), keepdim=True)) / (ref - ref.amin(dim=(1, 2), keepdim=True)).amax(dim=(1, 2), keepdim=True)
    head = model.head
    with torch.no_grad():
        feats = model.forward_features(x)  # [B, C, h, w]
    w = head.transfer.weight[:head.maps, :, 0, 0]  # class 0's M maps [M, C]
    terms = (w[None, :, :, None, None] * feats[:, None]).flatten(1, 2) / head.maps  # [B, M*C, h, w]
    bias = (head.transfer.bias[:head.maps] / head.maps)[None, :, None, None].expand(len(x), -1, *feats.shape[-2:])
    tol = cam_tolerance([torch.cat([terms, bias], 1)], (64, 64), relu=False)
    assert_maps_close(got, ref, tol)
    with pytest.raises(ValueError, match="WildcatHead"):
        cams.explain(explainable.prepare_model(build_model("resnet18", image_size=64)), x, "wildcat")


@pytest.mark.parametrize("method", ["gradient", "smoothgrad", "intgrad", "smoothgrad_ig", "guided_backprop",
                                    "guided_gradcam"])
def test_every_attribution_runs_on_a_findings_model(method, monkeypatch):
    monkeypatch.setitem(attributions.PARAMETERS, "smoothgrad_ig", {"nt_samples": 2, "noise": 0.1, "n_steps": 4})
    monkeypatch.setitem(attributions.PARAMETERS, "smoothgrad", {"nt_samples": 2, "noise": 0.1})
    monkeypatch.setitem(attributions.PARAMETERS, "intgrad", {"n_steps": 4})
    torch.manual_seed(0)
    net = TinyNet()
    net.fc = nn.Linear(8, 3)
    got = cams.explain(_ex(net), _x(2), method, target="findings")
    assert got.shape == (2, 3, 16, 16)
    assert float(got.min()) >= 0 and float(got.max()) <= 1 and float(got.amax()) > 0.99


def test_vit_guided_gradcam_works_on_token_layers():
    torch.manual_seed(0)
    model = build_model("vit_b_16", image_size=32).eval()
    got = cams.explain(explainable.prepare_model(model), _x(1, 32), "guided_gradcam", target="predicted")
    assert got.shape == (1, 1, 32, 32) and torch.isfinite(got).all()
