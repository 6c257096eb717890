"""Whole-slide images (tiffslide): tissue masks and random or grid patch sampling.

Pretraining and GAN training can read patches straight from slides (.svs, .tif, .ndpi ...) without
tiling them to disk first. A low-resolution tissue mask (Otsu on saturation, as is usual for brightfield
slides) keeps patches on tissue and skips the glass background.
"""

from __future__ import annotations

import math
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


#: slide formats that are not TIFF-based, so tiffslide (glomssl's reader) cannot open them
UNSUPPORTED_FORMATS = {
    ".mrxs": "3DHistech MIRAX",
    ".svslide": "Sakura",
    ".vms": "Hamamatsu VMS",
    ".vmu": "Hamamatsu VMU",
    ".czi": "Zeiss CZI",
    ".vsi": "Olympus VSI",
    ".isyntax": "Philips iSyntax",
    ".dcm": "DICOM",
}
#: OME PhysicalSizeXUnit -> microns
OME_UNITS = {"µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4,
             "m": 1e6, "pm": 1e-6, "Å": 1e-4, "in": 25400.0, "inch": 25400.0}  # fmt: skip
THUMB_BAND_BYTES = 32 << 20  # a thumbnail is read in bands of at most this many decoded bytes


def _tiff_header_problem(p: Path) -> str | None:
    """Why a file with no readable image directory holds none: cut short, or no TIFF at all."""
    import struct

    size = p.stat().st_size
    if size == 0:
        return f"{p} is not a readable whole-slide image: it is empty (0 bytes; an interrupted copy?); copy the slide again"
    with open(p, "rb") as fh:
        head = fh.read(16)
    if head[:2] not in (b"II", b"MM") or len(head) < 8:
        return None
    end = "<" if head[:2] == b"II" else ">"
    version = struct.unpack(end + "H", head[2:4])[0]
    if version == 43 and len(head) >= 16:
        first = struct.unpack(end + "Q", head[8:16])[0]
    elif version == 42:
        first = struct.unpack(end + "I", head[4:8])[0]
    else:
        return None
    if first >= size:
        return (
            f"{p} is not a readable whole-slide image: it is cut short, its image directory lies "
            f"past the end of the file ({size} bytes; an interrupted copy or download?); copy the "
            "slide again"
        )
    return None


def _open_tiffslide(p: Path) -> Any:
    """tiffslide's slide with its metadata parsed (errors surface here, not on the first read).

    tifffile takes any classic TIFF named ``.ndpi`` for a Hamamatsu file with 64-bit offsets; a plain
    TIFF renamed ``.ndpi`` then shows no images, so it is read again as a plain TIFF. tiffslide's
    warnings that it parses a vendor's metadata only in part (two lines of noise on stderr for
    every NDPI or BIF slide) are silenced.
    """
    import warnings

    import tiffslide

    def parse(**options: Any) -> Any:
        slide = tiffslide.TiffSlide(str(p), tifffile_options=options or None)
        try:
            if not len(slide.ts_tifffile.pages):
                raise ValueError("the file holds no image")
            with warnings.catch_warnings():  # "hamamatsu/ventana parsing partially implemented!"
                warnings.simplefilter("ignore", UserWarning)
                _ = slide.properties, slide.dimensions, slide.level_downsamples
        except BaseException:
            slide.close()
            raise
        return slide

    try:
        return parse()
    except Exception:
        if p.suffix.lower() != ".ndpi":
            raise
        try:
            return parse(is_ndpi=False)
        except Exception:
            pass
        raise


