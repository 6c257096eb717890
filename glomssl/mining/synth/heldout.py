"""An independent generator of figure layouts, used only to EVALUATE panel separators.

Separators are chosen on figures this module draws (``benchmarks/separator_heldout.py``); no training
command can call it, so its layouts, its charts and its seeds are never seen in training. It was written
apart from the training generator and builds figures the other way round: the training generator fixes
a canvas and divides it, this one stacks *bands* whose heights follow from their content's aspect ratio,
the way authors assemble figures in a drawing program:

- an image row: n images of one aspect ratio (a montage: stains x conditions);
- a chart row: n charts rendered with matplotlib (bar charts with error bars, lines, scatter, box
  plots), optionally sharing the y axis;
- a mixed row: images followed by their quantification chart;
- a block: one large image beside a 2 x k grid of small ones.

Per figure: one gutter (0 to 12 px), a letter style (outside above, inside with or without a white
box, none), optional column titles and row labels, an optional title line. Panel content comes from the
caller's pools (``{"glom": [...], "tissue": [...]}``, e.g. held-out glomerulus crops and tissue tiles).
Boxes are exact: an image's box is where it was pasted, a chart's box the tight box of its ink.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from glomssl.mining.synth.panels import Fonts

Box = tuple[int, int, int, int]
Rng = np.random.Generator
WHITE = (255, 255, 255)
_LABELS = ("Control", "Vehicle", "Treated", "Sham", "UUO", "db/db", "WT", "KO", "PAS", "Day 7",
           "Week 12", "Cortex", "Medulla", "Diabetic", "Normal", "ADR", "Anti-GBM")  # fmt: skip
_YLABELS = ("Glomerular area (um2)", "Sclerosis index", "Fold change", "Albuminuria (mg/g)",
            "Podocytes / glomerulus", "Score", "% positive area", "mRNA level")  # fmt: skip


def _ink_box(img: Image.Image) -> Box | None:
    """Tight box of non-white pixels (tolerance 12) of a chart, or None when blank."""
    a = np.asarray(img.convert("RGB"), dtype=np.int16)
    ink = ((255 - a).max(axis=2) > 12).astype(np.uint8) * 255
    return Image.fromarray(ink).getbbox()  # type: ignore[return-value]


def render_chart(rng: Rng, w: int, h: int, y_axis: bool = True) -> Image.Image:
    """A matplotlib chart of exactly (w, h) pixels on white; ``y_axis=False`` hides its y labels."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    size = float(np.clip(min(w, h) / 22, 5, 10))
    kind = int(rng.integers(4))
    groups = list(rng.choice(_LABELS, size=int(rng.integers(2, 5)), replace=False))
    if kind == 0:  # bar chart with error bars and dots
        means = rng.uniform(1, 10, len(groups))
        colours = [tuple(rng.uniform(0.1, 0.9, 3)) for _ in groups]
        ax.bar(range(len(groups)), means, yerr=means * rng.uniform(0.05, 0.3), color=colours,
               capsize=3, edgecolor="black", linewidth=0.6)  # fmt: skip
        for i, m in enumerate(means):
            ax.scatter(i + rng.normal(0, 0.08, 6), m + rng.normal(0, m * 0.15, 6), s=4, c="k")
        ax.set_xticks(range(len(groups)), groups, fontsize=size, rotation=30 * int(rng.integers(2)))
        if rng.random() < 0.5:
            ax.text(len(groups) - 1, means.max() * 1.25, "**", ha="center", fontsize=size)
    elif kind == 1:  # lines over time
        x = np.arange(int(rng.integers(4, 12)))
        for g in groups:
            ax.errorbar(x, np.cumsum(rng.normal(1, 1, x.size)), yerr=rng.uniform(0.2, 1, x.size),
                        marker="os^d"[int(rng.integers(4))], ms=3, lw=1, capsize=2, label=g)  # fmt: skip
        ax.set_xlabel("Time (weeks)", fontsize=size)
    elif kind == 2:  # scatter with a fit
        xs = rng.uniform(0, 10, 40)
        ys = xs * rng.uniform(0.5, 2) + rng.normal(0, 2, xs.size)
        ax.scatter(xs, ys, s=6)
        ax.plot([0, 10], np.polyval(np.polyfit(xs, ys, 1), [0, 10]), "r-", lw=1)
        ax.set_xlabel("eGFR", fontsize=size)
    else:  # box plot
        ax.boxplot([rng.normal(rng.uniform(2, 8), 1, 20) for _ in groups], widths=0.5)
        ax.set_xticks(range(1, len(groups) + 1), groups, fontsize=size)
    if kind == 1 and rng.random() < 0.6:
        ax.legend(fontsize=size * 0.8, frameon=False)
    ax.tick_params(labelsize=size)
    ax.spines[["top", "right"]].set_visible(rng.random() < 0.3)
    if y_axis:
        ax.set_ylabel(str(rng.choice(_YLABELS)), fontsize=size)
    else:
        ax.tick_params(labelleft=False)
    if rng.random() < 0.3:
        ax.set_title(str(rng.choice(_LABELS)), fontsize=size)
    try:
        fig.tight_layout(pad=0.2)
    except ValueError:  # too small for its labels: keep the default placement
        pass
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    img = Image.open(buf).convert("RGB")
    return img.resize((w, h)) if img.size != (w, h) else img


