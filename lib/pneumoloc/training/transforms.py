"""Model input and batched, seeded augmentation on tensors.

Input convention (shared with notebooks 03-05): images are cached as uint8
``[N, S, S]`` grayscale, *squashed* (not cropped) to S x S so box and mask
coordinates scale linearly; :func:`to_input` turns a batch into float32
``[B, 1, S, S]`` normalized as ``(x / 255 - 0.5) / 0.25``.

Augmentation follows the light policy of Shahi & Bagale (arXiv 2511.00456): small
rotation, shift/scale, brightness/contrast, gamma, Gaussian noise, Gaussian blur
and coarse dropout (cutout). Unlike the paper's per-image albumentations pipeline,
every operation here acts on the whole batch at once (one ``affine_grid`` /
``grid_sample`` call for the geometry, one grouped convolution for the blur), with
per-image parameters drawn from a per-image integer *key*: each image's random
numbers come from a counter-based generator (SplitMix64, Steele, Lea & Flood,
OOPSLA 2014) keyed by it, so an image's augmentation is a function of its key
alone, whatever batch or rank it lands in. Training keys an image by (seed, epoch,
position in the epoch), so a resumed run sees exactly the same images as an
uninterrupted one, and N ranks holding shards of a batch augment it as one process.

Horizontal flips are OFF by default: a chest radiograph is not left-right
symmetric (the heart lies on the patient's left, the right hemidiaphragm sits
higher), and the boxes and lung masks used for localization are anatomical, so a
flipped image is a different anatomy, not the same patient seen again. Set
``hflip > 0`` only for experiments that want that invariance.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["MEAN", "STD", "to_unit", "normalize", "to_input", "AugmentConfig", "augment_batch", "uniforms", "mix64",
           "generator_seeds"]

MEAN = 0.5  # (x/255 - MEAN) / STD maps a typical radiograph to roughly zero mean, unit spread
STD = 0.25


def to_unit(batch) -> torch.Tensor:
    """uint8 ``[B,S,S]`` or ``[B,1,S,S]`` (numpy or torch) -> float32 ``[B,1,S,S]`` in [0, 1]."""
    t = torch.from_numpy(np.require(batch, requirements=["C", "W"])) if isinstance(batch, np.ndarray) else batch
    if t.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 batch (cached images), got {t.dtype}")
    if t.ndim == 3:
        t = t.unsqueeze(1)
    if t.ndim != 4 or t.shape[1] != 1:
        raise ValueError(f"expected [B,S,S] or [B,1,S,S] grayscale, got shape {tuple(t.shape)}")
    return t.float().div_(255.0)


def normalize(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> model input ``(x - 0.5) / 0.25``."""
    return (x01 - MEAN) / STD


def to_input(batch) -> torch.Tensor:
    """uint8 batch -> normalized float32 ``[B,1,S,S]`` (the one input convention)."""
    return normalize(to_unit(batch))


@dataclass(frozen=True)
class AugmentConfig:
    """The light augmentation policy; each operation fires per image with its probability.

    Magnitudes are fractions of the image side (shift, cutout) or of the [0, 1]
    intensity range (brightness, noise), kept small as in the paper: an X-ray
    classifier must not learn from framing or exposure.
    """

    rotate_deg: float = 7.0  # max |rotation| in degrees
    shift: float = 0.05  # max |translation| as a fraction of the side
    scale: float = 0.08  # zoom drawn from [1 - scale, 1 + scale]
    p_affine: float = 0.5  # probability of the (rotation, shift, scale) transform (albumentations default)
    brightness: float = 0.1  # additive offset drawn from [-b, b]
    contrast: float = 0.1  # gain around the image mean drawn from [1 - c, 1 + c]
    p_color: float = 0.5
    gamma: float = 0.15  # exponent drawn from [1 - g, 1 + g]
    p_gamma: float = 0.3
    noise_std: float = 0.02  # Gaussian noise standard deviation
    p_noise: float = 0.2
    blur_sigma: float = 1.0  # max Gaussian blur sigma in pixels at 224 px (scaled with size)
    p_blur: float = 0.1
    cutout: float = 0.12  # side of the dropped square as a fraction of the image side
    p_cutout: float = 0.2
    hflip: float = 0.0  # OFF: laterality is anatomical (see module docstring)

    def as_dict(self) -> dict:
        return asdict(self)


