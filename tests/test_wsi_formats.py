"""Slides of other scanners and converters: OME-TIFF, 16-bit, greyscale, renamed, no pyramid, broken.

Every slide here is written by the test with tifffile (a few hundred KB at most). The chain runs with a
stand-in detector (blue discs are the "glomeruli"), so the level-0 positions it must report are known.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from glomssl.cli import cli
from glomssl.errors import GlomsslError
from glomssl.slidechain.chain import WsiConfig, run_wsi
from glomssl.slidechain.queue import RunQueue
from glomssl.tiling import working_level
from glomssl.wsi import open_any, open_slide, slide_mpp, tissue_mask

MPP = 0.5
SIZE = 1024
DISCS = [(300, 280, 70), (700, 420, 90), (420, 760, 80)]  # level-0 (cx, cy, r)
GLASS = (243, 241, 245)


def _image(discs: bool = True) -> np.ndarray:
    img = np.full((SIZE, SIZE, 3), GLASS, np.uint8)
    img[80:-80, 80:-80] = (205, 120, 170)  # pink tissue
    if discs:
        for cx, cy, r in DISCS:
            cv2.circle(img, (cx, cy), r, (40, 50, 200), -1)
    return img


def _write(
    path: Path,
    img: np.ndarray,
    *,
    mpp: float | None = MPP,
    unit: str = "CENTIMETER",
    ome: dict[str, Any] | None = None,
    compression: str = "zlib",
    photometric: str = "rgb",
    downs: tuple[int, ...] = (1, 2),
) -> Path:
    """A tiled pyramidal TIFF (reduced levels as SubIFDs); resolution in its tags or OME metadata."""
    per_unit = {"CENTIMETER": 1e4, "INCH": 25400.0}[unit]
    with tifffile.TiffWriter(path, ome=ome is not None) as tw:
        for i, d in enumerate(downs):
            lv = img if d == 1 else cv2.resize(img, (img.shape[1] // d, img.shape[0] // d))
            extra: dict[str, Any] = {}
            if mpp and ome is None:
                extra = {"resolution": (per_unit / (mpp * d),) * 2, "resolutionunit": unit}
            if i == 0:
                extra["subifds"] = len(downs) - 1
                if ome is not None:
                    extra["metadata"] = ome
            else:
                extra["subfiletype"] = 1
            tw.write(lv, tile=(256, 256), compression=compression, photometric=photometric, **extra)
    return path


def _ome(img: np.ndarray, path: Path, size: float, unit: str | None) -> Path:
    meta: dict[str, Any] = {"axes": "YXS", "PhysicalSizeX": size, "PhysicalSizeY": size}
    if unit:
        meta.update(PhysicalSizeXUnit=unit, PhysicalSizeYUnit=unit)
    return _write(path, img, ome=meta)


# each maker writes the disc slide at MPP in one format; the chain must find the discs where they are
FORMATS = {
    "ome_um": lambda p: _ome(_image(), p / "s.ome.tif", MPP, None),
    "ome_nm": lambda p: _ome(_image(), p / "s.ome.tif", MPP * 1000, "nm"),
    "rgb16": lambda p: _write(p / "s.tif", _image().astype(np.uint16) * 257),
    "tiff_named_ndpi": lambda p: _write(p / "s.ndpi", _image()),
}


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_chain_on_other_formats_finds_the_discs_in_level0(
    kind: str, tmp_path: Path, blue: str
) -> None:
    slide = FORMATS[kind](tmp_path)
    assert slide.stat().st_size < 400_000
    s = run_wsi(
        WsiConfig(slides=[str(slide)], out=str(tmp_path / "out"), detector=blue, quiet=True)
    )
    assert (s["done"], s["glomeruli"], s["skipped"]) == (1, 3, [])
    d = tmp_path / "out" / slide.stem
    summary = json.loads((d / "summary.json").read_text())
    assert summary["mpp"] == pytest.approx(MPP) and summary["width"] == SIZE
    rows = [ln.split(",") for ln in (d / "glomeruli.csv").read_text().splitlines()[1:]]
    for cx, cy, r in DISCS:
        x, y, rad = min(
            ((float(q[1]), float(q[2]), float(q[3])) for q in rows),
            key=lambda v: abs(v[0] - cx) + abs(v[1] - cy),
        )
        assert abs(x - cx) <= 6 and abs(y - cy) <= 6 and abs(rad - r) <= 6


def test_ome_resolution_units(tmp_path: Path) -> None:
    img = _image()
    assert slide_mpp(open_any(_ome(img, tmp_path / "a.ome.tif", 0.25, "µm"))) == pytest.approx(0.25)
    assert slide_mpp(open_any(_ome(img, tmp_path / "b.ome.tif", 250.0, "nm"))) == pytest.approx(
        0.25
    )
    assert slide_mpp(open_any(_ome(img, tmp_path / "c.ome.tif", 0.00025, "mm"))) == pytest.approx(
        0.25
    )


def test_sixteen_bit_slide_reads_as_eight_bit_rgb(tmp_path: Path) -> None:
    img = _image()
    s = open_slide(_write(tmp_path / "s16.tif", img.astype(np.uint16) * 257))
    region = s.read_region((250, 250), 0, (100, 100))
    assert region.mode == "RGB"
    assert np.abs(np.asarray(region, int) - img[250:350, 250:350].astype(int)).max() <= 1
    assert s.get_thumbnail((256, 256)).size == (256, 256)


def test_greyscale_slide_has_tissue(tmp_path: Path) -> None:
    grey = cv2.cvtColor(_image(discs=False), cv2.COLOR_RGB2GRAY)
    s = open_slide(_write(tmp_path / "g.tif", grey, photometric="minisblack"))
    mask, down = tissue_mask(s, max_side=256)
    ys, xs = np.nonzero(mask)
    assert mask.mean() > 0.5
    assert (xs.min() * down, xs.max() * down) == pytest.approx((80, SIZE - 80), abs=12)
    for i, level in enumerate((244, 200)):  # blank glass, bright or grey: no tissue
        blank = _write(
            tmp_path / f"b{i}.tif", np.full((512, 512), level, np.uint8), photometric="minisblack"
        )
        assert not tissue_mask(open_slide(blank))[0].any()


def test_thumbnail_of_a_slide_without_pyramid_is_read_in_bands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single-level slide must not be decoded whole to make its tissue mask (tens of GB)."""
    import tiffslide

    import glomssl.wsi as wsi

    p = _write(tmp_path / "flat.tif", _image(), downs=(1,))
    sizes: list[int] = []
    real = tiffslide.TiffSlide.read_region

    def spy(self: Any, location: Any, level: int, size: tuple[int, int], **kw: Any) -> Any:
        sizes.append(size[0] * size[1])
        return real(self, location, level, size, **kw)

    monkeypatch.setattr(tiffslide.TiffSlide, "read_region", spy)
    monkeypatch.setattr(wsi, "THUMB_BAND_BYTES", SIZE * 4 * 256, raising=False)  # a tile row
    mask, down = tissue_mask(open_slide(p), max_side=256)
    assert len(sizes) == 4 and max(sizes) <= SIZE * 256
    assert down == pytest.approx(4.0) and mask[100:150, 40:200].all() and not mask[:15].any()


