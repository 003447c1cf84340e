"""The float32 map tolerance: holds for rounding, rejects a real bug."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from tolerances import (U, ablationcam_weight_error, assert_maps_close, cam_tolerance, eigencam_error, gamma,
                        gamma_lambda, library_cam_reference, normalized_error, scorecam_weight_error)

from pneumoloc.explain import cams, explainable


def _terms(seed: int = 0, b: int = 3, k: int = 512, h: int = 4):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(b, k, 1, 1, generator=g)
    a = torch.rand(b, k, h, h, generator=g)  # post-ReLU activations
    return w * a  # Grad-CAM terms alpha_k A_k


def test_gamma_values():
    assert gamma(1) == pytest.approx(U) and gamma(1000) == pytest.approx(1000 * U, rel=1e-4)
    assert gamma_lambda(1024, 8.0) == pytest.approx(8 * 32 * U, rel=1e-3)
    assert gamma_lambda(2048) < gamma(2048) / 5


def test_normalization_amplifies_by_the_inverse_range():
    raw = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    d = 1e-6
    assert float(normalized_error(raw, d)) == pytest.approx(4 * d / (4 - 2 * d) + 4 * U)
    assert float(normalized_error(raw / 1000, d)) == pytest.approx(4 * d / (4e-3 - 2 * d) + 4 * U)
    assert float(normalized_error(torch.zeros(2, 2), d)) == float("inf")  # constant: ill-conditioned


def test_float32_rounding_is_within_the_bound():
    """The terms summed in float32 (two orders) against float64: the difference of the
    normalised maps stays under the bound."""
    t = _terms()
    exact = cams.upsample_maps(t.double().sum(1).clamp_min(0), (32, 32))
    for order in (t, t.flip(1)):
        f32 = cams.upsample_maps(order.float().sum(1).clamp_min(0), (32, 32))
        assert_maps_close(f32, exact.float(), cam_tolerance([t], (32, 32)))


@pytest.mark.parametrize("bug", ["no_relu", "abs_weights", "one_channel_lost"])
def test_a_real_bug_exceeds_the_bound(bug):
    """Errors of a wrong ReLU or weighting are ~1e-1 on the normalised map; the bound is far below."""
    t = _terms()
    right = cams.upsample_maps(t.sum(1).clamp_min(0), (32, 32))
    wrong_raw = {"no_relu": t.sum(1),
                 "abs_weights": (t.abs()).sum(1),
                 "one_channel_lost": t[:, 1:].sum(1).clamp_min(0)}[bug]
    if bug == "one_channel_lost":  # drop the channel that matters most
        k = t.abs().sum(dim=(0, 2, 3)).argmax()
        wrong_raw = torch.cat([t[:, :k], t[:, k + 1:]], 1).sum(1).clamp_min(0)
    wrong = cams.upsample_maps(wrong_raw, (32, 32))
    tol = cam_tolerance([t], (32, 32))
    assert float(tol.max()) < 1e-2
    with pytest.raises(AssertionError, match="float32 bounds"):
        assert_maps_close(wrong, right, tol)


def test_a_useless_bound_is_reported():
    with pytest.raises(AssertionError, match="could not see a bug"):
        assert_maps_close(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4), torch.full((2,), 0.5))


def test_weight_bounds_hold_for_perturbed_scores():
    """ScoreCAM softmax and AblationCAM (s0 - s_k) / s0 under score errors of a known size."""
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 64, generator=g, dtype=torch.float64)
    e = 1e-3
    ds = e * (2 * torch.rand(3, 64, generator=g, dtype=torch.float64) - 1)
    w = s.softmax(1)
    assert ((s + ds).softmax(1) - w).abs().le(scorecam_weight_error(w, torch.full_like(s, e))).all()
    s0, ds0 = torch.tensor([0.5, -0.2, 0.05], dtype=torch.float64), torch.tensor([e, -e, e], dtype=torch.float64)
    wa = (s0[:, None] - s) / s0[:, None]
    moved = (s0[:, None] + ds0[:, None] - s - ds) / (s0[:, None] + ds0[:, None])
    bound = ablationcam_weight_error(wa, s0, s, ds0.abs(), torch.full_like(s, e))
    assert (moved - wa).abs().le(bound).all()
    assert ablationcam_weight_error(wa, torch.full((3,), 1e-4), s, torch.full((3,), 2e-4), s.abs()).isinf().all()


def test_eigencam_bound_holds_under_a_perturbation_and_needs_a_gap():
    """Wedin's bound (step 8) on the package's own projection, float32 SVDs on both sides."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 256, 4, 4, generator=g) * torch.linspace(0.1, 3, 16).view(1, 1, 4, 4)  # one clear direction
    d = 1e-4
    moved = a + d * (2 * torch.rand(a.shape, generator=g) - 1)
    p, q = (torch.from_numpy(get_2d_projection(t.numpy())).double() for t in (a, moved))
    err = eigencam_error(a.double(), p, torch.full((2,), d, dtype=torch.float64))
    assert float(err.max()) < 0.1 * float(p.abs().max())
    assert ((q.clamp_min(0) - p.clamp_min(0)).abs() <= err).all()
    twins = torch.zeros(1, 8, 2, 2)  # two centred, orthogonal components of equal energy: sigma_1 = sigma_2
    twins[0, 0, 0] = torch.tensor([1.0, -1.0])
    twins[0, 1, 1] = torch.tensor([1.0, -1.0])
    assert eigencam_error(twins.double(), torch.zeros(1, 2, 2), torch.full((1,), 1e-6)).isinf().all()


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2, padding=1))
        self.fc = nn.Linear(8, 1)

    def forward(self, x):
        return self.fc(torch.relu(self.features(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize("method,bug", [("scorecam", "wrong_sign"), ("scorecam", "one_channel_lost"),
                                        ("ablationcam", "wrong_sign"), ("ablationcam", "one_channel_lost"),
                                        ("eigencam", "wrong_sign")])
def test_library_method_bound_rejects_a_real_bug(method, bug):
    """The package's map holds within its step 6-8 bound; weights of the wrong sign or the most
    important channel dropped do not."""
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    torch.manual_seed(0)
    plain = explainable.prepare_model(_Net(), target_layer="features.2", channels_last=False)
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    ref = library_cam_reference(plain, x, method, [BinaryClassifierOutputTarget(1)] * 2)
    want = cams.normalize_maps(ref["maps"])
    assert_maps_close(cams.upsample_maps(ref["raw"].float(), (16, 16)), want, ref["tol"], 0.5)
    if method == "eigencam":
        wrong_raw = (-torch.from_numpy(__import__("pytorch_grad_cam").utils.svd_on_activations.get_2d_projection(
            ref["acts"].float().numpy()))).clamp_min(0)
    else:
        terms = ref["weights"][..., None, None] * ref["acts"]
        if bug == "wrong_sign":
            terms = -terms
        else:
            k = terms.abs().sum(dim=(2, 3)).argmax(1)
            terms = terms.clone()
            terms[torch.arange(len(k)), k] = 0
        wrong_raw = terms.sum(1).clamp_min(0)
    wrong = cams.upsample_maps(wrong_raw.float(), (16, 16))
    assert float(ref["tol"].min()) < 0.05
    with pytest.raises(AssertionError, match="float32 bounds"):
        assert_maps_close(wrong, want, ref["tol"])
