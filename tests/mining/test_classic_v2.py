"""The classic splitter: the gutter-colour background (default) and ``--seams`` (1-px gutters, seams of
touching photos).

Each layout below is one that version 1 (``ClassicParams.v1()``) gets wrong; the tests check both, so
deleting a feature fails them.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from glomssl.mining.boxes import iou
from glomssl.mining.classic import (
    ClassicParams,
    background_colour,
    classic_boxes,
    min_gap_for,
)
from glomssl.mining.separate import Separator

Box = tuple[int, int, int, int]
V1 = ClassicParams.v1()
SEAMS = ClassicParams.touching()


def photo(rng: np.random.Generator, w: int, h: int, tone: tuple[int, int, int]) -> Image.Image:
    """A smooth textured picture (blurred noise around ``tone``), like a micrograph at low zoom."""
    noise = rng.normal(0, 60, (h, w, 3)) + np.array(tone)
    img = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))
    return img.filter(ImageFilter.GaussianBlur(2))


TONES = [(200, 120, 190), (120, 60, 140), (230, 170, 200), (90, 90, 90), (170, 100, 120)]


def mosaic(
    rows: int, cols: int, gutter: int, margin: int, bg: tuple[int, int, int], seed: int = 0
) -> tuple[Image.Image, list[Box]]:
    """rows x cols photos of distinct tones, ``gutter`` px apart, ``margin`` px from the edge."""
    rng = np.random.default_rng(seed)
    pw, ph = 110, 90
    w = 2 * margin + cols * pw + (cols - 1) * gutter
    h = 2 * margin + rows * ph + (rows - 1) * gutter
    fig = Image.new("RGB", (w, h), bg)
    boxes = []
    for r in range(rows):
        for c in range(cols):
            x0, y0 = margin + c * (pw + gutter), margin + r * (ph + gutter)
            fig.paste(photo(rng, pw, ph, TONES[(r * cols + c) % len(TONES)]), (x0, y0))
            boxes.append((x0, y0, x0 + pw, y0 + ph))
    return fig, boxes


def exact(pred: list[Box], truth: list[Box], thr: float = 0.95) -> bool:
    return len(pred) == len(truth) and all(max(iou(p, t) for p in pred) >= thr for t in truth)


def split(fig: Image.Image, params: ClassicParams) -> list[Box]:
    return [b for b, _ in Separator("classic", classic=params).split([fig])[0]]


@pytest.mark.parametrize("rows,cols", [(1, 2), (2, 2), (2, 3)])
def test_touching_photos_are_cut_at_their_seams(rows: int, cols: int) -> None:
    fig, truth = mosaic(rows, cols, gutter=0, margin=8, bg=(255, 255, 255), seed=rows * cols)
    assert exact(split(fig, SEAMS), truth), split(fig, SEAMS)
    assert len(split(fig, ClassicParams())) == 1  # whitespace alone sees one block
    assert len(split(fig, V1)) == 1


def test_one_pixel_gutters_between_photos_that_touch_the_edges() -> None:
    fig, truth = mosaic(2, 3, gutter=1, margin=0, bg=(255, 255, 255), seed=3)
    # the border is all picture: version 1 takes a tissue colour for the background
    assert background_colour(np.asarray(fig), V1).min() < 200
    assert background_colour(np.asarray(fig)).min() > 250
    assert exact(split(fig, SEAMS), truth)
    assert exact(split(fig, ClassicParams(min_gap=1)), truth)  # the 1-px gutters do it
    assert not exact(split(fig, ClassicParams()), truth)  # the default needs 2 px
    assert not exact(split(fig, V1), truth)


def test_gutter_colour_background_when_pictures_touch_the_edges() -> None:
    fig, truth = mosaic(2, 3, gutter=4, margin=0, bg=(255, 255, 255), seed=6)
    assert exact(split(fig, ClassicParams()), truth)  # the default
    assert not exact(split(fig, V1), truth)


def test_coloured_gutters() -> None:
    fig, truth = mosaic(2, 2, gutter=5, margin=0, bg=(40, 40, 40), seed=4)
    assert np.allclose(background_colour(np.asarray(fig)), 40, atol=1)
    assert exact(split(fig, ClassicParams()), truth)


def test_one_photo_with_an_edge_inside_stays_whole() -> None:
    """A picture with a sharp straight edge inside (half dark, half pale tissue) is not two panels
    unless the edge is a seam along its whole length; a noisy picture has no seam at all."""
    rng = np.random.default_rng(5)
    fig = Image.new("RGB", (260, 200), (255, 255, 255))
    pic = np.asarray(photo(rng, 220, 160, (200, 120, 190))).copy()
    pic[:, 110:] = np.clip(pic[:, 110:].astype(int) - 25, 0, 255)  # a soft step, not a seam
    fig.paste(Image.fromarray(pic), (20, 20))
    assert len(split(fig, SEAMS)) == 1
    noisy = np.clip(rng.normal(150, 50, (160, 220, 3)), 0, 255).astype(np.uint8)
    fig2 = Image.new("RGB", (260, 200), (255, 255, 255))
    fig2.paste(Image.fromarray(noisy), (20, 20))
    assert len(split(fig2, SEAMS)) == 1


def test_a_chart_is_not_cut_along_its_axis_or_bars() -> None:
    fig = Image.new("RGB", (320, 240), (255, 255, 255))
    dr = ImageDraw.Draw(fig)
    dr.line([(40, 20), (40, 200), (300, 200)], fill=(0, 0, 0), width=2)  # axes
    for i, hgt in enumerate((120, 60, 160, 90)):
        x = 60 + i * 60
        dr.rectangle([x, 200 - hgt, x + 40, 199], fill=(60 + 40 * i, 90, 200 - 30 * i))
    boxes = [b for b, _ in classic_boxes(fig, params=SEAMS)]
    assert len(boxes) == 1, boxes


def framed_charts() -> tuple[Image.Image, list[Box]]:
    """A 512-px figure of two framed charts, 24 px apart, whose tick labels sit 1 px from the frame."""
    fig = Image.new("RGB", (512, 300), (255, 255, 255))
    dr = ImageDraw.Draw(fig)
    boxes = []
    for fx0, fx1 in ((40, 230), (300, 490)):
        fy0, fy1 = 20, 240  # the plot's frame
        dr.rectangle([fx0, fy0, fx1, fy1], outline=(0, 0, 0), width=2)
        for y in range(40, 240, 40):  # y tick labels: small dark blocks, a 1-px gap from the frame
            dr.rectangle([fx0 - 20, y - 4, fx0 - 2, y + 4], fill=(30, 30, 30))
        for x in range(fx0 + 20, fx1, 40):  # x tick labels below the frame
            dr.rectangle([x - 8, fy1 + 2, x + 8, fy1 + 14], fill=(30, 30, 30))
        dr.line([(fx0 + 10, 200), (fx0 + 90, 80), (fx0 + 170, 150)], fill=(200, 40, 40), width=3)
        boxes.append((fx0 - 20, fy0, fx1 + 1, fy1 + 15))
    return fig, boxes


def test_guarded_thin_gutters_cut_photos_but_not_a_chart_from_its_labels() -> None:
    """``thin``: a 1-px gutter counts only between densely inked edges (two pictures), not between a
    chart's frame and its tick labels, which an unguarded 1-px gutter cuts apart."""
    guarded = ClassicParams(thin=0.7)
    fig, truth = mosaic(2, 3, gutter=1, margin=10, bg=(255, 255, 255), seed=4)
    fig = fig.resize((512, round(fig.height * 512 / fig.width)), Image.NEAREST)
    scale = 512 / (3 * 110 + 2 + 20)
    truth = [tuple(round(v * scale) for v in b) for b in truth]
    assert min_gap_for((fig.height, fig.width)) == 2
    assert not exact(split(fig, ClassicParams()), truth, 0.8)  # 1 px is below the default gutter
    assert exact(split(fig, guarded), truth, 0.8)
    charts, whole = framed_charts()
    assert exact(split(charts, guarded), whole)
    assert exact(split(charts, ClassicParams()), whole)
    assert not exact(split(charts, ClassicParams(min_gap=1)), whole)  # labels cut off


