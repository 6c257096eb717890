"""Whole-slide images (tiffslide): tissue masks and random or grid patch sampling.

Pretraining and GAN training can read patches straight from slides (.svs, .tif, .ndpi ...) without
tiling them to disk first. A low-resolution tissue mask (Otsu on saturation, as is usual for brightfield
slides) keeps patches on tissue and skips the glass background.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.errors import GlomsslError

SLIDE_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".scn", ".bif", ".mrxs", ".svslide")
#: plain images that ``open_any`` also reads as one-level "slides" (large field images)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def is_slide_path(path: str | os.PathLike[str]) -> bool:
    """True for files with a whole-slide extension (pyramidal TIFF and vendor formats)."""
    return Path(path).suffix.lower() in SLIDE_EXTENSIONS


def open_slide(path: str | os.PathLike[str]) -> Any:
    """Open a slide with tiffslide; a one-line error if it is missing or unreadable."""
    import logging

    import tiffslide

    p = Path(path)
    if not p.is_file():
        raise GlomsslError(f"slide {p} does not exist; check the path")
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL)  # its complaints about a damaged file would precede our error
    try:
        slide = tiffslide.TiffSlide(str(p))
        cut = _tiles_past_end(slide, p.stat().st_size)  # tifffile parses its pages here
    except Exception as exc:  # tiffslide raises several types for bad files
        raise GlomsslError(
            f"{p} is not a readable whole-slide image ({exc}); check the file"
        ) from exc
    finally:
        log.setLevel(level)
    if cut:
        slide.close()
        raise GlomsslError(
            f"slide {p} is cut short: {cut[0]} of its {cut[1]} image tiles lie past the end of the "
            "file (an interrupted copy or download?); copy the slide again"
        )
    return slide


def _tiles_past_end(slide: Any, size: int) -> tuple[int, int] | None:
    """(tiles whose bytes lie past ``size``, all tiles) of a tiffslide slide's pages; None when
    every tile is within the file (or the reader does not expose its tiles)."""
    tf = getattr(slide, "ts_tifffile", None)
    bad = total = 0
    for series in getattr(tf, "series", ()):
        for lvl in getattr(series, "levels", ()):
            for page in getattr(lvl, "pages", ()):
                offsets = np.asarray(getattr(page, "dataoffsets", ()), dtype=np.int64)
                counts = np.asarray(getattr(page, "databytecounts", ()), dtype=np.int64)
                if offsets.shape != counts.shape:
                    continue
                total += int(offsets.size)
                bad += int(np.count_nonzero(offsets + counts > size))
    return (bad, total) if bad else None


class ImageSlide:
    """A plain PNG/JPEG image behind the slide interface glomssl uses (one level, no mpp).

    The whole image is decoded once (plain images cannot be read in tiles); use a pyramidal TIFF for
    images too large for memory.
    """

    def __init__(self, path: str | os.PathLike[str], mpp: float | None = None) -> None:
        from glomssl.data.images import load_rgb

        self.path = Path(path)
        self._img = load_rgb(self.path)
        self.dimensions: tuple[int, int] = self._img.size
        self.level_count = 1
        self.level_dimensions = (self.dimensions,)
        self.level_downsamples = (1.0,)
        self.properties: dict[str, Any] = {}
        self.glomssl_mpp = mpp
        self.glomssl_path = str(self.path)  # errors about the slide name it

    def get_best_level_for_downsample(self, downsample: float) -> int:
        return 0

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Any:
        """RGBA PIL image of ``size`` at ``location`` (level 0 pixels); outside is transparent."""
        from PIL import Image

        x, y = location
        w, h = size
        out = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        box = (max(0, x), max(0, y), min(self.dimensions[0], x + w), min(self.dimensions[1], y + h))
        if box[2] > box[0] and box[3] > box[1]:
            out.paste(self._img.crop(box).convert("RGBA"), (box[0] - x, box[1] - y))
        return out

    def get_thumbnail(self, size: tuple[int, int]) -> Any:
        im = self._img.copy()
        im.thumbnail(size)
        return im

    def close(self) -> None:
        self._img.close()


def open_any(path: str | os.PathLike[str], mpp: float | None = None) -> Any:
    """Open a whole-slide image (tiffslide) or a plain large PNG/JPEG as a one-level slide.

    ``mpp`` (microns per pixel at level 0) fills in a resolution the file does not record, or
    overrides it. Errors are one line naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise GlomsslError(f"slide {p} does not exist; check the path")
    if p.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageSlide(p, mpp)
    slide = open_slide(p)
    slide.glomssl_path = str(p)  # errors about the slide name it
    if mpp is not None:
        slide.glomssl_mpp = float(mpp)  # read by slide_mpp before the file's own value
    return slide


