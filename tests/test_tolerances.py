"""The float32 map tolerance: holds for rounding, rejects a real bug."""
from __future__ import annotations

import pytest
import torch
from tolerances import U, assert_maps_close, cam_tolerance, gamma, gamma_lambda, normalized_error

from pneumoloc import cams


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
