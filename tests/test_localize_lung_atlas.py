"""The v7labs lung atlas, its placement and its box search (hand-made cases and the real zip)."""
import numpy as np
import pytest

from pneumoloc.localize import lung_atlas as LA


def test_atlas_member_puts_a_lung_crop_on_the_atlas_grid():
    """Reading and rejecting masks is pneumoloc.data.xrv_assets' job (tests/test_data_xrv_assets_lung_fields.py)."""
    m = np.zeros((60, 100), bool)  # already cropped to the lungs, x 0..100
    m[:, :40] = True
    m[:, 60:] = True
    got = LA._atlas_member(m)
    assert got.shape == (LA.ATLAS_SIZE, LA.ATLAS_SIZE)
    # the gap 40..60 is columns 25.6..38.4 of 64
    assert got[:, :25].min() == 1 and got[:, 27:38].max() == 0 and got[:, 39:].min() == 1


def test_place_atlas_stretches_onto_the_box():
    ones = np.ones((LA.ATLAS_SIZE, LA.ATLAS_SIZE), np.float32)
    placed = LA.place_atlas(ones, (10, 5, 20, 30), (50, 40))
    expected = np.zeros((50, 40))
    expected[5:35, 10:30] = 1
    assert np.abs(placed - expected)[expected == 1].max() < 1e-6  # inside exactly 1
    assert placed[expected == 0].max() <= 0.51  # half a pixel of bilinear edge at most
    assert (placed[:, :9] == 0).all() and (placed[36:] == 0).all()


def test_fit_atlas_recovers_a_known_box():
    yy, xx = np.mgrid[:LA.ATLAS_SIZE, :LA.ATLAS_SIZE] / LA.ATLAS_SIZE
    atlas = ((((yy - 0.5) / 0.5) ** 2 + ((xx - 0.25) / 0.22) ** 2 < 1)
             | (((yy - 0.5) / 0.5) ** 2 + ((xx - 0.75) / 0.22) ** 2 < 1)).astype(np.float32)
    truth = (12.0, 8.0, 40.0, 44.0)
    dark = np.where(LA.place_atlas(atlas, truth, (64, 64)) > 0.5, 1.0, -1.0)
    got = LA.fit_atlas(atlas, dark, (8.0, 4.0, 48.0, 40.0))
    assert np.abs(np.subtract(got, truth)).max() < 1.5


@pytest.fixture(scope="module")
def atlas():
    return LA.lung_atlas()


def test_real_atlas_is_a_two_lung_probability_map(atlas):
    a = LA.ATLAS_SIZE
    assert atlas.shape == (a, a) and 0 <= atlas.min() and atlas.max() <= 1
    assert not atlas.flags.writeable  # shared by the cache
    # lungs fill the lateral thirds, the mediastinum separates them
    left, middle, right = atlas[a // 4:3 * a // 4, a // 5], atlas[a // 4:3 * a // 4, a // 2], atlas[a // 4:3 * a // 4, 4 * a // 5]
    assert left.mean() > 0.8 and right.mean() > 0.8 and middle.mean() < 0.3
    assert LA.lung_atlas() is atlas  # computed once per process


def _few_masks() -> frozenset[str]:
    """Exclude all but 12 of the real zip's masks: a real atlas that builds in a fraction of a second."""
    from pneumoloc.data.xrv_assets import lung_mask_names

    return frozenset(n.rsplit("/", 1)[-1] for n in lung_mask_names()[12:])


def test_cached_atlas_equals_the_freshly_built_one(tmp_path, monkeypatch):
    exclude = _few_masks()
    fresh = LA.build_lung_atlas(exclude)
    first = LA.lung_atlas(exclude, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [LA.atlas_cache_file(exclude, tmp_path).name]  # no temp left
    LA.lung_atlas.cache_clear()  # a new process: only the disk cache remains
    monkeypatch.setattr(LA, "build_lung_atlas", lambda *a: pytest.fail("rebuilt although the cache was valid"))
    loaded = LA.lung_atlas(exclude, cache_dir=tmp_path)
    np.testing.assert_array_equal(loaded, fresh)  # stored bit for bit
    np.testing.assert_array_equal(first, fresh)
    assert loaded.dtype == np.float32 and not loaded.flags.writeable


def _flip_middle_byte(b: bytes) -> bytes:
    return b[:len(b) // 2] + bytes([b[len(b) // 2] ^ 0xFF]) + b[len(b) // 2 + 1:]


@pytest.mark.parametrize("damage", [lambda b: b[:len(b) // 2], lambda b: b"not an atlas", _flip_middle_byte],
                         ids=["truncated", "foreign", "flipped_byte"])
def test_a_corrupt_atlas_cache_file_is_rebuilt(tmp_path, damage):
    exclude = _few_masks()
    path = LA.atlas_cache_file(exclude, tmp_path)
    LA.lung_atlas(exclude, cache_dir=tmp_path)
    good = path.read_bytes()
    path.write_bytes(damage(good))
    assert LA._read_cached(path) is None
    LA.lung_atlas.cache_clear()
    np.testing.assert_array_equal(LA.lung_atlas(exclude, cache_dir=tmp_path), LA.build_lung_atlas(exclude))
    assert path.read_bytes() == good  # the damaged file was replaced by the rebuilt atlas


def test_the_atlas_cache_file_is_keyed_by_what_the_atlas_depends_on(tmp_path, monkeypatch):
    from importlib import metadata

    base = LA.atlas_cache_file(frozenset(), tmp_path)
    assert base == LA.atlas_cache_file(frozenset(), tmp_path) and base.parent == tmp_path
    assert LA.atlas_cache_file(frozenset({"a.png"}), tmp_path) != base
    assert LA.atlas_cache_file().parent == LA.ATLAS_CACHE_DIR
    monkeypatch.setattr(LA, "ATLAS_SIZE", LA.ATLAS_SIZE * 2)
    assert LA.atlas_cache_file(frozenset(), tmp_path) != base
    monkeypatch.undo()
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "0.0.0" if name == "torchxrayvision" else real(name))
    assert LA.atlas_cache_file(frozenset(), tmp_path) != base


def test_an_unwritable_atlas_cache_warns_and_still_returns_the_atlas(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the cache folder should be: mkdir fails
    exclude = _few_masks()
    with pytest.warns(UserWarning, match="lung atlas not cached"):
        got = LA.lung_atlas(exclude, cache_dir=blocker / "atlas")
    np.testing.assert_array_equal(got, LA.build_lung_atlas(exclude))
