"""Input convention and batched augmentation: shapes, ranges, seeding, and each operation's effect."""
import dataclasses

import numpy as np
import pytest
import torch

from pneumoloc.training.transforms import AugmentConfig, augment_batch, normalize, to_input, to_unit

OFF = AugmentConfig(p_affine=0, p_color=0, p_gamma=0, p_noise=0, p_blur=0, p_cutout=0, hflip=0)


def _batch(b=4, s=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (b, s, s), dtype=np.uint8)


def test_to_input_matches_the_documented_formula():
    u8 = _batch()
    x = to_input(u8)
    assert x.shape == (4, 1, 32, 32) and x.dtype == torch.float32
    np.testing.assert_allclose(x[:, 0].numpy(), (u8 / 255 - 0.5) / 0.25, rtol=1e-6, atol=1e-6)
    assert torch.equal(to_input(torch.from_numpy(u8)[:, None]), x)


def test_to_unit_rejects_float_and_bad_shapes():
    with pytest.raises(TypeError, match="uint8"):
        to_unit(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="grayscale"):
        to_unit(np.zeros((2, 3, 8, 8), np.uint8))


def test_all_operations_off_is_identity():
    x = to_unit(_batch())
    assert torch.allclose(augment_batch(x, OFF, torch.Generator().manual_seed(1)), x, atol=1e-6)


def test_same_seed_same_result_and_other_seed_differs():
    x = to_unit(_batch(8))
    a = augment_batch(x, None, torch.Generator().manual_seed(3))
    b = augment_batch(x, None, torch.Generator().manual_seed(3))
    c = augment_batch(x, None, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1


def test_images_get_different_parameters_within_a_batch():
    x = to_unit(np.repeat(_batch(1), 6, axis=0))
    y = augment_batch(x, dataclasses.replace(OFF, p_affine=1.0), torch.Generator().manual_seed(0))
    assert len({tuple(img.flatten()[:50].tolist()) for img in y}) == 6


def test_shift_moves_a_bright_square_like_a_translation():
    img = np.zeros((1, 33, 33), np.uint8)
    img[0, 14:19, 14:19] = 255
    cfg = dataclasses.replace(OFF, p_affine=1.0, rotate_deg=0.0, scale=0.0, shift=0.2)
    y = augment_batch(to_unit(img), cfg, torch.Generator().manual_seed(5))[0, 0].numpy()
    ys, xs = np.nonzero(y > 0.5)
    # the square moved (centre left 16, 16) but kept its area: a pure translation
    assert (abs(ys.mean() - 16) + abs(xs.mean() - 16)) > 1
    assert abs((y > 0.5).sum() - 25) <= 10


def test_no_horizontal_flip_by_default():
    assert AugmentConfig().hflip == 0.0
    img = np.zeros((1, 32, 32), np.uint8)
    img[0, :, :8] = 255  # bright left edge ("heart side")
    cfg = dataclasses.replace(AugmentConfig(), p_cutout=0)
    for seed in range(20):
        y = augment_batch(to_unit(img), cfg, torch.Generator().manual_seed(seed))[0, 0]
        assert y[:, :16].mean() > y[:, 16:].mean()
    flipped = augment_batch(to_unit(img), dataclasses.replace(OFF, hflip=1.0), torch.Generator())[0, 0]
    assert flipped[:, :16].mean() < flipped[:, 16:].mean()


def test_cutout_zeroes_a_square_of_the_configured_size():
    x = torch.ones(3, 1, 50, 50)
    cfg = dataclasses.replace(OFF, p_cutout=1.0, cutout=0.2)
    y = augment_batch(x, cfg, torch.Generator().manual_seed(0))
    zeros = (y == 0).sum(dim=(1, 2, 3))
    assert (zeros > 0).all() and (zeros <= 100).all()  # 10 x 10 at most (clipped at borders)


def test_blur_preserves_mean_and_reduces_variance():
    x = to_unit(_batch(2, 64))
    cfg = dataclasses.replace(OFF, p_blur=1.0, blur_sigma=4.0)
    y = augment_batch(x, cfg, torch.Generator().manual_seed(0))
    assert torch.allclose(y.mean(), x.mean(), atol=0.01)
    assert y.std() < 0.8 * x.std()


def test_gamma_and_contrast_keep_order_of_pixel_values():
    x = torch.linspace(0, 1, 256).view(1, 1, 16, 16)
    cfg = dataclasses.replace(OFF, p_gamma=1.0, p_color=1.0, brightness=0.0)
    y = augment_batch(x, cfg, torch.Generator().manual_seed(2)).flatten()
    assert (torch.diff(y) >= 0).all()


def test_normalize_inverse():
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(normalize(x) * 0.25 + 0.5, x)