def _image(
    rng: Rng, pools: dict[str, list[Image.Image]], w: int, h: int, which: str
) -> Image.Image:
    """A crop of a pool image with aspect w/h, resized to (w, h)."""
    pool = pools.get(which) or pools.get("glom") or pools.get("tissue") or []
    if not pool:
        arr = rng.integers(60, 200, (h, w, 3), dtype=np.uint8)
        return Image.fromarray(arr)
    src = pool[int(rng.integers(len(pool)))]
    sw, sh = src.size
    cw = min(sw, int(sh * w / h))
    ch = min(sh, int(cw * h / w))
    cw, ch = max(8, int(cw * rng.uniform(0.6, 1.0))), max(8, int(ch * rng.uniform(0.6, 1.0)))
    x0 = int(rng.integers(0, max(1, sw - cw + 1)))
    y0 = int(rng.integers(0, max(1, sh - ch + 1)))
    return src.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.LANCZOS)


class _Figure:
    """A growing figure: bands are pasted below each other on a white page of fixed width."""

    def __init__(
        self, rng: Rng, width: int, gutter: int, letters: str, font: Any, height: int = 4000
    ) -> None:
        self.rng, self.width, self.gutter, self.letters, self.font = (
            rng,
            width,
            gutter,
            letters,
            font,
        )
        self.page = Image.new("RGB", (width, height), WHITE)
        self.y = 0
        self.boxes: list[Box] = []
        self.lead = font.getbbox("A")[3] + 4 if letters == "outside" else 0

    def paste(self, tile: Image.Image, x: int, y: int, is_chart: bool) -> None:
        x, y = x, y + self.lead
        self.page.paste(tile, (x, y))
        box = _ink_box(tile) if is_chart else (0, 0, tile.size[0], tile.size[1])
        if box is None:
            return
        letter = chr(ord("a") + len(self.boxes) % 26)
        dr = ImageDraw.Draw(self.page)
        if self.letters == "outside":
            dr.text((x, y - self.lead), letter, font=self.font, fill=(0, 0, 0))
        elif self.letters in ("inside", "boxed") and not is_chart:
            lb = self.font.getbbox(letter)
            if self.letters == "boxed":
                dr.rectangle([x, y, x + lb[2] + 5, y + lb[3] + 5], fill=WHITE)
                dr.text((x + 2, y + 1), letter, font=self.font, fill=(0, 0, 0))
            else:
                dr.text((x + 3, y + 2), letter.upper(), font=self.font, fill=WHITE)
        self.boxes.append((x + box[0], y + box[1], x + box[2], y + box[3]))


def _widths(total: int, n: int, gutter: int, weights: Sequence[float]) -> list[tuple[int, int]]:
    usable = total - gutter * (n - 1)
    wsum = float(sum(weights))
    out, x = [], 0.0
    for wt in weights:
        out.append((int(round(x)), int(round(x + usable * wt / wsum))))
        x += usable * wt / wsum + gutter
    return out


