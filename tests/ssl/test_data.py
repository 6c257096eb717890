from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glomssl.errors import GlomsslError
from glomssl.manifest import image_row, write_manifest
from glomssl.ssl.data import ImageViewsDataset, build_dataset, collate_views
from glomssl.ssl.transforms import AugmentSpec, TwoViews


def _corrupt(folder: Path) -> list[Path]:
    bad1 = folder / "truncated.png"
    good = (folder / "img_000.png").read_bytes()
    bad1.write_bytes(good[: len(good) // 3])
    bad2 = folder / "notanimage.jpg"
    bad2.write_bytes(b"this is text, not a JPEG")
    return [bad1, bad2]


def test_corrupt_images_are_skipped_and_counted(image_folder: Path) -> None:
    bad = _corrupt(image_folder)
    ds, scan = build_dataset([str(image_folder)], TwoViews(AugmentSpec(image_size=32)), 32)
    assert scan is not None
    assert len(ds) == 8
    assert sorted(Path(s["path"]).name for s in scan.skipped) == sorted(p.name for p in bad)
    assert all(s["reason"] for s in scan.skipped)


def test_decode_failure_after_scan_is_dropped_by_collate(image_folder: Path) -> None:
    paths = sorted(image_folder.glob("*.png"))
    ds = ImageViewsDataset(paths, TwoViews(AugmentSpec(image_size=32)))
    paths[1].write_bytes(b"broken after the scan")
    items = [ds[i] for i in range(4)]
    assert items[1] is None and ds.failures == 1
    batch = collate_views(items)
    assert batch is not None
    v0, v1 = batch
    assert v0.shape == v1.shape == (3, 3, 32, 32)
    assert collate_views([None, None]) is None
    assert collate_views([items[0], None]) is None  # one image: BatchNorm cannot train on it


def test_manifest_source_and_cache(tmp_path: Path, make_imgs) -> None:
    imgs = make_imgs(tmp_path / "m" / "images", n=4, size=80)
    rows = [image_row(p, tmp_path / "m") for p in imgs]
    write_manifest(tmp_path / "m" / "manifest.jsonl", rows)
    ds, _ = build_dataset([str(tmp_path / "m" / "manifest.jsonl")], lambda x: x, 32, cache=True)
    x = ds[0]
    # pre-shrunk to short side 2 x image_size (64) at decode time
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and float(x.max()) <= 1
    assert 0 in ds._cache  # type: ignore[attr-defined]
    assert torch.equal(ds[0], x)


def test_unreadable_everything_is_a_user_error(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"no")
    with pytest.raises(GlomsslError, match="could be read"):
        build_dataset([str(folder)], lambda x: x, 32)
    with pytest.raises(GlomsslError, match="neither a folder"):
        build_dataset([str(tmp_path / "missing")], lambda x: x, 32)


@pytest.mark.realdata
def test_slide_patches_from_a_real_svs(shared_data: Path) -> None:
    slide = shared_data / "wsi" / "cmu_small_region.svs"
    ds, scan = build_dataset(
        [str(slide)],
        TwoViews(AugmentSpec(image_size=32)),
        32,
        slide_patch_size=64,
        patches_per_epoch=5,
    )
    assert scan is None and len(ds) == 5
    v0, v1 = ds[3]
    assert v0.shape == (3, 32, 32)
    a = ds.sampler.sample_spec(__import__("numpy").random.default_rng([0, 0, 3]))  # type: ignore[attr-defined]
    assert json.dumps(a.__dict__)  # a reproducible, serialisable location