def slide_mpp(slide: Any) -> float | None:
    """Microns per pixel at level 0, when the slide records it (or ``open_any`` was given one)."""
    given = getattr(slide, "glomssl_mpp", None)
    if given is not None:
        return float(given)
    v = slide.properties.get("tiffslide.mpp-x")
    try:
        f = float(v) if v is not None else None
    except (TypeError, ValueError):
        return None
    return f if f is not None and f > 0 else None


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of a 1-D array of values in [0, 255]."""
    hist, edges = np.histogram(values, bins=256, range=(0, 256))
    hist = hist.astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 0.0
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = total - w0
    m0 = np.cumsum(hist * centers) / np.maximum(w0, 1)
    mall = (hist * centers).sum()
    m1 = (mall - np.cumsum(hist * centers)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centers[int(np.argmax(between))])


def tissue_mask(slide: Any, max_side: int = 1024) -> tuple[np.ndarray, float]:
    """Boolean tissue mask of a slide thumbnail and its downsample factor from level 0.

    Tissue is saturated (stained) and not too bright; glass is grey-white. Otsu on the HSV saturation
    channel separates the two; a minimum saturation floor keeps blank slides empty.
    """
    w0, h0 = slide.dimensions
    scale = max(w0, h0) / max_side
    thumb = slide.get_thumbnail((max(1, int(w0 / scale)), max(1, int(h0 / scale)))).convert("HSV")
    hsv = np.asarray(thumb)
    sat = hsv[..., 1].astype(np.float64)
    val = hsv[..., 2].astype(np.float64)
    thr = max(otsu_threshold(sat), 20.0)
    mask = (sat > thr) & (val > 30)
    down = w0 / mask.shape[1]
    return mask, float(down)


@dataclass
class PatchSpec:
    """Where a patch comes from: slide path, level-0 top-left corner, level and size."""

    slide: str
    x: int
    y: int
    level: int
    size: int


class SlidePatchSampler:
    """Random tissue patches from one or more slides, sampled on the fly.

    ``patch_size`` is the output size in pixels at the chosen ``level`` (0 = full resolution) or at
    the level nearest to ``mpp`` (microns per pixel) when given and the slide records its resolution.
    ``min_tissue`` is the fraction of the patch that must lie on the tissue mask.
    """

    def __init__(
        self,
        slides: list[str | os.PathLike[str]],
        patch_size: int = 224,
        level: int = 0,
        mpp: float | None = None,
        min_tissue: float = 0.5,
        max_tries: int = 50,
    ) -> None:
        if not slides:
            raise GlomsslError("no slides given; pass one or more whole-slide image files")
        if patch_size < 8:
            raise GlomsslError(f"patch size {patch_size} is too small; use at least 8 pixels")
        self.paths = [str(s) for s in slides]
        self.patch_size = patch_size
        self.min_tissue = min_tissue
        self.max_tries = max_tries
        self._slides: dict[str, Any] = {}
        self._meta: dict[str, tuple[np.ndarray, float, int, float]] = {}
        for p in self.paths:
            s = open_slide(p)
            lvl = level
            if mpp is not None:
                base = slide_mpp(s)
                if base is not None:
                    lvl = int(s.get_best_level_for_downsample(mpp / base))
            if lvl < 0 or lvl >= s.level_count:
                raise GlomsslError(f"slide {p} has levels 0..{s.level_count - 1}; got level {lvl}")
            mask, down = tissue_mask(s)
            if not mask.any():
                raise GlomsslError(f"slide {p} shows no tissue (blank or fluorescence?); remove it")
            self._meta[p] = (mask, down, lvl, float(s.level_downsamples[lvl]))
            s.close()

    def __getstate__(self) -> dict[str, Any]:  # open handles do not cross process boundaries
        state = dict(self.__dict__)
        state["_slides"] = {}
        return state

    def _slide(self, path: str) -> Any:
        if path not in self._slides:
            self._slides[path] = open_slide(path)
        return self._slides[path]

    def sample_spec(self, rng: np.random.Generator) -> PatchSpec:
        """Pick a random patch location on tissue (falls back to any location after max_tries)."""
        path = self.paths[int(rng.integers(len(self.paths)))]
        mask, down, lvl, lvl_down = self._meta[path]
        span = int(round(self.patch_size * lvl_down))  # patch extent in level-0 pixels
        w0 = int(mask.shape[1] * down)
        h0 = int(mask.shape[0] * down)
        ys, xs = np.nonzero(mask)
        best = None
        for _ in range(self.max_tries):
            i = int(rng.integers(len(xs)))
            cx = (xs[i] + rng.random()) * down
            cy = (ys[i] + rng.random()) * down
            x = int(np.clip(cx - span / 2, 0, max(0, w0 - span)))
            y = int(np.clip(cy - span / 2, 0, max(0, h0 - span)))
            m = mask[
                int(y / down) : max(int(y / down) + 1, int((y + span) / down)),
                int(x / down) : max(int(x / down) + 1, int((x + span) / down)),
            ]
            frac = float(m.mean()) if m.size else 0.0
            if best is None or frac > best[0]:
                best = (frac, x, y)
            if frac >= self.min_tissue:
                break
        assert best is not None
        return PatchSpec(path, best[1], best[2], lvl, self.patch_size)

    def read(self, spec: PatchSpec) -> Any:
        """Read a patch as an RGB PIL image."""
        s = self._slide(spec.slide)
        return s.read_region((spec.x, spec.y), spec.level, (spec.size, spec.size)).convert("RGB")

    def sample(self, rng: np.random.Generator) -> Any:
        """One random tissue patch as an RGB PIL image."""
        return self.read(self.sample_spec(rng))

    def grid(self, stride: int | None = None) -> list[PatchSpec]:
        """All patch positions on a regular grid whose tissue fraction reaches ``min_tissue``."""
        out: list[PatchSpec] = []
        for path in self.paths:
            mask, down, lvl, lvl_down = self._meta[path]
            span = int(round(self.patch_size * lvl_down))
            step = int(round((stride or self.patch_size) * lvl_down))
            w0 = int(mask.shape[1] * down)
            h0 = int(mask.shape[0] * down)
            for y in range(0, max(1, h0 - span + 1), step):
                for x in range(0, max(1, w0 - span + 1), step):
                    m = mask[
                        int(y / down) : int((y + span) / down) + 1,
                        int(x / down) : int((x + span) / down) + 1,
                    ]
                    if m.size and float(m.mean()) >= self.min_tissue:
                        out.append(PatchSpec(path, x, y, lvl, self.patch_size))
        return out
