"""Draw one synthetic compound figure with exact panel boxes.

:func:`make_figure` picks a layout (:mod:`.layouts`), fills each cell with a panel (:mod:`.panels`) and
adds what real figures carry around their panels but is not a panel: letters outside or inside the
panels, column headers above and row labels beside a grid, a multi-line title or caption inside the
figure. Rows of charts may share their y axis and touch. A panel's box is the tight bounding box of
what was drawn for it (its tile, trimmed of background around plots and diagrams), so the labels are
exact by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from glomssl.mining.synth.layouts import LAYOUT_WEIGHTS, LAYOUTS, layout
from glomssl.mining.synth.panels import (
    WORDS,
    Fonts,
    decorate,
    paint_colormap,
    paint_diagram,
    paint_micrograph,
    paint_photo,
    paint_plot,
    paint_slide,
    paint_strip,
    rgb,
)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) in pixels
Rng = np.random.Generator
LETTERS = "abcdefghijklmnopqrstuvwxyz"
#: mean share of panel kinds: photo, micrograph, plot, diagram, colour map, strip, tissue on a slide
KIND_NAMES = ("photo", "micrograph", "plot", "diagram", "colormap", "strip", "slide")
KIND_WEIGHTS = (0.28, 0.25, 0.22, 0.08, 0.06, 0.04, 0.07)


def content_box(tile: Image.Image, bg: tuple[int, int, int]) -> Box | None:
    """Tight box of pixels that differ from ``bg`` (tolerance 12), or None when blank."""
    arr = np.asarray(tile, dtype=np.int16)
    ink = (np.abs(arr - np.array(bg, dtype=np.int16)).max(axis=2) > 12).astype(np.uint8)
    found = Image.fromarray(ink * 255).getbbox()
    return None if found is None else (found[0], found[1], found[2], found[3])


def _paint(
    rng: Rng, kind: int, w: int, h: int, pool: list[Image.Image], fonts: Fonts, y_axis: bool
) -> Image.Image:
    """One panel of ``kind`` (an index into :data:`KIND_NAMES`), size (w, h)."""
    if kind == 0 and pool:
        return decorate(rng, paint_photo(rng, w, h, pool), fonts)
    if kind in (0, 1):
        return decorate(rng, paint_micrograph(rng, w, h), fonts)
    if kind == 2:
        return paint_plot(rng, w, h, fonts, y_axis=y_axis)
    if kind == 3:
        return paint_diagram(rng, w, h, fonts)
    if kind == 4:
        return decorate(rng, paint_colormap(rng, w, h), fonts)
    if kind == 5:
        return paint_strip(rng, w, h, pool)
    return decorate(rng, paint_slide(rng, w, h, pool), fonts)


def _size(rng: Rng, mode: str) -> tuple[int, int]:
    """Canvas size: mostly landscape or square, some very wide or tall (strips always are)."""
    w = int(rng.uniform(480, 760))
    if mode == "strip":
        ratio = rng.uniform(0.15, 0.4) if rng.random() < 0.6 else rng.uniform(1.8, 3.0)
    else:
        ratio = float(
            rng.choice(
                [rng.uniform(0.15, 0.45), rng.uniform(0.45, 1.25), rng.uniform(1.25, 2.5)],
                p=[0.25, 0.6, 0.15],
            )
        )
    return w, max(60, int(w * ratio))


def _text_band(rng: Rng, fonts: Fonts, w: int, lines: int) -> Image.Image:
    """A white band with ``lines`` lines of words: a title or caption printed inside the figure."""
    font = fonts.get(rng, int(rng.uniform(9, 14)))
    step = font.getbbox("Ag")[3] + 3
    band = Image.new("RGB", (w, step * lines + 4), (255, 255, 255))
    dr = ImageDraw.Draw(band)
    for i in range(lines):
        n = int(rng.integers(4, 30)) if i == lines - 1 else 30
        dr.text(
            (4, 2 + i * step),
            " ".join(str(rng.choice(WORDS)) for _ in range(n)),
            font=font,
            fill=(0, 0, 0),
        )
    return band


def _headers(
    rng: Rng,
    fonts: Fonts,
    fig: Image.Image,
    cells: Sequence[Box],
    top: int,
    left: int,
    bg: tuple[int, int, int],
) -> None:
    """Column headers above the top row of cells, row labels (rotated) left of the first column."""
    ink = (0, 0, 0) if sum(bg) > 380 else (255, 255, 255)
    dr = ImageDraw.Draw(fig)
    font = fonts.get(rng, int(rng.uniform(10, 15)))
    if top:
        y_top = min(c[1] for c in cells)
        for c in (c for c in cells if c[1] == y_top):
            dr.text(
                ((c[0] + c[2]) // 2, y_top - 2),
                str(rng.choice(WORDS)),
                font=font,
                fill=ink,
                anchor="md",
            )
    if left:
        x_left = min(c[0] for c in cells)
        for c in (c for c in cells if c[0] == x_left):
            text = str(rng.choice(WORDS))
            box = font.getbbox(text)
            tile = Image.new("RGB", (box[2] + 2, box[3] + 2), bg)
            ImageDraw.Draw(tile).text((1, 1), text, font=font, fill=ink)
            tile = tile.rotate(90, expand=True)
            if tile.size[1] <= c[3] - c[1]:
                fig.paste(
                    tile, (max(0, x_left - tile.size[0] - 2), (c[1] + c[3] - tile.size[1]) // 2)
                )


def make_figure(
    rng: Rng,
    fonts: Fonts,
    pool: list[Image.Image],
    long_side: int = 512,
    letters: bool = True,
    captions: bool = True,
    resize: bool = True,
    kinds: Sequence[float] = KIND_WEIGHTS,
    layouts: Sequence[float] = LAYOUT_WEIGHTS,
    mode: str | None = None,
    same_source: float = 0.0,
    touch: float = 0.0,
) -> tuple[Image.Image, list[Box]]:
    """Draw one compound figure; return it and its panel boxes (x0, y0, x1, y1), exclusive ends.

    ``mode`` forces a layout (one of ``layouts.LAYOUTS``), else one is drawn with weights ``layouts``.
    ``captions=False`` draws no text outside panels (no captions, titles or headers), ``letters=False``
    no panel letters. ``resize=False`` skips the final rescale to about ``long_side`` (boxes stay
    pixel-exact); the random draws are the same either way, so a seed gives the same layout.
    ``same_source`` is the chance that a figure with ``pool`` images is a montage of one sample:
    all its panels are photos or tissue-on-slide panels cut from ONE pool image (real figures
    often show several fields of the same section side by side, with the same stain, touching or
    a hairline apart). ``touch`` is the chance that a figure with ``pool`` images (not a single
    panel, not a row of shared-axis charts) is a montage of pictures that touch: no gutter, and
    every panel a photo or tissue-on-slide crop (each from its own draw of the pool, so neighbours
    share the stain of the pool but not the picture). At 0 (the default for both) no extra random
    draw is made, so older seeds give the same figures.
    """
    lw = np.asarray(layouts, dtype=np.float64)
    mode = mode or str(rng.choice(LAYOUTS, p=lw / lw.sum()))
    w, h = _size(rng, mode)
    bg = (255, 255, 255) if rng.random() < 0.85 else rgb(rng.integers(0, 256, 3))
    gutter = int(
        rng.choice([0, int(rng.integers(1, 6)), int(rng.integers(6, 26))], p=[0.2, 0.3, 0.5])
    )
    margin = int(rng.integers(0, 16))
    charts = mode in ("grid", "uniform", "strip", "rows") and rng.random() < 0.15  # shared axes
    if charts:
        gutter = int(rng.integers(0, 5))
    top = left = 0
    if captions and mode in ("grid", "uniform", "rows", "big") and rng.random() < 0.3:
        top = int(rng.uniform(14, 22)) if rng.random() < 0.7 else 0
        left = int(rng.uniform(14, 22)) if rng.random() < 0.5 or not top else 0
    fig = Image.new("RGB", (w, h), bg)
    dr = ImageDraw.Draw(fig)
    letter_where = str(rng.choice(["outside", "inside", "none"], p=[0.55, 0.35, 0.1]))
    if not letters or mode == "single":
        letter_where = "none"
    letter_font = fonts.get(rng, int(rng.uniform(11, 20)), bold=rng.random() < 0.8)
    upper = rng.random() < 0.35
    kw = np.asarray(kinds, dtype=np.float64)
    kw = np.concatenate([kw, np.zeros(len(KIND_NAMES) - kw.size)]) / kw.sum()
    mix = rng.dirichlet(kw * 4 + 0.02)
    if same_source > 0 and pool and not charts and rng.random() < same_source:
        pool = [pool[int(rng.integers(len(pool)))]]  # every photo: a crop of this one image
        mix = np.zeros(len(KIND_NAMES))
        mix[KIND_NAMES.index("photo")], mix[KIND_NAMES.index("slide")] = 0.8, 0.2
    if touch > 0 and pool and not charts and mode != "single" and rng.random() < touch:
        gutter = 0
        mix = np.zeros(len(KIND_NAMES))
        mix[KIND_NAMES.index("photo")], mix[KIND_NAMES.index("slide")] = 0.9, 0.1
    # panels at least ~36 px on their short side after the final rescale (smaller ones are useless)
    min_cell = int(np.ceil(36 * max(w, h) / (long_side * 0.75)))
    cells = layout(
        rng, mode, (margin + left, margin + top, w - margin, h - margin), gutter, min_cell
    )
    x_first = min(c[0] for c in cells)
    boxes: list[Box] = []
    for i, (cx0, cy0, cx1, cy1) in enumerate(cells):
        text = LETTERS[i % 26].upper() if upper else LETTERS[i % 26]
        strip = letter_font.getbbox(text)[3] + 3 if letter_where == "outside" else 0
        left_strip = letter_where == "outside" and rng.random() < 0.3
        tx0 = cx0 + (strip if left_strip else 0)
        ty0 = cy0 + (0 if left_strip else strip)
        tw, th = cx1 - tx0, cy1 - ty0
        if min(tw, th) < max(24, 0.6 * min_cell):
            continue
        kind = 2 if charts else int(rng.choice(len(KIND_NAMES), p=mix))
        tile = _paint(rng, kind, tw, th, pool, fonts, y_axis=not charts or cx0 == x_first)
        box = content_box(tile, bg)
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
    elif top or left:
        _headers(rng, fonts, fig, cells, top, left, bg)
    if captions and rng.random() < 0.3:  # a title above or a caption below the panels, 1-4 lines
        band = _text_band(rng, fonts, w, int(rng.choice([1, 2, 3, 4], p=[0.4, 0.3, 0.2, 0.1])))
        above = rng.random() < 0.35
        full = Image.new("RGB", (w, h + band.size[1]), (255, 255, 255))
        full.paste(fig, (0, band.size[1] if above else 0))
        full.paste(band, (0, 0 if above else h))
        if above:
            boxes = [(a, b + band.size[1], c, d + band.size[1]) for a, b, c, d in boxes]
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
