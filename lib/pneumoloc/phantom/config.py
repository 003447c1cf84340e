"""The phantom's parameters: :class:`PhantomConfig`, validated, documented and fingerprinted.

Every field carries its default and a trailing comment; the comments are the CLI's
``--help`` text (:meth:`PhantomConfig.help`). Wrong types and out-of-range values are
errors naming the field. :meth:`PhantomConfig.fingerprint` hashes every field that
changes the generated files, plus :data:`GENERATOR_VERSION`, so an existing phantom is
reused only when it would be drawn identically (:func:`pneumoloc.phantom.writer.generate_phantom`).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["PhantomConfig", "GENERATOR_VERSION"]

GENERATOR_VERSION = 2  # bump when the drawing changes: an existing phantom is then regenerated
_EXECUTION_ONLY = ("workers",)  # fields that do not change the output
_MARKER_RATES = ("marker_rate_positive", "marker_rate_negative", "marker_rate_test")


@dataclass(frozen=True)
class PhantomConfig:
    """Every parameter of the phantom, each with its default (CLI: ``--kebab-case`` flags)."""

    n_images: int = 2000  # number of images in total
    size: int = 256  # image width = height in pixels
    pneumonia_fraction: float = 0.73  # share of patients (and so ~of images) with pneumonia, as in Kermany
    images_per_patient: tuple[int, int] = (1, 4)  # min and max images per patient (uniform)
    seed: int = 0  # random seed: same seed and parameters -> identical files
    conspicuity: float = 1.0  # lesion contrast multiplier (1 = clearly visible, 0 = invisible)
    max_opacities: int = 3  # most opacities on one pneumonia image (at least 1)
    lung_width: tuple[float, float] = (0.64, 0.80)  # lung field width as a fraction of the image width
    jitter: float = 0.02  # per-image shift and scale of a patient's anatomy (fraction of size)
    noise: float = 0.02  # standard deviation of pixel noise (intensity scale 0-1)
    exposure_gamma: tuple[float, float] = (0.8, 1.25)  # range of the per-image exposure gamma
    exposure_shift: float = 0.05  # largest per-image brightness offset (intensity scale 0-1)
    rib_contrast: float = 1.0  # contrast multiplier of ribs and clavicles (distractors for CAMs)
    age_range: tuple[int, int] = (18, 85)  # patient age range in years (uniform)
    marker_rate_positive: float = 0.0  # train/val share of pneumonia images with a burned-in R/L marker (0 = none)
    marker_rate_negative: float = 0.0  # train/val share of normal images with the marker
    marker_rate_test: float = 0.0  # test share of images with the marker, the same for both labels
    marker_size: float = 0.1  # marker letter height as a fraction of the image size
    marker_split: tuple[float, float, float] = (0.7, 0.15, 0.15)  # patient split the marker rates follow (01's ratios)
    marker_split_seed: int = 0  # seed of that split (notebook 01's seed)
    workers: int = 2  # processes drawing images (does not change the output; 1 = no pool)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):  # YAML / JSON give lists for tuples
                value = tuple(value)
            _check_type(f.name, value, f.default)
            if isinstance(f.default, float):  # 1 and 1.0 must give the same fingerprint
                value = float(value)
            elif isinstance(f.default, tuple):
                value = tuple(type(d)(v) for v, d in zip(value, f.default))
            object.__setattr__(self, f.name, value)
        lo, hi = self.images_per_patient
        checks = {
            "n_images": self.n_images >= 1, "size": self.size >= 32,
            "pneumonia_fraction": 0.0 <= self.pneumonia_fraction <= 1.0,
            "images_per_patient": 1 <= lo <= hi, "conspicuity": self.conspicuity >= 0,
            "max_opacities": self.max_opacities >= 1,
            "lung_width": 0.3 <= self.lung_width[0] <= self.lung_width[1] <= 0.9,
            "jitter": 0 <= self.jitter <= 0.1, "noise": self.noise >= 0,
            "exposure_gamma": 0 < self.exposure_gamma[0] <= self.exposure_gamma[1],
            "exposure_shift": 0 <= self.exposure_shift <= 0.5, "rib_contrast": self.rib_contrast >= 0,
            "age_range": 0 <= self.age_range[0] <= self.age_range[1], "workers": self.workers >= 1,
            **{k: 0.0 <= getattr(self, k) <= 1.0 for k in _MARKER_RATES},
            "marker_size": 0.03 <= self.marker_size <= 0.25, "marker_split_seed": self.marker_split_seed >= 0,
            "marker_split": min(self.marker_split) >= 0 and abs(sum(self.marker_split) - 1) < 1e-9,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"PhantomConfig: invalid {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}"
                             f"; see PhantomConfig.help() for the meaning and ranges")

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> its trailing comment (the CLI's ``--help`` text)."""
        src = inspect.getsource(cls)
        return dict(re.findall(r"^\s+(\w+): [^=\n]+=[^#\n]+#\s*(.+)$", src, flags=re.M))

    @classmethod
    def from_overrides(cls, config: "PhantomConfig | None" = None, **overrides: Any) -> "PhantomConfig":
        """``config`` (or the defaults) with ``overrides``; unknown keys are a ValueError."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ValueError(f"unknown phantom parameter(s) {unknown}; valid: {', '.join(names)}")
        base = asdict(config) if config is not None else {}
        return cls(**{**base, **overrides})

    @property
    def has_marker(self) -> bool:
        """Whether any image can carry the burned-in marker (:mod:`pneumoloc.phantom.markers`)."""
        return any(getattr(self, k) > 0 for k in _MARKER_RATES)

    def fingerprint(self) -> str:
        """SHA-256 of everything that changes the generated files.

        Without a marker the marker fields change nothing and are left out, so a phantom
        without one keeps the fingerprint it had before the marker existed.
        """
        unused = _EXECUTION_ONLY + (() if self.has_marker else tuple(f.name for f in fields(self)
                                                                     if f.name.startswith("marker_")))
        d = {k: v for k, v in asdict(self).items() if k not in unused}
        d["generator_version"] = GENERATOR_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _check_type(name: str, value: Any, default: Any) -> None:
    """TypeError unless ``value`` has the type of the field's ``default`` (ints pass as floats, bools never as ints)."""
    ok = (isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool))
          if isinstance(default, float) else
          isinstance(value, type(default)) and not (isinstance(value, bool) and type(default) is int))
    if isinstance(default, tuple):
        ok = ok and len(value) == len(default) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool)
            and (isinstance(v, int) or isinstance(d, float)) for v, d in zip(value, default))
    if not ok:
        raise TypeError(f"PhantomConfig.{name} must be {type(default).__name__} like {default!r}, "
                        f"got {value!r}")