def test_strip_gutters_follow_the_short_side() -> None:
    """``strip`` (the default since version 3): in a long row (or column) at full resolution the
    gutter width follows the pictures' size, the strip's short side, not its length; grids and
    512-px figures keep the long-side width (section 27 of the diary)."""
    old, strip = ClassicParams(strip=0), ClassicParams()
    assert strip.strip == 32 and V1.strip == 0
    assert min_gap_for((190, 3990), old) == 16 and min_gap_for((190, 3990)) == 6
    assert min_gap_for((3990, 190)) == 6  # a column: the same
    for shape in [
        (512, 300),
        (60, 512),
        (24, 639),
        (660, 685),
        (100, 685),
        (700, 1024),
        (2000, 1500),
    ]:
        assert min_gap_for(shape) == min_gap_for(shape, old)  # long/short <= 8 or long < 640
    for rows, cols in [(1, 20), (20, 1)]:
        fig, truth = mosaic(rows, cols, gutter=6, margin=4, bg=(255, 255, 255), seed=rows)
        assert min_gap_for((fig.height, fig.width), old) in (8, 9)  # 1,922 or 2,322 px long
        assert not exact(split(fig, old), truth)  # 6-px gutters are below 1/256 of the length
        assert exact(split(fig, strip), truth)


def test_version_one_settings_are_kept() -> None:
    assert min_gap_for((512, 300), V1) == 2
    assert min_gap_for((1024, 700), V1) == 4
    assert min_gap_for((1024, 700)) == 4  # the default keeps version 1's gutter width
    assert min_gap_for((1024, 700), SEAMS) == 1
    assert V1.seam == 0.0 and V1.background == "border"
    assert ClassicParams().seam == 0.0  # seams are opt-in (--seams)
    assert ClassicParams().thin == 0.0  # guarded thin gutters are not the default (section 8)


def test_cli_seams_option(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from click.testing import CliRunner

    from glomssl.cli import cli

    figs = tmp_path / "figs"
    figs.mkdir()
    mosaic(2, 2, gutter=0, margin=8, bg=(255, 255, 255), seed=7)[0].save(figs / "m.png")

    def run(out: str, *extra: str) -> tuple[int, str]:
        args = ["separate", "--input", str(figs), "--out", str(tmp_path / out), "--quiet"]
        res = CliRunner().invoke(cli, [*args, "--method", "classic", *extra])
        return res.exit_code, res.output

    code, out = run("plain")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["panels"] == 1
    code, out = run("seams", "--seams")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["panels"] == 4
    code, out = run("seams")  # the same folder without --seams: refused, never mixed
    assert code == 2 and "other settings" in out
