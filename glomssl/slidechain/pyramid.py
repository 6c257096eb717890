"""Writing pyramidal TIFF slides from real image tiles, tile by tile (bounded memory).

The demo, the tests and the throughput benchmark need whole-slide images of real tissue. Public
kidney whole-slide files are hundreds of megabytes; glomssl instead lays real tiles (the shipped CC BY
4.0 aidpath tiles) on a glass background and writes a tiled, JPEG-compressed, pyramidal TIFF with
``tifffile``, one 256-px tile at a time, with the resolution in its tags, so tiffslide reports its
microns per pixel like a scanner's file. A slide of 40,000 x 30,000 pixels never exists in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

#: (x, y, w, h) in level-0 pixels -> (h, w, 3) uint8 RGB
Region = Callable[[int, int, int, int], np.ndarray]

GLASS = (243, 241, 245)


def tiled_source(
    tiles: list[np.ndarray], width: int, height: int, margin: int, seed: int = 0
) -> Region:
    """A slide laid out as a grid of ``tiles`` (all the same size, RGB) inside a glass ``margin``.

    Grid cells pick tiles by a seeded permutation, repeated as needed, so a slide of any size is made
    from a few real tiles.
    """
    th, tw = tiles[0].shape[:2]
    cols = max(1, (width - 2 * margin) // tw)
    rows = max(1, (height - 2 * margin) // th)
    rng = np.random.default_rng(seed)
    order = np.concatenate(
        [rng.permutation(len(tiles)) for _ in range(rows * cols // len(tiles) + 1)]
    )
    glass = np.asarray(GLASS, np.uint8)

    def region(x: int, y: int, w: int, h: int) -> np.ndarray:
        out = np.empty((h, w, 3), np.uint8)
        out[:] = glass
        c0, c1 = max(0, (x - margin) // tw), min(cols - 1, (x + w - 1 - margin) // tw)
        r0, r1 = max(0, (y - margin) // th), min(rows - 1, (y + h - 1 - margin) // th)
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                gx, gy = margin + c * tw, margin + r * th
                ax0, ay0 = max(x, gx), max(y, gy)
                ax1, ay1 = min(x + w, gx + tw), min(y + h, gy + th)
                if ax1 <= ax0 or ay1 <= ay0:
                    continue
                t = tiles[int(order[r * cols + c])]
                out[ay0 - y : ay1 - y, ax0 - x : ax1 - x] = t[
                    ay0 - gy : ay1 - gy, ax0 - gx : ax1 - gx
                ]
        return out

    return region


def write_pyramid(
    path: str | os.PathLike[str],
    region: Region,
    width: int,
    height: int,
    mpp: float | None,
    tile: int = 256,
    min_side: int = 1024,
    quality: int = 90,
) -> Path:
    """Write a tiled JPEG pyramidal TIFF (levels halve until the longer side is < ``min_side``)."""
    import cv2
    import tifffile

    downs = [1]
    while max(width, height) // (downs[-1] * 2) >= min_side:
        downs.append(downs[-1] * 2)

    def tiles_of(down: int) -> Iterator[np.ndarray]:
        w, h = -(-width // down), -(-height // down)
        for ty in range(0, h, tile):
            for tx in range(0, w, tile):
                src = region(tx * down, ty * down, tile * down, tile * down)
                if down > 1:
                    src = cv2.resize(src, (tile, tile), interpolation=cv2.INTER_AREA)
                yield np.ascontiguousarray(src)

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    opts: dict[str, object] = {
        "tile": (tile, tile),
        "photometric": "rgb",
        "compression": "jpeg",
        "compressionargs": {"level": quality},
        "dtype": np.uint8,
    }
    try:
        with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
            for i, down in enumerate(downs):
                extra: dict[str, object] = {}
                if mpp:
                    extra = {
                        "resolution": (1e4 / (mpp * down),) * 2,
                        "resolutionunit": "CENTIMETER",
                    }
                if i == 0:
                    extra["subifds"] = len(downs) - 1
                else:
                    extra["subfiletype"] = 1
                shape = (-(-height // down), -(-width // down), 3)
                tw.write(tiles_of(down), shape=shape, **opts, **extra)  # type: ignore[arg-type]
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def load_tiles(folder: str | os.PathLike[str], limit: int | None = None) -> list[np.ndarray]:
    """The RGB tiles (JPEG/PNG) of a folder, sorted by name, all cropped to the smallest size."""
    from glomssl.data.images import load_rgb

    files = sorted(
        f for f in Path(folder).iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png")
    )[:limit]
    arrs = [np.asarray(load_rgb(f), dtype=np.uint8) for f in files]
    h = min(a.shape[0] for a in arrs)
    w = min(a.shape[1] for a in arrs)
    return [np.ascontiguousarray(a[:h, :w]) for a in arrs]