_DRAWS = 32  # uniform numbers per image: the policy uses 17 (one column per draw below)
_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def mix64(keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """SplitMix64 of ``(key, counter)`` pairs (broadcast): uint64 whose every bit depends on all bits of both."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps modulo 2**64 by design
        z = np.asarray(keys).astype(np.uint64) * _GOLDEN + np.asarray(counters).astype(np.uint64) * _MIX1
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def generator_seeds(keys: np.ndarray, salt: int) -> list[int]:
    """One ``torch.Generator`` seed per key. torch seeds its Mersenne Twister from the low 32 bits
    only, so the key is mixed first: keys differing in any bit (the epoch's) get other streams."""
    return [int(z) for z in mix64(keys, np.full(len(keys), salt, dtype=np.uint64)) % np.uint64(2 ** 63)]


def uniforms(keys: np.ndarray, n: int = _DRAWS) -> torch.Tensor:
    """``[B, n]`` float32 uniforms in [0, 1), row b a function of ``keys[b]`` alone (SplitMix64)."""
    z = mix64(np.asarray(keys)[:, None], np.arange(1, n + 1, dtype=np.uint64)[None])
    return torch.from_numpy((z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24))  # exact in float32


class _Draws:
    """Hands out the per-image uniforms column by column, in the fixed order of the operations."""

    def __init__(self, keys: np.ndarray):
        self.keys, self.u, self.col = np.asarray(keys), uniforms(keys), 0

    def next(self) -> torch.Tensor:
        self.col += 1
        return self.u[:, self.col - 1]

    def noise(self, rows: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Standard normal noise images for ``rows``, each from its own key's generator."""
        seeds = generator_seeds(self.keys[rows.cpu().numpy()], salt=_DRAWS + 1)  # a counter no column uses
        return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


def _uniform(n: int, low: float, high: float, g: _Draws) -> torch.Tensor:
    return g.next() * (high - low) + low


def _fires(n: int, p: float, g: _Draws) -> torch.Tensor:
    return g.next() < p


def _affine(x: torch.Tensor, cfg: AugmentConfig, g: _Draws) -> torch.Tensor:
    b = x.shape[0]
    on = _fires(b, cfg.p_affine, g)
    angle = torch.deg2rad(_uniform(b, -cfg.rotate_deg, cfg.rotate_deg, g))
    zoom = 1 + _uniform(b, -cfg.scale, cfg.scale, g)
    shift_x, shift_y = _uniform(b, -cfg.shift, cfg.shift, g), _uniform(b, -cfg.shift, cfg.shift, g)
    shift = torch.stack([shift_x, shift_y], 1) * 2  # normalized grid units span 2
    flip = torch.where(_fires(b, cfg.hflip, g), -1.0, 1.0)
    idx = torch.nonzero(on | (flip < 0)).flatten()
    if idx.numel() == 0:
        return x
    on_f = on.float()
    angle, zoom, shift = angle * on_f, 1 + (zoom - 1) * on_f, shift * on_f[:, None]
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # theta maps output to input coordinates (normalized [-1, 1]); zoom > 1 enlarges the content
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)[idx]
    sub = x[idx.to(x.device)]
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(sub.shape), align_corners=False)
    # zeros padding: the exposed border is black like the collimated edge of a film
    x[idx.to(x.device)] = F.grid_sample(sub, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return x


def _where(on: torch.Tensor, device) -> torch.Tensor:
    return torch.nonzero(on).flatten().to(device)


def _intensity(x: torch.Tensor, cfg: AugmentConfig, g: _Draws) -> torch.Tensor:
    b, dev = x.shape[0], x.device
    on_color, gain = _fires(b, cfg.p_color, g), 1 + _uniform(b, -cfg.contrast, cfg.contrast, g)
    offset = _uniform(b, -cfg.brightness, cfg.brightness, g)
    on_gamma, gamma = _fires(b, cfg.p_gamma, g), 1 + _uniform(b, -cfg.gamma, cfg.gamma, g)
    on_noise = _fires(b, cfg.p_noise, g)
    # each operation touches only the images it fires on: most of a batch is left as it is
    i = _where(on_color, dev)
    if i.numel():
        sub = x[i]
        mean = sub.mean(dim=(1, 2, 3), keepdim=True)
        gi, oi = gain[on_color].to(dev).view(-1, 1, 1, 1), offset[on_color].to(dev).view(-1, 1, 1, 1)
        x[i] = ((sub - mean) * gi + mean + oi).clamp_(0, 1)
    i = _where(on_gamma, dev)
    if i.numel():
        x[i] = x[i].pow(gamma[on_gamma].to(dev).view(-1, 1, 1, 1))
    i = _where(on_noise, dev)
    if i.numel():
        noise = g.noise(i, tuple(x.shape[1:])).to(dev) * cfg.noise_std
        x[i] = (x[i] + noise).clamp_(0, 1)
    return x


def _blur(x: torch.Tensor, cfg: AugmentConfig, g: _Draws) -> torch.Tensor:
    b, _, h, w = x.shape
    on = _fires(b, cfg.p_blur, g)
    sigma = _uniform(b, 0.1, 1.0, g) * cfg.blur_sigma * (h / 224)
    i = _where(on, x.device)
    if i.numel() == 0 or cfg.blur_sigma <= 0:
        return x
    sigma = sigma[on]
    # the radius of the largest sigma the policy can draw, so an image's blur ignores its batch
    radius = max(1, math.ceil(2 * cfg.blur_sigma * (h / 224)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t[None] / sigma[:, None].clamp_min(1e-3)) ** 2)
    k = (k / k.sum(1, keepdim=True)).to(x.device, x.dtype)
    # separable blur of the chosen images at once, as a weighted sum of shifted copies: with
    # per-image kernels of a few taps this beats a grouped convolution on the CPU
    y = _taps(F.pad(x[i], (radius, radius, 0, 0), mode="reflect"), k, w, dim=3)
    x[i] = _taps(F.pad(y, (0, 0, radius, radius), mode="reflect"), k, h, dim=2)
    return x


def _taps(padded: torch.Tensor, k: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """Correlate each image with its own 1-D kernel ``k[b]`` along ``dim`` (input padded by the radius)."""
    out = None
    for t in range(k.shape[1]):
        term = padded.narrow(dim, t, n) * k[:, t].view(-1, 1, 1, 1)
        out = term if out is None else out.add_(term)
    return out


def _cutout(x: torch.Tensor, cfg: AugmentConfig, g: _Draws) -> torch.Tensor:
    b, _, h, w = x.shape
    on = _fires(b, cfg.p_cutout, g)
    cy, cx = g.next() * h, g.next() * w
    half_h, half_w = cfg.cutout * h / 2, cfg.cutout * w / 2
    for j in torch.nonzero(on).flatten().tolist():  # a slice per chosen image: cheaper than a full mask
        y0, y1 = math.floor(cy[j] - half_h) + 1, math.ceil(cy[j] + half_h)
        x0, x1 = math.floor(cx[j] - half_w) + 1, math.ceil(cx[j] + half_w)
        x[j, :, max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = 0.0
    return x


def augment_batch(x01: torch.Tensor, cfg: AugmentConfig | None = None,
                  generator: torch.Generator | None = None, keys: np.ndarray | None = None) -> torch.Tensor:
    """Augment a batch of [0, 1] images ``[B,1,S,S]`` (any device) with per-image random parameters.

    Args:
        x01: images in [0, 1] (e.g. :func:`to_unit` of the cached uint8 batch).
        cfg: the policy; defaults to :class:`AugmentConfig`.
        generator: a CPU ``torch.Generator`` drawing one key per image when ``keys`` is not given.
        keys: integer key per image (e.g. :func:`pneumoloc.training.distributed.sample_keys`); an
            image's augmentation depends on its key only. All randomness is drawn on the CPU, so
            the result is the same on every device.

    Returns:
        Augmented images in [0, 1], same shape and device.
    """
    cfg = cfg or AugmentConfig()
    if keys is None:
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        keys = torch.randint(0, 2 ** 62, (x01.shape[0],), generator=gen).numpy()
    if len(keys) != x01.shape[0]:
        raise ValueError(f"augment_batch: {len(keys)} keys for {x01.shape[0]} images; give one key per image")
    g = _Draws(keys)
    x = _affine(x01.clone(), cfg, g)  # the operations below write into this copy
    x = _intensity(x, cfg, g)
    x = _blur(x, cfg, g)
    return _cutout(x, cfg, g)