def open_slide(path: str | os.PathLike[str]) -> Any:
    """Open a slide with tiffslide; a one-line error if it is missing or unreadable.

    The slide comes back as a :class:`TiffSlideReader`: 8-bit RGB(A)/L reads of any sample type,
    thumbnails read in bands (bounded memory on slides without a pyramid), and the resolution of OME
    metadata.
    """
    import logging

    p = Path(path)
    if not p.is_file():
        raise GlomsslError(f"slide {p} does not exist; check the path")
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL)  # its complaints about a damaged file would precede our error
    try:
        slide = _open_tiffslide(p)
        cut = _tiles_past_end(slide, p.stat().st_size)  # tifffile parses its pages here
    except Exception as exc:  # tiffslide raises several types for bad files
        why = _tiff_header_problem(p)
        if why:
            raise GlomsslError(why) from exc
        fmt = UNSUPPORTED_FORMATS.get(p.suffix.lower())
        if fmt:
            raise GlomsslError(
                f"{p} is not a readable whole-slide image: {fmt} slides ({p.suffix}) are not "
                "TIFF-based, which glomssl needs; convert it to a pyramidal (OME-)TIFF first, e.g. "
                "with bfconvert or vips"
            ) from exc
        if isinstance(exc, NotImplementedError):  # tiffslide: series of more than 2-D images
            raise GlomsslError(
                f"{p} is not a readable whole-slide image: it holds more than one image plane (a "
                "z-stack, time series or fluorescence channels as planes); export one 2-D "
                "brightfield plane as a pyramidal TIFF"
            ) from exc
        what = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise GlomsslError(
            f"{p} is not a readable whole-slide image ({what}); check the file"
        ) from exc
    finally:
        log.setLevel(level)
    if cut:
        slide.close()
        raise GlomsslError(
            f"slide {p} is cut short: {cut[0]} of its {cut[1]} image tiles lie past the end of the "
            "file (an interrupted copy or download?); copy the slide again"
        )
    return TiffSlideReader(slide)


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


def _ome_mpp(tf: Any) -> float | None:
    """Microns per pixel of an OME-TIFF's first image (``PhysicalSizeX`` in its unit, um by
    default); None without OME metadata or a usable size."""
    import xml.etree.ElementTree as ET

    if not getattr(tf, "is_ome", False):
        return None
    try:
        root = ET.fromstring(tf.ome_metadata or "")
    except (ET.ParseError, TypeError, ValueError):
        return None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] != "Pixels":
            continue
        try:
            size = float(el.attrib["PhysicalSizeX"])
        except (KeyError, ValueError):
            return None
        unit = OME_UNITS.get(el.attrib.get("PhysicalSizeXUnit", "µm").strip())
        mpp = size * unit if unit is not None else None
        return mpp if mpp is not None and 0 < mpp < float("inf") else None
    return None


