"""Panel painters for synthetic compound figures: what goes inside one panel.

Each painter returns an RGB PIL image of exactly the size asked for: microscopy from the user's images
(:func:`paint_photo`), drawn grey-scale "electron micrographs", false-colour maps, line/scatter/bar
charts with axis text (optionally without their y axis, as in rows of charts sharing one), schematics,
strips of sub-images that form ONE panel (a nested group the detector must not split), and tissue on a
white slide background with white holes (a panel with internal whitespace that must stay whole).
:func:`decorate` adds what microscopy panels carry: scale bars, labels, an inset, a border.

Fonts come from matplotlib's bundled set, so nothing downloads. Glo-In-One (Yao et al., 2022) and
SimCFS before it trained their figure separators on such synthetic figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from glomssl.errors import GlomsslError

Rng = np.random.Generator
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


def rgb(values: Any) -> tuple[int, int, int]:
    """Three numbers as an (r, g, b) tuple of ints."""
    r, g, b = (int(v) for v in values)
    return (r, g, b)


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


def load_pool(
    folders: Sequence[str],
    max_images: int,
    seed: int,
    skipped: list[dict[str, str]] | None = None,
) -> list[Image.Image]:
    """Read up to ``max_images`` images (RGB, long side <= 512) from ``folders``.

    Unreadable files (corrupt, not an image, decompression bombs) are skipped and, when ``skipped`` is
    given, listed there as ``{"path", "reason"}``.
    """
    from glomssl.data.images import load_rgb
    from glomssl.manifest import list_images

    files: list[Path] = []
    for folder in folders:
        files.extend(list_images(folder))
    if len(files) > max_images:
        rng = np.random.default_rng(seed)
        files = [files[i] for i in sorted(rng.choice(len(files), max_images, replace=False))]
    pool = []
    for f in files:
        try:
            img = load_rgb(f, max_side=512)
        except GlomsslError as exc:
            if skipped is not None:
                skipped.append({"path": str(f), "reason": str(exc)})
            continue
        if min(img.size) >= 32:
            pool.append(img)
    return pool


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


def paint_slide(rng: Rng, w: int, h: int, pool: list[Image.Image]) -> Image.Image:
    """Tissue on a white slide: a photo or micrograph with white background areas and holes.

    A hard negative for whitespace splitters: white runs cross the panel, yet it is ONE panel (a
    section with lumina, a biopsy strip, a smear). Its edges always touch tissue on every side.
    """
    tile = paint_photo(rng, w, h, pool) if pool else paint_micrograph(rng, w, h)
    field = _smooth_noise(rng, w, h, rng.uniform(10, 50))  # (h, w)
    white = field > rng.uniform(0.55, 0.75)
    if rng.random() < 0.5:  # a white band across the panel (two tissue pieces, one panel)
        if rng.random() < 0.5:
            a = int(rng.uniform(0.3, 0.6) * h)
            white[a : a + int(rng.uniform(0.04, 0.15) * h)] = True
        else:
            a = int(rng.uniform(0.3, 0.6) * w)
            white[:, a : a + int(rng.uniform(0.04, 0.15) * w)] = True
    white[0], white[-1], white[:, 0], white[:, -1] = False, False, False, False
    arr = np.asarray(tile).copy()  # (h, w, 3)
    arr[white] = 255 - rng.integers(0, 6)
    return Image.fromarray(arr)


def _rot_text(text: str, font: Any, fill: tuple[int, int, int], bg: tuple[int, int, int]) -> Any:
    bbox = font.getbbox(text)
    tile = Image.new("RGB", (bbox[2] + 2, bbox[3] + 2), bg)
    ImageDraw.Draw(tile).text((1, 1), text, font=font, fill=fill)
    return tile.rotate(90, expand=True)


def paint_plot(
    rng: Rng, w: int, h: int, fonts: Fonts, y_axis: bool = True, title: bool | None = None
) -> Image.Image:
    """A chart drawn edge to edge: y label, tick labels, axes, lines/scatter/bars, legend.

    ``y_axis=False`` leaves out the y label and tick labels (a chart that shares the y axis of its
    left neighbour). ``title`` (random when None) writes a title line above the plot area, and a legend
    may sit apart from the data: whitespace inside the panel that must not split it.
    """
    bg = (255, 255, 255)
    img = Image.new("RGB", (w, h), bg)
    dr = ImageDraw.Draw(img)
    fs = int(np.clip(rng.uniform(0.05, 0.09) * min(w, h) + 4, 7, 16))
    font = fonts.get(rng, fs)
    ink = (0, 0, 0)
    mt = 1
    if title if title is not None else rng.random() < 0.2:
        dr.text((w // 2, 0), str(rng.choice(WORDS)), font=font, fill=ink, anchor="mt")
        mt = int(fs * 1.8)
    if y_axis:
        ylab = _rot_text(str(rng.choice(WORDS)), font, ink, bg)
        ml = ylab.size[0] + int(fs * 2.2)
    else:
        ml = 1
    mb = int(fs * 2.6)
    if y_axis and ylab.size[1] < h:
        img.paste(ylab, (0, max(0, (h - mb - ylab.size[1]) // 2)))
    x0, y0, x1, y1 = ml, mt, w - 2, h - mb
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
        if y_axis:
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
                fill = rgb(rng.integers(30, 230, 3)) if nb <= 8 else (190, 190, 190)
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
