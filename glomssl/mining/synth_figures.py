"""Synthetic compound figures with exact panel boxes: training data for the panel detector.

Glo-In-One (and SimCFS before it) trained its figure separator on synthetic compound figures because
labelled real ones are rare. This module draws such figures: a canvas is split into cells by a grid with
unequal rows and columns or by recursive guillotine cuts (panels spanning cells, nested groups); gutters
vary in width and colour, including none (touching panels); each cell receives a panel of one kind
(microscopy from the user's images or drawn grey-scale "electron micrographs", line/scatter/bar plots
with axis text, diagrams, colour maps, faint near-blank tiles, strips of sub-images), optional borders,
scale bars, in-panel labels, insets, panel letters inside or outside the panel, and captions.

A panel's box is the tight bounding box of what was drawn for it (its tile, trimmed of background
around plots and diagrams), so the labels are exact by construction. Output is a YOLO data set::

    OUT/images/{train,val}/000123.jpg   OUT/labels/{train,val}/000123.txt   ("0 cx cy w h", normalised)
    OUT/boxes.jsonl                      (one row per figure: file, split, width, height, boxes in px)
    OUT/data.yaml                        (ultralytics data file, single class "panel")

Every figure ``i`` is drawn from ``numpy.random.default_rng([seed, i])``: the set is reproducible and
any figure can be regenerated alone.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from glomssl.config import opt
from glomssl.errors import GlomsslError
from glomssl.fsutil import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from glomssl.manifest import list_images

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) in pixels
Rng = np.random.Generator
LETTERS = "abcdefghijklmnopqrstuvwxyz"
KIND_WEIGHTS = (0.3, 0.3, 0.22, 0.08, 0.06, 0.04)
_FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono.ttf",
    "STIXGeneral.ttf",
    "cmss10.ttf",
)
WORDS = (
    "Intensity (a.u.)", "Time (s)", "Potential (V)", "Distance (nm)", "Energy (eV)", "Counts",
    "Diameter (nm)", "Relative current (%)", "Number", "Frequency", "Area (um2)", "Density",
    "Ag", "Mn", "BM", "PM", "GFR", "eGFR", "Control", "Treated", "Week 4", "PAS", "H&E", "WT", "KO",
)  # fmt: skip


@dataclasses.dataclass
class SynthConfig:
    """Options of ``glomssl separator synth``."""

    out: str = "synth_figures"
    n: int = 1000  # number of figures
    val_fraction: float = 0.1  # last share of figures goes to the val split
    seed: int = opt(0, ge=0)
    images: list[str] = dataclasses.field(default_factory=list)  # folders of panel images
    long_side: int = 512  # typical long side of a figure (Open-i serves ~512 px)
    max_pool: int = 2000  # at most this many user images are kept in memory
    letters: bool = True  # draw panel letters
    captions: bool = True  # draw caption lines under/over some figures
    # mean share of panel kinds: photo, micrograph, plot, diagram, colour map, strip of sub-images
    kinds: list[float] = dataclasses.field(default_factory=lambda: list(KIND_WEIGHTS))
    quiet: bool = False

    def validate(self) -> None:
        if self.n < 1:
            raise GlomsslError(f"--n must be at least 1, got {self.n}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise GlomsslError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if len(self.kinds) != 6 or min(self.kinds) < 0 or sum(self.kinds) <= 0:
            raise GlomsslError(f"kinds must be 6 non-negative weights, got {self.kinds}")
        if not 128 <= self.long_side <= 4096:
            raise GlomsslError(f"--long-side must be in 128..4096, got {self.long_side}")
        for folder in self.images:
            if not Path(folder).is_dir():
                raise GlomsslError(f"--images {folder} is not a folder; pass a folder of images")


# ----------------------------------------------------------------------------- fonts and pools


class Fonts:
    """TrueType fonts from matplotlib's bundled set (nothing downloads); PIL's default otherwise."""

    def __init__(self) -> None:
        self.files: list[str] = []
        try:
            import matplotlib

            base = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
            self.files = [str(base / f) for f in _FONT_FILES if (base / f).is_file()]
        except ImportError:  # pragma: no cover - matplotlib comes with ultralytics
            pass
        self._cache: dict[tuple[int, int], Any] = {}

    def get(self, rng: Rng, size: int, bold: bool | None = None) -> Any:
        size = int(max(6, size))
        if not self.files:
            return ImageFont.load_default(size)
        if bold:
            idx = int(rng.choice([i for i, f in enumerate(self.files) if "Bold" in f] or [0]))
        else:
            idx = int(rng.integers(len(self.files)))
        key = (idx, size)
        if key not in self._cache:
            self._cache[key] = ImageFont.truetype(self.files[idx], size)
        return self._cache[key]


def load_pool(folders: Sequence[str], max_images: int, seed: int) -> list[Image.Image]:
    """Read up to ``max_images`` images (RGB, long side <= 512) from ``folders``; skip unreadable."""
    files: list[Path] = []
    for folder in folders:
        files.extend(list_images(folder))
    if len(files) > max_images:
        rng = np.random.default_rng(seed)
        files = [files[i] for i in sorted(rng.choice(len(files), max_images, replace=False))]
    pool = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                if im.mode in ("I;16", "I", "F"):
                    arr = np.asarray(im, dtype=np.float32)
                    lo, hi = np.percentile(arr, (1, 99.5))
                    arr = np.clip((arr - lo) / max(hi - lo, 1e-6) * 255, 0, 255)
                    rgb = Image.fromarray(arr.astype(np.uint8)).convert("RGB")
                else:
                    rgb = im.convert("RGB")
        except (OSError, ValueError, ImportError):  # ImportError: see separate._load
            continue
        rgb.thumbnail((512, 512))
        if min(rgb.size) >= 32:
            pool.append(rgb)
    return pool


# ----------------------------------------------------------------------------- panel painters


def _smooth_noise(rng: Rng, w: int, h: int, scale: float) -> np.ndarray:
    """Low-frequency noise in [0, 1], shape (h, w): upsampled coarse noise."""
    cw, ch = max(2, int(w / scale)), max(2, int(h / scale))
    coarse = Image.fromarray((rng.random((ch, cw)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0


def paint_micrograph(rng: Rng, w: int, h: int) -> Image.Image:
    """A grey-scale 'electron micrograph': textured background, shaded particles or lattice, noise."""
    base = 0.25 + 0.5 * rng.random()
    img = base + 0.25 * (_smooth_noise(rng, w, h, rng.uniform(8, 60)) - 0.5)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # particles
        for _ in range(int(rng.integers(1, 40))):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = rng.uniform(3, max(4.0, min(w, h) / 5))
            d = ((xx - cx) ** 2 + (yy - cy) ** 2) / r**2
            img += rng.choice([-1, 1]) * rng.uniform(0.15, 0.5) * np.exp(-(d**2))
    elif kind == 1:  # lattice fringes
        ang, period = rng.uniform(0, np.pi), rng.uniform(3, 12)
        img += 0.2 * np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * 2 * np.pi / period)
    img += rng.normal(0, rng.uniform(0.02, 0.15), img.shape)
    arr = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


def paint_photo(rng: Rng, w: int, h: int, pool: list[Image.Image]) -> Image.Image:
    """A random crop of a pool image, resized to (w, h); sometimes grey-scale or colour-shifted."""
    src = pool[int(rng.integers(len(pool)))]
    sw, sh = src.size
    aspect = w / h
    cw = min(sw, int(sh * aspect)) if rng.random() < 0.7 else sw
    ch = min(sh, int(cw / aspect)) if cw else sh
    cw, ch = max(8, cw), max(8, ch)
    x0 = int(rng.integers(0, max(1, sw - cw + 1)))
    y0 = int(rng.integers(0, max(1, sh - ch + 1)))
    tile = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BILINEAR)
    if rng.random() < 0.3:
        tile = tile.convert("L").convert("RGB")
    return tile


def paint_colormap(rng: Rng, w: int, h: int) -> Image.Image:
    """A false-colour map (elemental map, heat map): smooth field through a random palette."""
    field = _smooth_noise(rng, w, h, rng.uniform(6, 40))
    if rng.random() < 0.5:  # sparse dots like EDS maps
        field = field * (rng.random((h, w)) < rng.uniform(0.1, 0.6))
    stops = rng.integers(0, 256, (4, 3)).astype(np.float32)
    stops[0] = rng.integers(0, 60, 3)
    idx = field * 3
    lo = np.clip(idx.astype(int), 0, 2)
    t = (idx - lo)[..., None]
    arr = stops[lo] * (1 - t) + stops[lo + 1] * t
    return Image.fromarray(arr.astype(np.uint8))


def _rot_text(text: str, font: Any, fill: tuple[int, int, int], bg: tuple[int, int, int]) -> Any:
    bbox = font.getbbox(text)
    tile = Image.new("RGB", (bbox[2] + 2, bbox[3] + 2), bg)
    ImageDraw.Draw(tile).text((1, 1), text, font=font, fill=fill)
    return tile.rotate(90, expand=True)


def paint_plot(rng: Rng, w: int, h: int, fonts: Fonts) -> Image.Image:
    """A chart drawn edge to edge: y label, tick labels, axes, lines/scatter/bars, legend."""
    bg = (255, 255, 255)
    img = Image.new("RGB", (w, h), bg)
    dr = ImageDraw.Draw(img)
    fs = int(np.clip(rng.uniform(0.05, 0.09) * min(w, h) + 4, 7, 16))
    font = fonts.get(rng, fs)
    ink = (0, 0, 0)
    ylab = _rot_text(str(rng.choice(WORDS)), font, ink, bg)
    ml = ylab.size[0] + int(fs * 2.2)
    mb = int(fs * 2.6)
    if ylab.size[1] < h:
        img.paste(ylab, (0, max(0, (h - mb - ylab.size[1]) // 2)))
    x0, y0, x1, y1 = ml, 1, w - 2, h - mb
    if x1 - x0 < 20 or y1 - y0 < 20:
        return paint_micrograph(rng, w, h)
    frame = rng.random() < 0.6
    dr.line([(x0, y0), (x0, y1), (x1, y1)], fill=ink, width=1)
    if frame:
        dr.line([(x0, y0), (x1, y0), (x1, y1)], fill=ink, width=1)
    nt = int(rng.integers(3, 7))
    for i in range(nt):
        tx = x0 + (x1 - x0) * i / (nt - 1)
        dr.line([(tx, y1), (tx, y1 - 3)], fill=ink)
        dr.text((tx, y1 + 2), f"{i * rng.integers(1, 50)}", font=font, fill=ink, anchor="mt")
        ty = y1 - (y1 - y0) * i / (nt - 1)
        dr.line([(x0, ty), (x0 + 3, ty)], fill=ink)
        dr.text((x0 - 3, ty), f"{i * 0.5:.1f}", font=font, fill=ink, anchor="rm")
    dr.text(((x0 + x1) // 2, h - 1), str(rng.choice(WORDS)), font=font, fill=ink, anchor="md")
    kind = rng.integers(3)
    xs = np.linspace(x0 + 3, x1 - 3, 60)
    for _s in range(int(rng.integers(1, 5))):
        col = tuple(int(c) for c in rng.integers(0, 220, 3))
        if kind == 2:  # histogram, or a bar chart of a few coloured bars with gaps
            nb = int(rng.integers(3, 20))
            edges = np.linspace(x0 + 5, x1 - 5, nb + 1)
            hts = np.exp(-(((np.arange(nb) - nb * rng.random()) / (nb / 4)) ** 2))
            if nb <= 8:
                hts = rng.uniform(0.2, 1.0, nb)
            gap = (edges[1] - edges[0]) * (0.3 if nb <= 8 else 0.0)
            for i in range(nb):
                top = y1 - hts[i] * (y1 - y0) * 0.9
                fill = _rgb(rng.integers(30, 230, 3)) if nb <= 8 else (190, 190, 190)
                dr.rectangle(
                    [edges[i] + gap / 2, top, edges[i + 1] - gap / 2, y1], fill=fill, outline=ink
                )
            break
        ys = np.cumsum(rng.normal(0, 1, xs.size))
        ys = (ys - ys.min()) / max(np.ptp(ys), 1e-6)
        ys = y1 - 4 - ys * (y1 - y0 - 8) * rng.uniform(0.4, 1.0)
        pts = list(zip(xs.tolist(), ys.tolist()))
        if kind == 0:
            dr.line(pts, fill=col, width=int(rng.integers(1, 4)))
        else:
            for px, py in pts[:: int(rng.integers(1, 4))]:
                dr.ellipse([px - 2, py - 2, px + 2, py + 2], outline=col)
        if rng.random() < 0.5:
            dr.text((pts[30][0], pts[30][1] - fs), str(rng.choice(WORDS)), font=font, fill=col)
    return img


def paint_diagram(rng: Rng, w: int, h: int, fonts: Fonts) -> Image.Image:
    """A schematic on white: shaded spheres, boxes, arrows and labels."""
    img = Image.new("RGB", (w, h), (255, 255, 255))
    dr = ImageDraw.Draw(img)
    if rng.random() < 0.3:  # a tinted backdrop, as many schematics have
        tint = tuple(int(v) for v in rng.integers(200, 250, 3))
        dr.rectangle([0, 0, w - 1, h - 1], fill=tint)
    font = fonts.get(rng, int(np.clip(min(w, h) * 0.07, 7, 15)))
    for _ in range(int(rng.integers(6, 20))):
        col = tuple(int(c) for c in rng.integers(40, 230, 3))
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        r = rng.uniform(0.06, 0.25) * min(w, h)
        shape = rng.integers(4)
        if shape == 0:
            for k in range(int(rng.integers(1, 12))):
                ox, oy = (k % 4) * r * 1.6, (k // 4) * r * 1.6
                dr.ellipse([cx + ox - r, cy + oy - r, cx + ox + r, cy + oy + r], fill=col)
        elif shape == 1:
            dr.rectangle([cx - r, cy - r * 0.6, cx + r * 1.5, cy + r * 0.6], outline=col, width=2)
        elif shape == 2:
            ex, ey = rng.uniform(0, w), rng.uniform(0, h)
            dr.line([(cx, cy), (ex, ey)], fill=(0, 0, 0), width=2)
            dr.polygon([(ex, ey), (ex - 5, ey - 4), (ex - 5, ey + 4)], fill=(0, 0, 0))
        else:
            dr.text((cx, cy), str(rng.choice(WORDS)), font=font, fill=(0, 0, 0))
    return img


def paint_strip(rng: Rng, w: int, h: int, pool: list[Image.Image]) -> Image.Image:
    """A nested group: 2-4 sub-images side by side with thin gaps, labelled as ONE panel."""
    k = int(rng.integers(2, 5))
    gap = int(rng.integers(2, 6))
    img = Image.new("RGB", (w, h), (255, 255, 255))
    sw = (w - gap * (k - 1)) // k
    if sw < 8:
        return paint_micrograph(rng, w, h)
    for i in range(k):
        sub = paint_photo(rng, sw, h, pool) if pool and rng.random() < 0.5 else None
        img.paste(sub or paint_micrograph(rng, sw, h), (i * (sw + gap), 0))
    return img


def decorate(rng: Rng, tile: Image.Image, fonts: Fonts) -> Image.Image:
    """Scale bar, in-panel labels, an inset, a border: what microscopy panels carry."""
    w, h = tile.size
    dr = ImageDraw.Draw(tile)
    light = (255, 255, 255) if rng.random() < 0.8 else (0, 0, 0)
    font = fonts.get(rng, int(np.clip(min(w, h) * rng.uniform(0.06, 0.12), 7, 18)))
    if rng.random() < 0.6:  # scale bar, bottom right
        bw, bh = int(w * rng.uniform(0.12, 0.3)), max(2, int(h * 0.02))
        bx, by = int(w * rng.uniform(0.6, 0.85)), int(h * rng.uniform(0.86, 0.95))
        dr.rectangle([bx, by, min(w - 2, bx + bw), by + bh], fill=light)
    if rng.random() < 0.4:
        txt = str(rng.choice(WORDS)) if rng.random() < 0.5 else f"{int(rng.integers(1, 99))} s"
        dr.text(
            (w * rng.uniform(0.05, 0.7), h * rng.uniform(0.03, 0.2)), txt, font=font, fill=light
        )
    if rng.random() < 0.15 and min(w, h) > 80:
        iw, ih = int(w * rng.uniform(0.2, 0.35)), int(h * rng.uniform(0.2, 0.35))
        tile.paste(paint_micrograph(rng, iw, ih), (w - iw - 3, 3))
        dr.rectangle([w - iw - 4, 2, w - 3, ih + 3], outline=light)
    if rng.random() < 0.2:
        dr.rectangle([0, 0, w - 1, h - 1], outline=(0, 0, 0), width=int(rng.integers(1, 3)))
    return tile


# ----------------------------------------------------------------------------- layout


def _split(rng: Rng, rect: Box, gutter: int, depth: int, out: list[Box]) -> None:
    """Recursive guillotine cuts of ``rect`` into 2-4 parts along its longer side (mostly)."""
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    if depth > 0 and (rng.random() < 0.25 + 0.2 * depth or min(w, h) < 90):
        out.append(rect)
        return
    horizontal = (w > h) if rng.random() < 0.75 else (w <= h)
    k = int(rng.integers(2, 5 if depth == 0 else 4))
    length = w if horizontal else h
    usable = length - gutter * (k - 1)
    if usable / k < 40:
        out.append(rect)
        return
    share = rng.dirichlet(np.full(k, 4.0)) if rng.random() < 0.5 else np.full(k, 1.0 / k)
    pos = float(x0 if horizontal else y0)
    for i in range(k):
        size = usable * share[i]
        a, b = int(round(pos)), int(round(pos + size))
        sub = (a, y0, b, y1) if horizontal else (x0, a, x1, b)
        _split(rng, sub, gutter, depth + 1, out)
        pos += size + gutter


def layout(rng: Rng, w: int, h: int, margin: int, gutter: int) -> list[Box]:
    """Cells of a figure: a single panel, an irregular grid, or guillotine cuts."""
    inner = (margin, margin, w - margin, h - margin)
    mode = rng.choice(["single", "grid", "cuts"], p=[0.07, 0.45, 0.48])
    if mode == "single":
        return [inner]
    if mode == "cuts":
        cells: list[Box] = []
        _split(rng, inner, gutter, 0, cells)
        return cells
    rows = int(rng.integers(1, 5))
    heights = rng.dirichlet(np.full(rows, 6.0)) * (h - 2 * margin - gutter * (rows - 1))
    cells, y = [], float(margin)
    for r in range(rows):
        cols = int(rng.integers(1, 6)) if r == 0 or rng.random() < 0.5 else len(cells) // r
        cols = max(1, cols)
        widths = (
            rng.dirichlet(np.full(cols, 5.0)) if rng.random() < 0.5 else np.full(cols, 1 / cols)
        ) * (w - 2 * margin - gutter * (cols - 1))
        x = float(margin)
        for c in range(cols):
            cells.append((int(x), int(y), int(x + widths[c]), int(y + heights[r])))
            x += widths[c] + gutter
        y += heights[r] + gutter
    return cells


# ----------------------------------------------------------------------------- one figure


def _rgb(values: Any) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in values)
    return (r, g, b)


def _content_box(tile: Image.Image, bg: tuple[int, int, int]) -> Box | None:
    """Tight box of pixels that differ from ``bg`` (tolerance 12), or None when blank."""
    arr = np.asarray(tile, dtype=np.int16)
    ink = (np.abs(arr - np.array(bg, dtype=np.int16)).max(axis=2) > 12).astype(np.uint8)
    found = Image.fromarray(ink * 255).getbbox()
    return None if found is None else (found[0], found[1], found[2], found[3])


def make_figure(
    rng: Rng,
    fonts: Fonts,
    pool: list[Image.Image],
    long_side: int = 512,
    letters: bool = True,
    captions: bool = True,
    resize: bool = True,
    kinds: Sequence[float] = KIND_WEIGHTS,
) -> tuple[Image.Image, list[Box]]:
    """Draw one compound figure; return it and its panel boxes (x0, y0, x1, y1), exclusive ends.

    ``resize=False`` skips the final rescale to about ``long_side`` (boxes stay pixel-exact); the
    random draws are the same either way, so a seed gives the same layout.
    """
    w = int(rng.uniform(480, 760))
    h = int(w * rng.choice([rng.uniform(0.15, 0.45), rng.uniform(0.45, 1.25)], p=[0.3, 0.7]))
    bg = (255, 255, 255) if rng.random() < 0.85 else _rgb(rng.integers(0, 256, 3))
    gutters = [0, int(rng.integers(1, 6)), int(rng.integers(6, 26))]
    gutter = int(rng.choice(gutters, p=[0.2, 0.3, 0.5]))
    margin = int(rng.integers(0, 16))
    fig = Image.new("RGB", (w, h), bg)
    dr = ImageDraw.Draw(fig)
    letter_where = rng.choice(["outside", "inside", "none"], p=[0.55, 0.35, 0.1])
    if not letters:
        letter_where = "none"
    letter_font = fonts.get(rng, int(rng.uniform(11, 20)), bold=rng.random() < 0.8)
    upper = rng.random() < 0.35
    # per-figure mix of panel kinds: photo, micrograph, plot, diagram, colour map, strip
    mean = np.asarray(kinds, dtype=np.float64) / float(np.sum(kinds))
    mix = rng.dirichlet(mean * 4 + 0.02)
    boxes: list[Box] = []
    for i, (cx0, cy0, cx1, cy1) in enumerate(layout(rng, w, h, margin, gutter)):
        text = LETTERS[i % 26].upper() if upper else LETTERS[i % 26]
        strip = letter_font.getbbox(text)[3] + 3 if letter_where == "outside" else 0
        left_strip = letter_where == "outside" and rng.random() < 0.3
        tx0 = cx0 + (strip if left_strip else 0)
        ty0 = cy0 + (0 if left_strip else strip)
        tw, th = cx1 - tx0, cy1 - ty0
        if tw < 24 or th < 24:
            continue
        kind = int(rng.choice(6, p=mix))
        if kind == 0 and pool:
            tile = decorate(rng, paint_photo(rng, tw, th, pool), fonts)
        elif kind in (0, 1):
            tile = decorate(rng, paint_micrograph(rng, tw, th), fonts)
        elif kind == 2:
            tile = paint_plot(rng, tw, th, fonts)
        elif kind == 3:
            tile = paint_diagram(rng, tw, th, fonts)
        elif kind == 4:
            tile = decorate(rng, paint_colormap(rng, tw, th), fonts)
        else:
            tile = paint_strip(rng, tw, th, pool)
        box = _content_box(tile, bg)
        if box is None or box[2] - box[0] < 12 or box[3] - box[1] < 12:
            continue
        fig.paste(tile, (tx0, ty0))
        box = (tx0 + box[0], ty0 + box[1], tx0 + box[2], ty0 + box[3])
        if letter_where == "inside":
            shade = np.asarray(tile.crop((0, 0, 20, 20)).convert("L")).mean()
            ink = (0, 0, 0) if shade > 128 else (255, 255, 255)
            dr.text((box[0] + 3, box[1] + 2), text, font=letter_font, fill=ink)
        elif letter_where == "outside":
            dr.text((cx0, cy0), text, font=letter_font, fill=(0, 0, 0) if sum(bg) > 380 else bg)
        boxes.append(box)
    if not boxes:  # every cell was too small: make it a single-panel figure
        tile = decorate(rng, paint_micrograph(rng, w - 2 * margin, h - 2 * margin), fonts)
        fig.paste(tile, (margin, margin))
        boxes.append((margin, margin, w - margin, h - margin))
    if captions and rng.random() < 0.25:  # a caption band below the panels (not a panel)
        font = fonts.get(rng, int(rng.uniform(9, 13)))
        band = Image.new("RGB", (w, int(rng.integers(14, 40))), (255, 255, 255))
        words = " ".join(str(rng.choice(WORDS)) for _ in range(30))
        ImageDraw.Draw(band).text((4, 2), words, font=font, fill=(0, 0, 0))
        full = Image.new("RGB", (w, h + band.size[1]), (255, 255, 255))
        full.paste(fig, (0, 0))
        full.paste(band, (0, h))
        fig = full
    scale = long_side * rng.uniform(0.75, 1.35) / max(fig.size)
    if resize and abs(scale - 1) > 0.02:
        size = (max(32, round(fig.size[0] * scale)), max(32, round(fig.size[1] * scale)))
        sx, sy = size[0] / fig.size[0], size[1] / fig.size[1]
        fig = fig.resize(size, Image.Resampling.BILINEAR)
        boxes = [
            (round(a * sx), round(b * sy), round(c * sx), round(d * sy)) for a, b, c, d in boxes
        ]
    return fig, boxes


def yolo_lines(boxes: Sequence[Box], w: int, h: int) -> str:
    """YOLO label text: one ``0 cx cy bw bh`` line per box, normalised to the image size."""
    lines = []
    for x0, y0, x1, y1 in boxes:
        lines.append(
            f"0 {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}"
        )
    return "\n".join(lines) + ("\n" if lines else "")


def run_synth(cfg: SynthConfig, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write ``cfg.n`` synthetic figures as a YOLO data set under ``cfg.out``; return a summary."""
    cfg.validate()
    out = ensure_writable_dir(cfg.out)
    pool = load_pool(cfg.images, cfg.max_pool, cfg.seed)
    if cfg.images and not pool:
        raise GlomsslError(f"--images {', '.join(cfg.images)}: no readable images found there")
    fonts = Fonts()
    n_val = int(round(cfg.n * cfg.val_fraction))
    rows = []
    n_boxes = 0
    for i in range(cfg.n):
        split = "val" if i >= cfg.n - n_val else "train"
        rng = np.random.default_rng([cfg.seed, i])
        fig, boxes = make_figure(
            rng, fonts, pool, cfg.long_side, cfg.letters, cfg.captions, kinds=cfg.kinds
        )
        buf = io.BytesIO()
        fig.save(buf, format="JPEG", quality=int(rng.integers(60, 96)))
        name = f"{i:06d}"
        atomic_write_bytes(out / "images" / split / f"{name}.jpg", buf.getvalue(), fsync=False)
        atomic_write_text(
            out / "labels" / split / f"{name}.txt", yolo_lines(boxes, *fig.size), fsync=False
        )
        rows.append(
            {
                "file": f"images/{split}/{name}.jpg",
                "split": split,
                "width": fig.size[0],
                "height": fig.size[1],
                "boxes": [list(b) for b in boxes],
            }
        )
        n_boxes += len(boxes)
        if progress is not None:
            progress(1)
    atomic_write_text(out / "boxes.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    data_yaml = (
        f"path: {os.fspath(out.resolve())}\ntrain: images/train\n"
        f"val: images/{'val' if n_val else 'train'}\nnames:\n  0: panel\n"
    )
    atomic_write_text(out / "data.yaml", data_yaml)
    return {
        "out": str(out),
        "figures": cfg.n,
        "val": n_val,
        "boxes": n_boxes,
        "pool_images": len(pool),
        "data_yaml": str(out / "data.yaml"),
    }
