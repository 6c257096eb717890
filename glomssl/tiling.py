"""Tiling a slide at a working resolution, and stitching tile outputs back without seams.

Every slide command (``segment`` on a slide, ``detect``, ``wsi``) works the same way:

1. :func:`working_level` picks the pyramid level for a requested resolution (``mpp``, microns per
   pixel) or an explicit level, plus the extra resize factor when no level matches exactly;
2. :func:`tile_grid` lays overlapping tiles over the slide at that resolution and keeps those that touch
   tissue (Otsu on a thumbnail's saturation, as :func:`glomssl.wsi.tissue_mask`); each tile also knows
   its *core*, the part it owns: cores partition the slide exactly, so tiles overlap for context but
   every pixel is decided by one tile (centre-crop stitching);
3. :func:`read_tile` reads one tile as an RGB array at the working resolution (white beyond the edge);
4. :class:`CoreStitcher` writes each tile's core into a uint8 canvas (optionally a file-backed
   ``numpy.memmap``, so a crash keeps finished tiles and memory stays bounded);
5. :func:`to_level0` / :func:`from_level0` convert coordinates between the working resolution and the
   slide's level 0, where every output (GeoJSON, ImageScope XML, tables) lives.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.errors import GlomsslError


@dataclass(frozen=True)
class WorkingLevel:
    """Read at pyramid ``level`` and shrink by ``resize`` (>= 1); ``scale`` = level-0 px per working px."""

    level: int
    level_downsample: float
    resize: float
    mpp: float | None  # microns per working pixel, when the slide's resolution is known
    width: int  # slide size at the working resolution
    height: int

    @property
    def scale(self) -> float:
        return self.level_downsample * self.resize


def working_level(slide: Any, mpp: float | None = None, level: int | None = None) -> WorkingLevel:
    """The level and resize that give ``mpp`` microns per pixel (or pyramid ``level`` as is).

    Needs the slide's own resolution for ``mpp``; a slide without one is a one-line error asking for
    the slide's mpp (``--slide-mpp``) or a ``--level``.
    """
    from glomssl.wsi import slide_mpp

    base = slide_mpp(slide)
    w0, h0 = slide.dimensions
    if mpp is not None:
        if not (math.isfinite(mpp) and mpp > 0):
            raise GlomsslError(f"--mpp {mpp} must be a positive number of microns per pixel")
        if base is None:
            name = getattr(slide, "glomssl_path", None)
            raise GlomsslError(
                f"{f'slide {name}' if name else 'the slide'} does not record its resolution "
                "(microns per pixel); pass the slide's own mpp with --slide-mpp, or choose a "
                "pyramid --level instead of --mpp"
            )
        want = mpp / base
        if want < 1 - 1e-6:
            name = getattr(slide, "glomssl_path", None)
            raise GlomsslError(
                f"{f'slide {name}' if name else 'the slide'}: the working {mpp:g} um/px is finer "
                f"than the slide's level 0 ({base:g} um/px); if that resolution is a program's "
                "default (72 or 300 dpi), pass the slide's own with --slide-mpp, else pass "
                f"--mpp {base:g} or more"
            )
        lvl = int(slide.get_best_level_for_downsample(want))
        lvl_down = float(slide.level_downsamples[lvl])
        resize = max(1.0, want / lvl_down)
    else:
        lvl = 0 if level is None else int(level)
        if not 0 <= lvl < slide.level_count:
            raise GlomsslError(
                f"--level {lvl}: the slide has levels 0..{slide.level_count - 1}; choose one of them"
            )
        lvl_down = float(slide.level_downsamples[lvl])
        resize = 1.0
    scale = lvl_down * resize
    return WorkingLevel(
        level=lvl,
        level_downsample=lvl_down,
        resize=resize,
        mpp=base * scale if base is not None else None,
        width=max(1, int(round(w0 / scale))),
        height=max(1, int(round(h0 / scale))),
    )


@dataclass(frozen=True)
class Tile:
    """A tile in working-resolution pixels: its box (x, y, size) and its core (the pixels it owns)."""

    index: int
    x: int
    y: int
    size: int
    core: tuple[int, int, int, int]  # x0, y0, x1, y1 in working pixels, inside the tile's box


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # the last tile ends at the edge
    return sorted(set(starts))


def _cores(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """Split [0, length) among tiles at ``starts``: each owns up to the midpoint of its overlaps."""
    out = []
    for i, s in enumerate(starts):
        lo = 0 if i == 0 else (s + starts[i - 1] + tile) // 2
        hi = length if i == len(starts) - 1 else (starts[i + 1] + s + tile) // 2
        out.append((lo, min(hi, length)))
    return out


def tile_grid(
    slide: Any,
    work: WorkingLevel,
    tile: int = 1024,
    overlap: int = 128,
    min_tissue: float = 0.0,
    tissue: np.ndarray | None = None,
    tissue_down: float | None = None,
) -> list[Tile]:
    """Overlapping tiles over the slide at ``work``'s resolution, keeping those on tissue.

    ``min_tissue`` is the least share of a tile's core that must be tissue (0: any tissue pixel at
    all); ``tissue``/``tissue_down`` pass a precomputed mask (and its level-0 downsample), otherwise it
    is computed. Tiles are numbered in row-major order over the full grid, so a tile's index is the same
    whatever the tissue filter kept (resumable runs rely on that).
    """
    from glomssl.wsi import tissue_mask

    if tile < 16 or overlap < 0 or overlap >= tile // 2:
        raise GlomsslError(
            f"--tile {tile} --overlap {overlap}: the tile must be >= 16 px and the overlap less "
            "than half a tile"
        )
    if tissue is None or tissue_down is None:
        tissue, tissue_down = tissue_mask(slide)
    stride = tile - overlap
    xs, ys = _starts(work.width, tile, stride), _starts(work.height, tile, stride)
    cx, cy = _cores(xs, tile, work.width), _cores(ys, tile, work.height)
    f = work.scale / tissue_down  # tissue-mask pixels per working pixel
    out: list[Tile] = []
    index = 0
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            (x0, x1), (y0, y1) = cx[i], cy[j]
            m = tissue[
                int(y0 * f) : max(int(y0 * f) + 1, int(math.ceil(y1 * f))),
                int(x0 * f) : max(int(x0 * f) + 1, int(math.ceil(x1 * f))),
            ]
            frac = float(m.mean()) if m.size else 0.0
            if frac > min_tissue or (min_tissue == 0 and m.any()):
                out.append(Tile(index, x, y, tile, (x0 - x, y0 - y, x1 - x, y1 - y)))
            index += 1
    return out


def read_tile(slide: Any, work: WorkingLevel, t: Tile) -> np.ndarray:
    """Tile ``t`` as (size, size, 3) uint8 RGB at the working resolution (white beyond the slide).

    Only the part of the tile that lies on the slide is read from the pyramid level, so a tile much
    larger than a small slide (a coarse ``--mpp``) costs the slide's pixels, not the tile's.
    """
    from PIL import Image

    lds = work.level_downsample
    lw, lh = (int(v) for v in slide.level_dimensions[work.level])
    span = int(math.ceil(t.size * work.resize))  # the whole tile, in pixels of the pyramid level
    x0 = int(round(t.x * work.scale))  # the tile's origin, level-0 pixels
    y0 = int(round(t.y * work.scale))
    vw = min(span, lw - int(x0 // lds))  # the part on the slide, pixels of the pyramid level
    vh = min(span, lh - int(y0 // lds))
    out = Image.new("RGB", (t.size, t.size), (255, 255, 255))
    if vw > 0 and vh > 0:
        region = slide.read_region((x0, y0), work.level, (vw, vh))
        white = Image.new("RGBA", region.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(white, region.convert("RGBA")).convert("RGB")
        if span != t.size:
            f = t.size / span
            size = (max(1, min(t.size, round(vw * f))), max(1, min(t.size, round(vh * f))))
            rgb = rgb.resize(size, Image.Resampling.BILINEAR)
        out.paste(rgb, (0, 0))
    return np.asarray(out, dtype=np.uint8)


def to_level0(xy: np.ndarray, work: WorkingLevel) -> np.ndarray:
    """Working-resolution (x, y) coordinates -> level-0 pixels (float)."""
    return np.asarray(xy, dtype=np.float64) * work.scale


def from_level0(xy: np.ndarray, work: WorkingLevel) -> np.ndarray:
    """Level-0 (x, y) coordinates -> working-resolution pixels (float)."""
    return np.asarray(xy, dtype=np.float64) / work.scale


class CoreStitcher:
    """A (channels, height, width) uint8 canvas filled by the cores of tiles.

    With ``path`` the canvas is a ``numpy.memmap`` file (created once, reopened on resume), so a slide
    far larger than memory can be stitched and a crash loses only the tile in progress.
    """

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        path: str | os.PathLike[str] | None = None,
        fill: int = 0,
    ) -> None:
        shape = (channels, height, width)
        self.path = Path(path) if path is not None else None
        if self.path is None:
            self.canvas: np.ndarray = np.full(shape, fill, np.uint8)
        elif self.path.is_file() and self.path.stat().st_size == int(np.prod(shape)):
            self.canvas = np.memmap(self.path, dtype=np.uint8, mode="r+", shape=shape)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.canvas = np.memmap(self.path, dtype=np.uint8, mode="w+", shape=shape)
            if fill:
                self.canvas[:] = fill

    def add(self, t: Tile, values: np.ndarray) -> None:
        """Write the core of a tile's output ``values`` (channels, size, size) uint8 into the canvas."""
        x0, y0, x1, y1 = t.core
        c, h, w = self.canvas.shape
        gx0, gy0 = t.x + x0, t.y + y0
        gx1, gy1 = min(t.x + x1, w), min(t.y + y1, h)
        self.canvas[:, gy0:gy1, gx0:gx1] = values[:, y0 : y0 + (gy1 - gy0), x0 : x0 + (gx1 - gx0)]

    def flush(self) -> None:
        if isinstance(self.canvas, np.memmap):
            self.canvas.flush()
