"""Whole-slide reading: tissue masks and patch sampling on a real tiled TIFF and a real SVS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from glomssl.errors import GlomsslError
from glomssl.wsi import SlidePatchSampler, is_slide_path, open_slide, otsu_threshold, tissue_mask


@pytest.fixture()
def slide(tmp_path: Path) -> Path:
    """A 1024x1024 tiled TIFF: white glass with one purple tissue rectangle."""
    tifffile = pytest.importorskip("tifffile")
    img = np.full((1024, 1024, 3), 242, np.uint8)
    img[300:700, 200:800] = (180, 60, 150)
    p = tmp_path / "slide.tif"
    tifffile.imwrite(p, img, tile=(256, 256), photometric="rgb")
    return p


def test_otsu_splits_two_modes() -> None:
    vals = np.concatenate([np.full(100, 10.0), np.full(100, 200.0)])
    assert 10 <= otsu_threshold(vals) < 200


def test_tissue_mask_finds_the_rectangle(slide: Path) -> None:
    mask, down = tissue_mask(open_slide(slide), max_side=256)
    assert down == pytest.approx(4.0)
    ys, xs = np.nonzero(mask)
    assert (ys.min() * down, ys.max() * down) == pytest.approx((300, 696), abs=8)
    assert (xs.min() * down, xs.max() * down) == pytest.approx((200, 796), abs=8)


def test_random_patches_stay_on_tissue(slide: Path) -> None:
    sampler = SlidePatchSampler([slide], patch_size=64, min_tissue=0.9)
    rng = np.random.default_rng(0)
    for _ in range(25):
        spec = sampler.sample_spec(rng)
        assert 296 <= spec.y and spec.y + 64 <= 704 and 196 <= spec.x and spec.x + 64 <= 804
    patch = np.asarray(sampler.sample(rng))
    assert patch.shape == (64, 64, 3) and abs(int(patch[..., 1].mean()) - 60) < 10


def test_grid_covers_tissue_only(slide: Path) -> None:
    specs = SlidePatchSampler([slide], patch_size=64, min_tissue=0.9).grid()
    assert 35 <= len(specs) <= 60
    assert all(280 <= s.y <= 700 and 180 <= s.x <= 800 for s in specs)


def test_bad_slides_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(GlomsslError, match="does not exist"):
        open_slide(tmp_path / "missing.svs")
    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"not a tiff")
    with pytest.raises(GlomsslError, match="not a readable whole-slide image"):
        open_slide(bad)
    with pytest.raises(GlomsslError, match="no slides"):
        SlidePatchSampler([])
    assert is_slide_path("a/b.SVS") and not is_slide_path("a/b.png")


def test_blank_slide_is_rejected(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    p = tmp_path / "blank.tif"
    tifffile.imwrite(p, np.full((512, 512, 3), 245, np.uint8), tile=(256, 256), photometric="rgb")
    with pytest.raises(GlomsslError, match="no tissue"):
        SlidePatchSampler([p])


@pytest.mark.realdata
def test_real_svs_patches(shared_data: Path) -> None:
    svs = shared_data / "wsi" / "cmu_small_region.svs"
    sampler = SlidePatchSampler([svs], patch_size=224, min_tissue=0.5)
    rng = np.random.default_rng(1)
    patches = [np.asarray(sampler.sample(rng)) for _ in range(4)]
    assert all(p.shape == (224, 224, 3) for p in patches)
    # tissue patches are stained: clearly less bright than the glass background (~240)
    assert np.mean([p.mean() for p in patches]) < 225
    assert len(sampler.grid()) > 10
