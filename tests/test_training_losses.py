"""Losses: every registry entry checked against an independent reference, NaN masking, alpha options."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from pneumoloc.training.losses import LOSSES, build_loss, class_frequencies

torch.manual_seed(0)
LOGITS = torch.randn(12, 3)
TARGETS = (torch.rand(12, 3) > 0.6).float()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_finite_differentiable_and_masks_nan(name):
    logits = LOGITS.clone().requires_grad_()
    targets = TARGETS.clone()
    targets[0, 0] = targets[5, 2] = float("nan")
    loss = build_loss(name, targets=targets.numpy(), num_outputs=3)(logits, targets)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[0, 0] == 0 and logits.grad[5, 2] == 0  # masked entries get no gradient


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_masked_entries_do_not_change_the_loss(name):
    targets = TARGETS.clone()
    targets[2, 1] = float("nan")
    fn = build_loss(name, targets=TARGETS.numpy(), num_outputs=3, alpha=0.3)
    a = fn(LOGITS, targets)
    changed = LOGITS.clone()
    changed[2, 1] = 50.0
    assert torch.allclose(a, fn(changed, targets))


def test_bce_and_cross_entropy_match_torch_for_one_logit():
    z, t = LOGITS[:, :1], TARGETS[:, :1]
    ref = F.binary_cross_entropy_with_logits(z, t)
    assert torch.allclose(build_loss("bce")(z, t), ref)
    # two-class softmax over [0, z] is exactly sigmoid BCE
    two = F.cross_entropy(torch.cat([torch.zeros_like(z), z], 1), t[:, 0].long())
    assert torch.allclose(build_loss("cross_entropy")(z, t), two, atol=1e-6)


def test_cross_entropy_with_two_logits_is_softmax_ce():
    z, t = LOGITS[:, :2], TARGETS[:, 0]
    assert torch.allclose(build_loss("cross_entropy", num_outputs=2)(z, t), F.cross_entropy(z, t.long()))


def test_weighted_cross_entropy_uses_inverse_frequency():
    z, t = LOGITS[:, :1], TARGETS[:, :1]
    freq = t.mean()
    w = torch.where(t == 1, 0.5 / freq, 0.5 / (1 - freq))
    ref = (F.binary_cross_entropy_with_logits(z, t, reduction="none") * w).mean()
    assert torch.allclose(build_loss("weighted_cross_entropy", targets=t.numpy())(z, t), ref)
    counts = torch.bincount(t[:, 0].long(), minlength=2).float()
    cw = counts.sum() / (2 * counts)
    ref2 = F.cross_entropy(LOGITS[:, :2], t[:, 0].long(), weight=cw)
    got = build_loss("weighted_cross_entropy", targets=t[:, 0].numpy(), num_outputs=2)(LOGITS[:, :2], t[:, 0])
    assert torch.allclose(got, ref2)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [None, 0.25, 0.8])
def test_focal_matches_torchvision(gamma, alpha):
    ref = sigmoid_focal_loss(LOGITS, TARGETS, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="mean")
    got = build_loss("focal", gamma=gamma, alpha=alpha, num_outputs=3)(LOGITS, TARGETS)
    assert torch.allclose(got, ref, atol=1e-6)


def test_focal_gamma_zero_no_alpha_is_bce():
    assert torch.allclose(build_loss("focal", gamma=0, alpha="none")(LOGITS, TARGETS),
                          F.binary_cross_entropy_with_logits(LOGITS, TARGETS))


def test_focal_inverse_frequency_alpha_weights_the_rare_class():
    t = torch.tensor([[1.0], [1.0], [1.0], [0.0]])  # 75% positive as in Kermany
    z = torch.zeros(4, 1)
    fn = build_loss("focal", targets=t.numpy(), alpha="inverse_frequency", gamma=0)
    assert torch.allclose(fn.alpha, torch.tensor([0.25]))
    bce = np.log(2)  # at z = 0 every term is log 2
    expected = (3 * 0.25 * bce + 1 * 0.75 * bce) / 4
    assert torch.allclose(fn(z, t), torch.tensor(expected, dtype=torch.float32))


def test_class_frequencies_ignore_nan():
    t = np.array([[1, np.nan], [0, 1], [1, np.nan]])
    np.testing.assert_allclose(class_frequencies(t), [2 / 3, 1.0])


def test_clear_errors():
    with pytest.raises(ValueError, match="known losses"):
        build_loss("hinge")
    with pytest.raises(ValueError, match="focal_alpha"):
        build_loss("focal", alpha="often")
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        build_loss("focal", alpha=1.5)
    with pytest.raises(ValueError, match="training targets"):
        build_loss("focal", alpha="inverse_frequency")
    with pytest.raises(ValueError, match="do not match"):
        build_loss("bce")(torch.zeros(4, 2), torch.zeros(4, 3))
