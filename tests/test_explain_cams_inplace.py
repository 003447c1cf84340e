"""Target activations changed in place after their layer: torchvision's DenseNet-121, whose
``forward`` applies ``F.relu(features, inplace=True)`` to the output of ``features.norm5``.

The network is built through pneumoloc's import of the paper's checkpoints (their networks are
torchvision models), so the target layer is ``backbone.features.norm5``. pytorch-grad-cam hooks
that layer's output and reads it after the forward pass, i.e. after the ReLU; pneumoloc's default
uses the output as the layer produced it. Both are checked against independent references.
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F

from pneumoloc.explain import cams, explainable
from pneumoloc.models.paper import paper_from_config
from tolerances import assert_maps_close, cam_tolerance

torch.set_num_threads(1)  # the test machine is shared
SIZE = 64  # DenseNet-121 features 2x2 at 64 px
LAYER = "backbone.features.norm5"


@lru_cache(maxsize=None)
def _densenet():
    torch.manual_seed(0)
    model = paper_from_config("densenet121", 2, SIZE, positive_index=1, activation="softmax").eval()
    model.train()
    with torch.no_grad():  # non-default BatchNorm statistics, so the activations are not all alike
        model(torch.randn(4, 1, SIZE, SIZE))
    return model.eval()


def _x(b: int = 3) -> torch.Tensor:
    return torch.randn(b, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def _their_input(x: torch.Tensor) -> torch.Tensor:
    """pneumoloc input (u - 0.5) / 0.25 -> grey repeated to RGB, ImageNet-normalized (their utils.py)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return ((x * 0.25 + 0.5).repeat(1, 3, 1, 1) - mean) / std


def _norm5_and_gradient(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The pre-ReLU output A of features.norm5, dS/dA for the predicted logit S and the predicted
    classes, written out from torchvision's DenseNet.forward (features -> ReLU -> pool -> classifier).
    The predicted class leaves evidence: a random head's pneumonia maps can be all zero after ReLU."""
    a = model.backbone.features(_their_input(x)).detach().requires_grad_(True)
    logits = model.head(torch.flatten(F.adaptive_avg_pool2d(F.relu(a), 1), 1))
    pred = logits.argmax(1)
    (g,) = torch.autograd.grad(logits.gather(1, pred[:, None]).sum(), a)
    return a.detach(), g, pred.tolist()


def _gradcam_reference(a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM (Selvaraju et al. 2017, eqs. 1-2) of activation ``a``, resized and scaled by the
    package's own ``scale_cam_image``; returns the maps and their float32 bounds."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    terms = g.mean(dim=(2, 3), keepdim=True) * a
    raw = terms.sum(1).clamp_min(0).numpy()
    maps = torch.from_numpy(scale_cam_image(scale_cam_image(raw, (SIZE, SIZE))))
    return maps, cam_tolerance([terms], (SIZE, SIZE))


def _package_gradcam(model, x: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """pytorch-grad-cam's GradCAM on the model as it is (in-place ReLU included)."""
    import copy

    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = copy.deepcopy(model).requires_grad_(True)
    with pgc.GradCAM(model=net, target_layers=[net.get_submodule(LAYER)]) as cam:
        return torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes]))


def test_inplace_change_of_the_target_activation_warns_naming_the_layer():
    ex = explainable.prepare_model(_densenet())
    assert ex.layer_name == LAYER
    with pytest.warns(cams.InplaceActivationWarning, match=r"backbone\.features\.norm5.*as_library"):
        cams.explain(ex, _x(1), "gradcam")


def test_the_warning_shows_once_per_call_site_and_points_at_the_caller():
    ex = explainable.prepare_model(_densenet())
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")  # Python's default: once per (message, category, module, line)
        for _ in range(3):
            cams.explain(ex, _x(1), "gradcam")
    shown = [w for w in seen if issubclass(w.category, cams.InplaceActivationWarning)]
    assert len(shown) == 1
    assert shown[0].filename == __file__


def test_no_warning_without_an_inplace_change_or_with_as_library():
    ex = explainable.prepare_model(_densenet(), target_layer="backbone.features.denseblock4")
    with warnings.catch_warnings():
        warnings.simplefilter("error", cams.InplaceActivationWarning)
        cams.explain(ex, _x(1), "gradcam")  # denseblock4's output goes into norm5, unchanged
        cams.explain(explainable.prepare_model(_densenet(), activation="as_library"), _x(1), "gradcam")


def test_as_library_reproduces_pytorch_grad_cam_on_the_inplace_relu():
    model, x = _densenet(), _x()
    ex = explainable.prepare_model(model, activation="as_library")
    got = cams.explain(ex, x, "gradcam", "predicted")[:, 0]
    a, g, pred = _norm5_and_gradient(model, x)
    # what the package reads: the activation after the in-place ReLU, and the gradient its tensor
    # hook receives, which PyTorch gives with respect to the value before the in-place change
    expected, tol = _gradcam_reference(F.relu(a), g)
    assert_maps_close(got, expected, tol)
    assert_maps_close(got, _package_gradcam(model, x, pred), tol)


def test_default_uses_the_layer_output_as_produced_and_differs_from_the_package():
    model, x = _densenet(), _x()
    ex = explainable.prepare_model(model)
    with pytest.warns(cams.InplaceActivationWarning):
        got = cams.explain(ex, x, "gradcam", "predicted")[:, 0]
    a, g, pred = _norm5_and_gradient(model, x)
    expected, tol = _gradcam_reference(a, g)  # the pre-ReLU output of features.norm5
    assert_maps_close(got, expected, tol)
    package = _package_gradcam(model, x, pred)
    # a wrong ReLU moves maps by ~1e-1 (tests/tolerances.py): far outside the float32 bounds
    assert (got - package).abs().amax() > max(0.05, 10 * float(tol.max()))


def test_unknown_activation_choice_names_the_parameter_and_the_choices():
    with pytest.raises(ValueError, match="activation.*as_library.*as_produced"):
        explainable.prepare_model(_densenet(), activation="post_relu")
