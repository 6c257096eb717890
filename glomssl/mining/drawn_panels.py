"""Drawn non-tissue panels: the negatives journal figures are full of, made here from a seed.

``glomssl curate train`` adds these to the user's negatives (``drawn_negatives``) so that the
learned scorer has seen what a glomerulus-only training set never shows it: a scorer trained on
glomeruli vs other tissue scored a chart fragment 0.9999. The kinds follow the non-tissue panels
that real compound figures hold (measured on the exsclaim figures in ../shared/data):

* ``gradient_bars``: a bar chart whose bars are filled with colour ramps (no flat fill);
* ``false_colour``: a smooth field through a rainbow colour scale (heat maps, element maps);
* ``grey_inset``: a grey micrograph-like texture (electron microscopy) with coloured insets or dots;
* ``shaded_schematic``: shapes with cylinder shading and outlines on white (3-D renderings);
* ``line_plot``: axes and coloured lines with markers;
* ``text``: lines of text.

Everything is drawn with numpy and Pillow's built-in font; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Rng = np.random.Generator


def _field(rng: Rng, w: int, h: int, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1]: (h, w) float."""
    small = rng.random((max(2, h // cells), max(2, w // cells)))
    im = Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    f = np.asarray(im, np.float64)
    return (f - f.min()) / max(float(np.ptp(f)), 1e-9)  # type: ignore[no-any-return]


def _rainbow(t: np.ndarray) -> np.ndarray:
    """A jet-like colour scale: t (h, w) in [0, 1] -> (h, w, 3) uint8, blue-cyan-green-yellow-red."""
    stops = np.array(
        [[0, 0, 140], [0, 90, 255], [0, 230, 230], [40, 220, 40], [255, 240, 0], [230, 20, 0]],
        np.float64,
    )
    x = np.clip(t, 0, 1) * (len(stops) - 1)
    lo = np.minimum(x.astype(np.int64), len(stops) - 2)
    frac = (x - lo)[..., None]
    return (stops[lo] * (1 - frac) + stops[lo + 1] * frac).astype(np.uint8)  # type: ignore[no-any-return]


def _hue_colour(rng: Rng) -> tuple[int, int, int]:
    """A saturated colour of random hue."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(float(rng.random()), float(rng.uniform(0.6, 1.0)), 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def gradient_bars(rng: Rng, size: int) -> Image.Image:
    a = np.full((size, size, 3), 255, np.uint8)
    n = int(rng.integers(3, 7))
    left, base = size // 8, size - size // 8
    width = (size - left - 8) // n
    for k in range(n):
        top = int(rng.integers(size // 5, base - 10))
        colour = np.array(_hue_colour(rng), np.float64)
        ramp = np.linspace(0.35, 1.0, base - top)[:, None]  # light at the top, full colour below
        col = (255 * (1 - ramp) + colour * ramp).astype(np.uint8)  # (rows, 3)
        x0 = left + k * width + width // 6
        a[top:base, x0 : x0 + width * 2 // 3] = col[:, None, :]
    im = Image.fromarray(a)
    d = ImageDraw.Draw(im)
    d.line([(left - 2, 6), (left - 2, base)], fill=(0, 0, 0), width=2)
    d.line([(left - 2, base), (size - 4, base)], fill=(0, 0, 0), width=2)
    for k in range(n):
        d.text((left + k * width + 2, base + 3), f"S{k}", fill=(0, 0, 0))
    return im


def false_colour(rng: Rng, size: int) -> Image.Image:
    t = _field(rng, size, size, int(rng.integers(8, 40)))
    im = Image.fromarray(_rainbow(t))
    d = ImageDraw.Draw(im)
    x = size - size // 4
    d.rectangle([x, size - 14, size - 8, size - 10], fill=(255, 255, 255))  # scale bar
    return im


def grey_inset(rng: Rng, size: int) -> Image.Image:
    g = 60 + 140 * _field(rng, size, size, int(rng.integers(6, 20)))
    g = g + rng.normal(0, 10, g.shape)
    a = np.repeat(g.clip(0, 255)[..., None], 3, axis=2).astype(np.uint8)
    if rng.random() < 0.5:  # a coloured inset map in a corner
        s = size // 3
        colour = np.array(_hue_colour(rng), np.float64)
        dots = (rng.random((s, s)) < 0.35)[..., None] * colour
        a[:s, size - s :] = dots.astype(np.uint8)
    im = Image.fromarray(a)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(6, 20))):  # coloured atom markers / arrows
        x, y = (int(v) for v in rng.integers(0, size, 2))
        r = int(rng.integers(3, 7))
        d.ellipse([x - r, y - r, x + r, y + r], fill=_hue_colour(rng))
    return im


def shaded_schematic(rng: Rng, size: int) -> Image.Image:
    a = np.full((size, size, 3), 255, np.float64)
    for _ in range(int(rng.integers(1, 4))):
        w, h = (int(v) for v in rng.integers(size // 5, size // 2, 2))
        x0, y0 = (int(v) for v in rng.integers(0, size - max(w, h), 2))
        colour = np.array(_hue_colour(rng), np.float64)
        shade = np.sin(np.linspace(0.15, np.pi - 0.15, w))[None, :, None]  # cylinder shading
        block = 255 * (1 - shade) * 0.55 + colour * (0.45 + 0.55 * shade)
        a[y0 : y0 + h, x0 : x0 + w] = np.broadcast_to(block, (h, w, 3))
    im = Image.fromarray(a.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(3):
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, size, 4))
        d.line([(x0, y0), (x1, y1)], fill=(40, 40, 40), width=2)
    d.text((6, 6), "6M KOH", fill=(0, 0, 0))
    return im


def line_plot(rng: Rng, size: int) -> Image.Image:
    im = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(im)
    left, base = size // 8, size - size // 8
    d.line([(left, 6), (left, base)], fill=(0, 0, 0), width=2)
    d.line([(left, base), (size - 4, base)], fill=(0, 0, 0), width=2)
    for _ in range(int(rng.integers(1, 4))):
        ys = np.cumsum(rng.normal(0, size / 20, 10)) + size / 2
        pts = [
            (left + 4 + k * (size - left - 12) // 9, int(np.clip(y, 8, base - 4)))
            for k, y in enumerate(ys)
        ]
        colour = _hue_colour(rng)
        d.line(pts, fill=colour, width=2)
        for x, y in pts:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    return im


def text(rng: Rng, size: int) -> Image.Image:
    im = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(im)
    words = ["Figure", "glomeruli", "PAS", "n = 12", "p < 0.05", "control", "day 7", "scale"]
    for k in range(size // 16):
        line = " ".join(str(rng.choice(words)) for _ in range(4))
        d.text((6, 4 + 16 * k), line, fill=(0, 0, 0))
    return im.filter(ImageFilter.SMOOTH) if rng.random() < 0.5 else im


KINDS: dict[str, Callable[[Rng, int], Image.Image]] = {
    "gradient_bars": gradient_bars,
    "false_colour": false_colour,
    "grey_inset": grey_inset,
    "shaded_schematic": shaded_schematic,
    "line_plot": line_plot,
    "text": text,
}


def drawn_panels(n: int, seed: int = 0, size: int = 160) -> list[tuple[str, Image.Image]]:
    """``n`` drawn non-tissue panels (kinds in turn), deterministic for a seed: [(kind, image)]."""
    rng = np.random.default_rng(seed)
    names = list(KINDS)
    out = []
    for k in range(n):
        kind = names[k % len(names)]
        side = int(rng.integers(size * 3 // 4, size * 5 // 4))
        out.append((kind, KINDS[kind](rng, side)))
    return out