def test_broken_and_foreign_files_are_one_line_naming_the_fix(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.tif", _image(), compression="jpeg").read_bytes()
    # a slide whose image directory (written after the pixels, as Aperio does) was cut off
    cut = tmp_path / "cut.svs"
    cut.write_bytes(good[:4] + (len(good) + 10).to_bytes(4, "little") + good[8 : len(good) // 2])
    with pytest.raises(
        GlomsslError,
        match=r"cut\.svs is not a readable whole-slide image: it is cut short.*copy the slide",
    ):
        open_any(cut)
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    with pytest.raises(
        GlomsslError, match=r"empty\.svs is not a readable whole-slide image: it is empty"
    ):
        open_any(empty)
    mirax = tmp_path / "case.mrxs"
    mirax.write_bytes(b"[GENERAL]\nSLIDE_VERSION = 01.02\n")
    with pytest.raises(GlomsslError, match=r"case\.mrxs.*MIRAX.*convert it to a pyramidal"):
        open_any(mirax)
    zstack = tmp_path / "z.ome.tif"
    tifffile.imwrite(zstack, np.full((2, 64, 64, 3), 200, np.uint8), metadata={"axes": "ZYXS"})
    with pytest.raises(
        GlomsslError, match=r"z\.ome\.tif is not a readable.*more than one image plane"
    ):
        open_any(zstack)


def test_a_default_72_dpi_resolution_points_to_slide_mpp(tmp_path: Path) -> None:
    img = _image()
    p = _write(tmp_path / "dpi.tif", img, mpp=25400 / 72, unit="INCH")
    s = open_any(p)
    assert slide_mpp(s) == pytest.approx(352.78, abs=0.01)
    with pytest.raises(GlomsslError, match=r"dpi\.tif.*--slide-mpp"):
        working_level(s, mpp=2.0)
    assert working_level(open_any(p, mpp=0.5), mpp=2.0).scale == pytest.approx(4.0)


def test_a_run_where_every_slide_failed_takes_the_fix(tmp_path: Path, blue: str) -> None:
    """No resolution: every slide fails; rerunning into the same --out with --level (or
    --slide-mpp) must run, not be refused as another run's folder."""
    slide = _write(tmp_path / "nores.tif", _image(), mpp=None)
    out = tmp_path / "out"
    runner = CliRunner()
    base = ["wsi", str(slide), "--out", str(out), "--detector", blue, "--quiet"]
    r = runner.invoke(cli, base)
    assert r.exit_code == 2 and "--slide-mpp" in r.output, r.output
    r = runner.invoke(cli, [*base, "--level", "0"])
    assert r.exit_code == 0, r.output
    done = json.loads((out / "run_summary.json").read_text())
    assert done["done"] == 1 and done["glomeruli"] == 3
    # with a slide done, other options are refused again
    r = runner.invoke(cli, [*base, "--level", "1"])
    assert r.exit_code == 2 and "another run" in r.output


def test_queue_keeps_options_of_a_run_with_work_to_protect(tmp_path: Path) -> None:
    q = RunQueue(tmp_path / "q.sqlite")
    q.check_fingerprint({"working": 2.0}, "out")
    q.add_slides([("a.tif", "a"), ("b.tif", "b")])
    a = q.claim()
    assert a is not None
    q.save_tile(a, 0, [[1, 2, 3, 4, 0.9, 0]])
    q.release(a)  # interrupted with a finished tile: resumable work
    with pytest.raises(GlomsslError, match="another run"):
        q.check_fingerprint({"working": 4.0}, "out")
    for _ in range(2):
        job = q.claim()
        assert job is not None
        q.skip(job, "no resolution")
    q.check_fingerprint({"working": 4.0}, "out")  # nothing succeeded: new options taken
    assert q.done_tiles(a) == {}  # stale tiles of the old options dropped
    q.check_fingerprint({"working": 4.0}, "out")
    q.close()


def test_vendor_parsing_warnings_do_not_reach_the_user(tmp_path: Path) -> None:
    """tiffslide warns that it parses Hamamatsu metadata only in part: two lines of stderr noise."""
    import warnings

    p = tmp_path / "scan.tif"
    ndpi_tags = [(65420, 4, 1, 1, True), (271, 2, 0, "Hamamatsu", True)]
    tifffile.imwrite(p, _image(), tile=(256, 256), extratags=ndpi_tags)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        vendor = open_any(p).properties["tiffslide.vendor"]
    assert vendor == "hamamatsu"
    assert [str(w.message) for w in seen if issubclass(w.category, UserWarning)] == []