def make_heldout_figure(
    rng: Rng,
    pools: dict[str, list[Image.Image]],
    fonts: Any,
    long_side: int = 512,
    scale: float = 1.0,
) -> tuple[Image.Image, list[Box]]:
    """One held-out figure and its panel boxes (x0, y0, x1, y1), exclusive ends.

    ``scale`` > 1 draws the same layout on a page that many times wider (pictures and charts grow
    with it; gutters, letters and labels keep their pixel size), as a figure drawn at print
    resolution: once shrunk to ``long_side`` its panels are smaller, its gutters thinner and its
    letters tinier (a stress set of the diary, section 44). 1 draws the figures of every
    held-out set."""
    width = round(int(rng.choice([540, 620, 720, 800])) * scale)
    gutter = int(rng.choice([0, 2, 4, 6, 8, 12], p=[0.15, 0.15, 0.2, 0.2, 0.15, 0.15]))
    letters = str(rng.choice(["outside", "inside", "boxed", "none"], p=[0.45, 0.25, 0.15, 0.15]))
    font = fonts.get(rng, int(rng.integers(12, 19)), bold=True)
    label_font = fonts.get(rng, int(rng.integers(10, 14)))
    fig = _Figure(rng, width, gutter, letters, font, round(4000 * scale))
    dr = ImageDraw.Draw(fig.page)
    row_labels = rng.random() < 0.25
    x_left = int(label_font.getbbox("Wg")[3] + 6) if row_labels else 0
    inner = width - x_left
    if rng.random() < 0.15:  # a non-compound figure: one image or one chart
        single_w = inner
        h = int(single_w * rng.uniform(0.5, 0.9))
        if rng.random() < 0.5:
            fig.paste(_image(rng, pools, single_w, h, "tissue"), x_left, 0, False)
        else:
            fig.paste(render_chart(rng, single_w, h), x_left, 0, True)
        fig.y = h + fig.lead
    else:
        n_bands = int(rng.choice([1, 2, 3, 4], p=[0.3, 0.35, 0.25, 0.1]))
        if rng.random() < 0.3:  # column titles above the first band
            fig.y = label_font.getbbox("Ag")[3] + 6
        titles_y = fig.y
        for b in range(n_bands):
            kind = str(rng.choice(["images", "charts", "mixed", "block"], p=[0.45, 0.2, 0.2, 0.15]))
            y0 = fig.y
            if kind == "images":
                n = int(rng.integers(2, 7))
                aspect = float(rng.choice([1.0, 1.0, 1.33, 0.75]))
                spans = _widths(inner, n, gutter, [1.0] * n)
                h = int((spans[0][1] - spans[0][0]) / aspect)
                which = "glom" if rng.random() < 0.6 else "tissue"
                for a, c in spans:
                    fig.paste(_image(rng, pools, c - a, h, which), x_left + a, y0, False)
            elif kind == "charts":
                n = int(rng.integers(1, 5))
                shared = n > 1 and rng.random() < 0.4
                spans = _widths(inner, n, 0 if shared else gutter + 6, [1.0] * n)
                h = int(min(inner / n * rng.uniform(0.7, 1.0), 260 * scale))
                for i, (a, c) in enumerate(spans):
                    chart = render_chart(rng, c - a, h, y_axis=not shared or i == 0)
                    fig.paste(chart, x_left + a, y0, True)
            elif kind == "mixed":
                n = int(rng.integers(1, 4))
                spans = _widths(inner, n + 1, gutter, [1.0] * n + [float(rng.uniform(1.0, 1.6))])
                h = spans[0][1] - spans[0][0]
                for i, (a, c) in enumerate(spans):
                    if i < n:
                        fig.paste(_image(rng, pools, c - a, h, "glom"), x_left + a, y0, False)
                    else:
                        fig.paste(render_chart(rng, c - a, h), x_left + a, y0, True)
            else:  # block: a big image and a 2 x k grid of small ones
                k = int(rng.integers(1, 4))
                big_w = int((inner - gutter) * rng.uniform(0.35, 0.55))
                cell = (inner - big_w - gutter - gutter * (k - 1)) // k
                h = 2 * cell + gutter
                fig.paste(_image(rng, pools, big_w, h, "tissue"), x_left, y0, False)
                for r in range(2):
                    for c in range(k):
                        x = x_left + big_w + gutter + c * (cell + gutter)
                        tile = _image(rng, pools, cell, cell, "glom")
                        fig.paste(tile, x, y0 + r * (cell + gutter + fig.lead), False)
                h += fig.lead
            if row_labels:
                text = str(rng.choice(_LABELS))
                tb = label_font.getbbox(text)
                tile = Image.new("RGB", (tb[2] + 2, tb[3] + 2), WHITE)
                ImageDraw.Draw(tile).text((1, 1), text, font=label_font, fill=(0, 0, 0))
                tile = tile.rotate(90, expand=True)
                if tile.size[1] < h:
                    fig.page.paste(tile, (1, y0 + fig.lead + (h - tile.size[1]) // 2))
            if b == 0 and titles_y and kind == "images":
                for a, c in spans:
                    dr.text((x_left + (a + c) // 2, titles_y - 2), str(rng.choice(_LABELS)),
                            font=label_font, fill=(0, 0, 0), anchor="md")  # fmt: skip
            fig.y = y0 + fig.lead + h + max(gutter, 4 if fig.lead else gutter)
    page = fig.page.crop((0, 0, width, fig.y))
    if rng.random() < 0.2:  # a two-line title at the top
        band = Image.new("RGB", (width, 34), WHITE)
        ImageDraw.Draw(band).text((4, 2), "Figure: " + " ".join(rng.choice(_LABELS, 12)) + "\n"
                                  + " ".join(rng.choice(_LABELS, 10)), font=label_font, fill=(0, 0, 0))  # fmt: skip
        full = Image.new("RGB", (width, page.size[1] + 34), WHITE)
        full.paste(band, (0, 0))
        full.paste(page, (0, 34))
        page, fig.boxes = full, [(a, b + 34, c, d + 34) for a, b, c, d in fig.boxes]
    s = long_side / max(page.size)
    size = (max(32, round(page.size[0] * s)), max(32, round(page.size[1] * s)))
    sx, sy = size[0] / page.size[0], size[1] / page.size[1]
    boxes = [
        (round(a * sx), round(b * sy), round(c * sx), round(d * sy)) for a, b, c, d in fig.boxes
    ]
    return page.resize(size, Image.Resampling.LANCZOS), boxes


def refill_layout(
    rng: Rng,
    pools: dict[str, list[Image.Image]],
    fonts: Any,
    size: tuple[int, int],
    panels: Sequence[tuple[Box, str]],
    letter_scale: float = 1.0,
) -> tuple[Image.Image, list[Box]]:
    """A figure of ``size`` (W, H) whose panels sit exactly where a given layout puts them, filled
    with new content, and its panel boxes. ``panels``: (box, kind) with kind "chart" (a matplotlib
    chart; its box is the tight box of its ink) or anything else (a crop of the ``glom`` or
    ``tissue`` pool; its box is where it was pasted). Boxes under 8 px a side are left out. One
    letter style per figure: panel letters in the white space above each panel when it has room,
    inside its top-left corner, or none; ``letter_scale`` scales the letters' size (a figure drawn
    larger than 512 px, to be shrunk). Used to measure separators on real layouts' geometry."""
    w, h = size
    page = Image.new("RGB", (w, h), WHITE)
    dr = ImageDraw.Draw(page)
    font = fonts.get(rng, round(int(rng.integers(10, 15)) * letter_scale), bold=True)
    style = str(rng.choice(["outside", "inside", "none"], p=[0.5, 0.3, 0.2]))
    lead = font.getbbox("A")[3] + 2
    boxes: list[Box] = []
    placed: list[Box] = []
    for (x0, y0, x1, y1), kind in panels:
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        pw, ph = x1 - x0, y1 - y0
        if pw < 8 or ph < 8:
            continue
        if kind == "chart":
            tile = render_chart(rng, pw, ph)
            ink = _ink_box(tile)
            if ink is None:
                continue
            box = (x0 + ink[0], y0 + ink[1], x0 + ink[2], y0 + ink[3])
        else:
            tile = _image(rng, pools, pw, ph, "glom" if rng.random() < 0.6 else "tissue")
            box = (x0, y0, x1, y1)
        page.paste(tile, (x0, y0))
        boxes.append(box)
        placed.append((x0, y0, x1, y1))
    for i, (x0, y0, x1, y1) in enumerate(placed):
        letter = chr(ord("a") + i % 26)
        above = (x0, y0 - lead, x0 + lead, y0)
        free = y0 - lead >= 0 and not any(
            min(above[2], b[2]) > max(above[0], b[0]) and min(above[3], b[3]) > max(above[1], b[1])
            for b in placed
        )
        if style == "outside" and free:
            dr.text((x0, y0 - lead), letter, font=font, fill=(0, 0, 0))
        elif style == "inside" and _dark_corner(page, (x0, y0, x1, y1)):
            dr.text((x0 + 3, y0 + 2), letter.upper(), font=font, fill=WHITE)
    return page, boxes


def _dark_corner(page: Image.Image, box: Box) -> bool:
    """Whether the top-left corner of ``box`` on ``page`` is dark enough for a white letter."""
    x0, y0, x1, y1 = box
    corner = np.asarray(page.crop((x0, y0, min(x1, x0 + 20), min(y1, y0 + 20))))
    return bool(corner.size) and float(corner.mean()) < 180


def heldout_pools(shared: Path) -> tuple[list[Image.Image], list[Image.Image]]:
    """The held-out panel content: centre VUHSK's glomerulus crops and the 12 aidpath PAS tiles."""
    with open(shared / "glomeruli" / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["centre"] == "VUHSK"]
    glom = [Image.open(shared / "glomeruli" / r["image"]).convert("RGB") for r in rows]
    tissue = [
        Image.open(p).convert("RGB") for p in sorted((shared / "aidpath" / "images").glob("*.png"))
    ]
    return glom, tissue


def exsclaim_set(shared: Path) -> tuple[list[Image.Image], list[list[Box]]]:
    """The 14 real exsclaim figures (``shared``/compound_figures/exsclaim) and their panel boxes,
    read as ``glomssl separate`` reads files (:func:`glomssl.data.images.load_rgb`: RGB, the
    file's format kept, so the JPEG ones are known as JPEG)."""
    from glomssl.data.images import load_rgb

    root = shared / "compound_figures" / "exsclaim"
    meta = json.loads((root / "boxes.json").read_text())
    figs = [load_rgb(root / "images" / m["file"]) for m in meta]
    truths = [[(b["x0"], b["y0"], b["x1"], b["y1"]) for b in m["boxes"]] for m in meta]
    return figs, truths


def relayout_set(
    shared: Path, fills: int, first: int = 0
) -> tuple[list[Image.Image], list[list[Box]]]:
    """R: the 14 exsclaim figures' panel layouts (their boxes, "parent" boxes left out), scaled to
    a 512-px long side and filled ``fills`` times each with held-out content (seeds [20261, figure,
    fill] for fill ``first`` .. ``first + fills - 1``): micrographs where exsclaim has micrographs,
    matplotlib charts where it has graphs or illustrations. Real geometry, synthetic content."""
    meta = json.loads((shared / "compound_figures" / "exsclaim" / "boxes.json").read_text())
    glom, tissue = heldout_pools(shared)
    pools, fonts = {"glom": glom, "tissue": tissue}, Fonts()
    figs, truths = [], []
    for i, m in enumerate(meta):
        s = 512 / max(m["width"], m["height"])
        size = (round(m["width"] * s), round(m["height"] * s))
        panels = [
            (
                tuple(round(b[k] * s) for k in ("x0", "y0", "x1", "y1")),
                "chart" if b["classification"] in ("graph", "illustration") else "image",
            )
            for b in m["boxes"]
            if b["classification"] != "parent"
        ]
        for fig, boxes in _refills(
            (20261, i), range(first, first + fills), pools, fonts, size, panels
        ):
            figs.append(fig)
            truths.append(boxes)
    return figs, truths


def _refills(
    key: tuple[int, int],
    fills: range,
    pools: dict[str, list[Image.Image]],
    fonts: Any,
    size: tuple[int, int],
    panels: Sequence[tuple[Box, str]],
) -> list[tuple[Image.Image, list[Box]]]:
    """One layout filled once per fill ``f`` of ``fills`` by :func:`refill_layout`, seed [*key, f]."""
    return [
        refill_layout(np.random.default_rng([*key, f]), pools, fonts, size, panels) for f in fills
    ]


def read_layouts(path: Path) -> list[tuple[str, tuple[int, int], list[Box]]]:
    """Panel layouts from a text file, one figure a line: ``ID NAME N x0,y0,x1,y1 ...`` (lines
    starting with ``#`` are comments). The figure's own size is not recorded there, so it is taken
    as the panels' extent plus the same margin on the far side as on the near side (the smallest
    x0 and y0). Returns (ID, (width, height), boxes)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        ident, _name, n, *rest = line.split()
        boxes: list[Box] = [tuple(int(v) for v in r.split(",")) for r in rest]  # type: ignore[misc]
        if len(boxes) != int(n) or any(b[2] <= b[0] or b[3] <= b[1] for b in boxes):
            raise ValueError(f"{path}: figure {ident} is not N well-formed boxes")
        w = max(b[2] for b in boxes) + min(b[0] for b in boxes)
        h = max(b[3] for b in boxes) + min(b[1] for b in boxes)
        out.append((ident, (w, h), boxes))
    return out


def _shrunk(fig: Image.Image, boxes: list[Box], k: float) -> tuple[Image.Image, list[Box]]:
    """``fig`` shrunk by ``k`` with Lanczos, and its boxes scaled and rounded (under 8 px dropped)."""
    w, h = fig.size
    small = fig.resize((max(1, round(w * k)), max(1, round(h * k))), Image.Resampling.LANCZOS)
    scaled = [(round(b[0] * k), round(b[1] * k), round(b[2] * k), round(b[3] * k)) for b in boxes]
    return small, [b for b in scaled if b[2] - b[0] >= 8 and b[3] - b[1] >= 8]


def layout_file_set(
    path: Path,
    shared: Path,
    fills: int,
    first: int = 0,
    part: str = "all",
    charts: float = 0.0,
    native: int = 0,
    chart_style: str = "",
) -> tuple[list[Image.Image], list[list[Box]]]:
    """B: real biomedical layouts read by :func:`read_layouts`, scaled to a 512-px long side and
    filled ``fills`` times each with held-out pictures (every box a micrograph: the file records
    where a figure's pictures are, not its charts), seeds [20281, figure number, fill] for fill
    ``first`` .. ``first + fills - 1``. ``part``: "odd" or "even" keeps the figures whose numeric ID
    is odd or even (fixed halves: one to look at, one to decide on), "all" keeps every one.
    ``charts`` (0-1, a stress variant): each box is drawn as a matplotlib chart instead with this
    probability, chosen per box and fill with seeds [20282, figure number, fill] (a chart's truth is
    its ink box, as in R); 0 gives exactly the pictures-only set. ``native`` (px, a stress variant):
    each figure is drawn at its layout's own size, its long side capped at this and at least 512,
    its letters scaled with it, then shrunk to a 512-px long side with Lanczos, as a figure made
    for print and shown on the web is; boxes shrink with it and those under 8 px a side are left
    out. 0: drawn at 512 px (the set itself). ``chart_style`` (a stress variant): the charts are
    drawn in this matplotlib style instead of the plain default, e.g. "ggplot" (a pale grey plot
    panel crossed by white grid lines, as ggplot2's default theme draws) or
    "seaborn-v0_8-whitegrid"; "" keeps the plain one."""
    if not 0.0 <= charts <= 1.0:
        raise ValueError(f"charts must be a share in 0-1, got {charts}")
    if chart_style:
        import matplotlib.style

        if chart_style not in matplotlib.style.available:
            raise ValueError(f"chart_style {chart_style!r} is not a matplotlib style")
        with matplotlib.style.context(chart_style):
            return layout_file_set(path, shared, fills, first, part, charts, native)
    glom, tissue = heldout_pools(shared)
    pools, fonts = {"glom": glom, "tissue": tissue}, Fonts()
    figs, truths = [], []
    for ident, (w, h), boxes in read_layouts(path):
        num = int(ident)
        if (part == "odd" and num % 2 == 0) or (part == "even" and num % 2 == 1):
            continue
        side = max(512, min(native, max(w, h))) if native else 512
        s = side / max(w, h)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        panels: list[tuple[Box, str]] = [
            ((round(b[0] * s), round(b[1] * s), round(b[2] * s), round(b[3] * s)), "image")
            for b in boxes
        ]
        for f in range(first, first + fills):
            kinds = panels
            if charts > 0:
                pick = np.random.default_rng([20282, num, f]).random(len(panels)) < charts
                kinds = [(b, "chart" if c else k) for (b, k), c in zip(panels, pick)]
            fig, got = refill_layout(
                np.random.default_rng([20281, num, f]), pools, fonts, size, kinds, side / 512
            )
            if side != 512:
                fig, got = _shrunk(fig, got, 512 / max(size))
            figs.append(fig)
            truths.append(got)
    return figs, truths


def strip_figure(
    rng: Rng, pools: dict[str, list[Image.Image]], fonts: Any
) -> tuple[Image.Image, list[Box]]:
    """One long row or column of 3-20 pictures of one size (side 100-400 px, aspect 0.75-1.33)
    at full resolution: gutters of 1-8% of the side (at least 2 px), a white margin of 0-12 px,
    micrographs or (a quarter of the figures) matplotlib charts, filled by :func:`refill_layout`."""
    n = int(rng.integers(3, 21))
    side = int(rng.integers(100, 401))
    aspect = float(rng.uniform(0.75, 1.33))
    gutter = max(2, round(side * float(rng.uniform(0.01, 0.08))))
    margin = int(rng.integers(0, 13))
    vertical = bool(rng.random() < 0.5)
    kind = "chart" if rng.random() < 0.25 else "image"
    along, across = (side, round(side * aspect)) if vertical else (round(side * aspect), side)
    length = 2 * margin + n * along + (n - 1) * gutter
    panels: list[tuple[Box, str]] = []
    for i in range(n):
        a = margin + i * (along + gutter)
        box = (
            (margin, a, margin + across, a + along)
            if vertical
            else (a, margin, a + along, margin + side)
        )
        panels.append((box, kind))
    size = (across + 2 * margin, length) if vertical else (length, side + 2 * margin)
    return refill_layout(rng, pools, fonts, size, panels)


def strip_set(
    shared: Path, n: int, long_side: int = 0, first: int = 0
) -> tuple[list[Image.Image], list[list[Box]]]:
    """S: ``n`` strips (:func:`strip_figure`, seeds [20271, i] for i from ``first``) at full
    size, or with ``long_side`` > 0 scaled down to that long side (boxes scaled and rounded)."""
    glom, tissue = heldout_pools(shared)
    pools, fonts = {"glom": glom, "tissue": tissue}, Fonts()
    figs, truths = [], []
    for i in range(first, first + n):
        fig, boxes = strip_figure(np.random.default_rng([20271, i]), pools, fonts)
        if long_side > 0 and max(fig.size) > long_side:
            s = long_side / max(fig.size)
            fig = fig.resize(
                (max(1, round(fig.size[0] * s)), max(1, round(fig.size[1] * s))),
                Image.Resampling.LANCZOS,
            )
            boxes = [tuple(round(v * s) for v in b) for b in boxes]  # type: ignore[misc]
        figs.append(fig)
        truths.append(boxes)
    return figs, truths
