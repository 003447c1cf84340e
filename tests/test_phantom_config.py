"""Phantom parameters: types normalised, bad values named, fingerprint covers what changes files."""
from __future__ import annotations

import dataclasses

import pytest

from pneumoloc.phantom import config as phantom_config
from pneumoloc.phantom.config import PhantomConfig


def test_equal_values_of_other_python_types_give_the_same_config():
    a = PhantomConfig(conspicuity=1, images_per_patient=[2, 3], lung_width=(0.7, 0.8))
    assert a.conspicuity == 1.0 and isinstance(a.conspicuity, float)
    assert a.images_per_patient == (2, 3) and isinstance(a.images_per_patient, tuple)
    assert a == PhantomConfig(conspicuity=1.0, images_per_patient=(2, 3), lung_width=(0.7, 0.8))


@pytest.mark.parametrize("field, value, error", [
    ("n_images", True, TypeError), ("size", 64.0, TypeError), ("lung_width", (0.7,), TypeError),
    ("size", 16, ValueError), ("jitter", 0.2, ValueError), ("images_per_patient", (3, 2), ValueError),
])
def test_bad_values_name_the_field(field, value, error):
    with pytest.raises(error, match=field):
        PhantomConfig(**{field: value})


def test_every_field_has_help_text_and_unknown_overrides_list_the_valid_ones():
    help_text = PhantomConfig.help()
    assert list(help_text) == [f.name for f in dataclasses.fields(PhantomConfig)]
    assert all(len(text) > 10 for text in help_text.values())
    assert PhantomConfig.from_overrides(PhantomConfig(seed=4), size=64) == PhantomConfig(seed=4, size=64)
    with pytest.raises(ValueError, match="unknown phantom parameter.*'sizes'.*valid: n_images"):
        PhantomConfig.from_overrides(sizes=64)


def test_fingerprint_covers_outputs_and_generator_version_not_workers(monkeypatch):
    before = PhantomConfig().fingerprint()
    assert before == PhantomConfig(workers=7).fingerprint()
    assert before != PhantomConfig(noise=0.03).fingerprint()
    monkeypatch.setattr(phantom_config, "GENERATOR_VERSION", phantom_config.GENERATOR_VERSION + 1)
    assert PhantomConfig().fingerprint() != before  # a drawing change regenerates existing phantoms