def _to_uint8(arr: np.ndarray, max_value: float | None) -> np.ndarray:
    """Samples of any type as uint8 (integers scaled from ``max_value`` or their type's maximum,
    floats from [0, 1])."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        top = float(max_value or np.iinfo(arr.dtype).max)
    else:
        top = 1.0
    out = np.clip(arr.astype(np.float32) * (255.0 / top) + 0.5, 0, 255)
    return out.astype(np.uint8)


class TiffSlideReader:
    """A tiffslide slide that always reads 8-bit images glomssl can use (other attributes pass
    through to tiffslide's ``TiffSlide``).

    - ``read_region``: RGB, RGBA or L images of 8 bits per sample, also for 16-bit or float slides
      (which tiffslide cannot turn into images) and for slides of 2 or more than 4 channels;
    - ``get_thumbnail``: read in bands of the pyramid level, so a slide without a pyramid (a level 0
      of tens of gigabytes) does not have to fit in memory;
    - ``glomssl_file_mpp``: the level-0 resolution the file records, also from OME metadata.
    """

    def __init__(self, slide: Any) -> None:
        self._ts = slide
        tf = slide.ts_tifffile
        series = tf.series[int(slide.properties.get("tiffslide.series-index") or 0)]
        self._dtype = np.dtype(series.dtype)
        page = series.pages[0] if len(series.pages) else None
        tag = page.tags.get("MaxSampleValue") if page is not None else None
        top = float(np.max(tag.value)) if tag is not None else 0.0
        integer = self._dtype.kind in "ui"
        # a MaxSampleValue below the type's maximum (12-bit data in 16-bit samples) scales the reads
        self._max_value = top if integer and 0 < top < np.iinfo(self._dtype).max else None
        self.glomssl_file_mpp = _ome_mpp(tf) or _positive(slide.properties.get("tiffslide.mpp-x"))

    def __getattr__(self, name: str) -> Any:
        if name == "_ts":  # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._ts, name)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Any:
        """The region as a PIL image of 8-bit samples (L, LA, RGB or RGBA)."""
        from PIL import Image

        arr = self._ts.read_region(location, level, size, as_array=True)
        arr = _to_uint8(np.asarray(arr), self._max_value)
        if arr.ndim == 2:
            arr = arr[..., None]
        c = arr.shape[2]
        if c == 1:
            return Image.fromarray(np.ascontiguousarray(arr[..., 0]), "L")
        if c == 2:
            return Image.fromarray(np.ascontiguousarray(arr), "LA")
        if c == 4:
            return Image.fromarray(np.ascontiguousarray(arr), "RGBA")
        return Image.fromarray(np.ascontiguousarray(arr[..., :3]), "RGB")

    def get_thumbnail(self, size: tuple[int, int]) -> Any:
        """A thumbnail within ``size`` (aspect kept) from the best pyramid level, read in bands."""
        import cv2
        from PIL import Image

        w0, h0 = self.dimensions
        level = int(self.get_best_level_for_downsample(max(w0 / size[0], h0 / size[1])))
        lw, lh = (int(v) for v in self.level_dimensions[level])
        f = min(size[0] / lw, size[1] / lh, 1.0)
        tw, th = max(1, round(lw * f)), max(1, round(lh * f))
        per_row = max(1, lw * 4 * max(1, self._dtype.itemsize))
        tile_h = self.properties.get(f"tiffslide.level[{level}].tile-height") or 1
        unit = max(1, int(tile_h))  # whole rows of tiles: each tile is decoded once
        band = max(unit, THUMB_BAND_BYTES // per_row // unit * unit)
        parts = []
        mode = "RGB"
        for y0 in range(0, lh, band):
            y1 = min(lh, y0 + band)
            t0, t1 = round(y0 * th / lh), round(y1 * th / lh)
            if t1 <= t0:
                continue
            y = math.ceil(y0 * float(self.level_downsamples[level]))  # level row y0
            img = self.read_region((0, y), level, (lw, y1 - y0))
            mode = img.mode
            a = np.asarray(img)
            parts.append(cv2.resize(a, (tw, t1 - t0), interpolation=cv2.INTER_AREA))
        out = np.concatenate(parts, axis=0)
        return Image.fromarray(out, mode)

    def close(self) -> None:
        self._ts.close()


def _positive(v: Any) -> float | None:
    try:
        f = float(v) if v is not None else None
    except (TypeError, ValueError):
        return None
    return f if f is not None and 0 < f < float("inf") else None


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
    """Microns per pixel at level 0: the one ``open_any`` was given, else the one the file records
    (TIFF resolution tags, Aperio/vendor metadata, or OME ``PhysicalSizeX``)."""
    given = getattr(slide, "glomssl_mpp", None)
    if given is not None:
        return float(given)
    recorded = getattr(slide, "glomssl_file_mpp", None)
    if recorded is not None:
        return float(recorded)
    return _positive(slide.properties.get("tiffslide.mpp-x"))


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
    channel separates the two; a minimum saturation floor keeps blank slides empty. A greyscale
    brightfield slide (no saturation anywhere, bright glass) is split by how much darker than the
    glass (the brightest percent) a pixel is, with the same floor.
    """
    w0, h0 = slide.dimensions
    scale = max(w0, h0) / max_side
    thumb = slide.get_thumbnail((max(1, int(w0 / scale)), max(1, int(h0 / scale))))
    hsv = np.asarray(thumb.convert("RGB").convert("HSV"))
    sat = hsv[..., 1].astype(np.float64)
    val = hsv[..., 2].astype(np.float64)
    thr = max(otsu_threshold(sat), 20.0)
    mask = (sat > thr) & (val > 30)
    if not mask.any() and np.percentile(sat, 99) < 20 and np.median(val) > 100:
        dark = np.clip(np.percentile(val, 99) - val, 0, 255)  # greyscale: darker than the glass
        mask = (dark > max(otsu_threshold(dark), 20.0)) & (val > 30)
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
