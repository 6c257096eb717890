"""Guided's ``strokes`` and ``text_run`` settings (diary, sections 68-69; shipped since section
69). ``strokes``: where exactly one region a detector box holds could stand as a panel and it is a
chart's plot framed by its axes, the small pieces beside it (a small chart's tick labels, too thick
to be section 67's label strips) are no rivals in the ``dominant`` test. ``text_run``: a small box
that a straight line of ink crosses is no line of text."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_dominant_merge import check_bad_value_refused, check_recorded_only_when_set

from glomssl.mining.boxes import iou
from glomssl.mining.classic import ink_mask
from glomssl.mining.hybrid import _longest_run, guided_boxes, plot_frame, text_line
from glomssl.mining.separate import Separator, tuned_settings

Box = tuple[int, int, int, int]
INK = (0, 0, 0)


def thick_label_chart(axes: bool, w: int = 14, letters: bool = False) -> tuple[np.ndarray, Box]:
    """A small chart on a 400-px figure (size limit 12 px): a ``w`` x 34 px plot (a diagonal line,
    with or without its L of axes), a y label and tick labels as 8-px blocks (more than half the
    plot's width, so no label strips, and under the size limit) and two x tick labels. The blocks
    together outweigh the plot. With ``letters`` each block is drawn as upright strokes 1 px apart
    (letters' stems) instead of solid. Returns the figure and the chart's box."""
    img = Image.new("RGB", (400, 400), "white")
    dr = ImageDraw.Draw(img)

    def block(x0: int, y0: int, x1: int, y1: int) -> None:
        if not letters:
            dr.rectangle([x0, y0, x1, y1], fill=INK)
            return
        for x in range(x0, x1 + 1, 2):
            dr.line([(x, y0), (x, y1)], fill=INK)

    px0, py0, h = 60, 40, 34
    for y in range(py0 + 1, py0 + h - 8, 11):  # the y label's pieces
        block(34, y, 42, y + 7)
    for y in range(py0, py0 + h - 6, 12):  # tick labels
        block(48, y, 55, y + 7)
    if axes:
        dr.line([(px0, py0), (px0, py0 + h), (px0 + w, py0 + h)], fill=INK, width=2)
    dr.line([(px0 + 3, py0 + h - 2), (px0 + w, py0)], fill=(30, 60, 200), width=2)
    for x in range(px0 - 2, px0 + w, 8):  # x tick labels
        block(x, py0 + h + 7, x + 5, py0 + h + 13)
    return np.asarray(img), (34, 40, px0 + w + 1, py0 + h + 14)


def _guided(arr: np.ndarray, box: Box, strokes: float, small: float = 0.0) -> list[Box]:
    """Guided with the shipped settings, ``strokes`` and ``plot_small`` as given, and one confident
    detector box a little larger than ``box`` (the size floor of 8 px, as the separator passes
    it)."""
    params = dataclasses.replace(tuned_settings("guided")[1], strokes=strokes, plot_small=small)
    det = (box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2)
    return [b for b, _ in guided_boxes(arr, ink_mask(arr), [(det, 0.9)], 8, params)]


def test_thick_tick_labels_join_a_small_plot() -> None:
    arr, chart = thick_label_chart(axes=True)
    off = _guided(arr, chart, 0.0)
    assert max(iou(b, chart) for b in off) < 0.5  # the plot alone: the labels were rivals
    on = _guided(arr, chart, 0.5)
    assert len(on) == 1 and iou(on[0], chart) > 0.95


def test_without_an_axis_the_pieces_stay_rivals() -> None:
    """The same pieces with no axis: the plot is no framed plot, so nothing joins."""
    arr, chart = thick_label_chart(axes=False)
    for strokes in (0.0, 0.5):
        out = _guided(arr, chart, strokes)
        assert max((iou(b, chart) for b in out), default=0.0) < 0.5, strokes


def test_a_region_reaching_into_the_joined_box_stops_it() -> None:
    """A picture below-left of the chart reaches 2 px into the box the pieces would join into (a
    detector box on part of something larger): nothing joins."""
    arr, chart = thick_label_chart(axes=True)
    arr = arr.copy()
    rng = np.random.default_rng(0)
    arr[80:130, 4:36] = rng.integers(40, 160, (50, 32, 3))
    out = _guided(arr, chart, 0.5)
    assert max(iou(b, chart) for b in out) < 0.5
    assert any(iou(b, (4, 80, 36, 130)) > 0.9 for b in out)  # the picture is still a panel


def test_the_longest_run() -> None:
    mask = np.zeros((20, 30), bool)
    mask[3, 2:9] = True  # 7 along a row
    mask[5:16, 20] = True  # 11 down a column
    mask[2:12, 25] = True
    mask[13:19, 25] = True  # a column broken in two: 10 at most
    assert _longest_run(mask) == 11
    assert _longest_run(np.zeros((0, 5), bool)) == 0
    assert _longest_run(np.eye(9, dtype=bool)) == 1  # a diagonal has no run


def test_a_plot_framed_by_axes() -> None:
    """An L of axes or a whole frame makes a plot; one axis alone, a filled picture, tissue on
    glass and a line of letters do not."""
    params = dataclasses.replace(tuned_settings("guided")[1], strokes=0.5)
    img = Image.new("RGB", (300, 200), "white")
    dr = ImageDraw.Draw(img)
    dr.line([(11, 10), (11, 49), (50, 49)], fill=INK)  # an L of axes, box (10, 10, 51, 51)
    dr.line([(71, 48), (110, 48)], fill=INK)  # the x axis alone, box (70, 10, 111, 51)
    dr.line([(75, 40), (105, 15)], fill=INK)
    dr.rectangle([131, 11, 169, 49], outline=INK)  # a frame, box (130, 10, 171, 51)
    rng = np.random.default_rng(1)
    arr = np.asarray(img).copy()
    arr[110:150, 10:50] = rng.integers(40, 160, (40, 40, 3))  # a picture
    for _ in range(12):  # round tissue pieces on glass, box (70, 110, 111, 151)
        cx, cy = rng.integers(75, 106), rng.integers(115, 146)
        yy, xx = np.ogrid[:200, :300]
        arr[(yy - cy) ** 2 + (xx - cx) ** 2 <= 9] = (150, 60, 120)
    img = Image.fromarray(arr)
    dr = ImageDraw.Draw(img)
    for k in range(6):  # letters in a row, box (130, 120, 171, 131)
        dr.rectangle([131 + 7 * k, 121, 135 + 7 * k, 129], fill=INK)
    arr = np.asarray(img)
    ink = ink_mask(arr)
    assert plot_frame(arr, ink, (10, 10, 51, 51), params)
    assert plot_frame(arr, ink, (130, 10, 171, 51), params)
    assert not plot_frame(arr, ink, (70, 10, 111, 51), params)
    assert not plot_frame(arr, ink, (10, 110, 50, 150), params)
    assert not plot_frame(arr, ink, (70, 110, 111, 151), params)
    assert not plot_frame(arr, ink, (130, 120, 171, 131), params)
    short = dataclasses.replace(params, strokes=1.0)  # axes 40 of 41 px: under the whole side
    assert not plot_frame(arr, ink, (10, 10, 51, 51), short)


def test_plot_small_finds_axes_behind_outward_ticks() -> None:
    """Tick marks 5 px long drawn outward set a 22-px plot's y axis 5 px in from its region's left
    edge, outside the quarter band (5 px) but inside a third (7 px)."""
    img = Image.new("RGB", (100, 100), "white")
    dr = ImageDraw.Draw(img)
    dr.line([(15, 10), (15, 49), (31, 49)], fill=INK)  # the axes, region (10, 10, 32, 55)
    for y in (12, 25, 38):
        dr.line([(10, y), (14, y)], fill=INK)  # y ticks, outward
    for x in (20, 28):
        dr.line([(x, 50), (x, 54)], fill=INK)  # x ticks, outward
    arr = np.asarray(img)
    base = tuned_settings("guided")[1]
    box: Box = (10, 10, 32, 55)
    assert not plot_frame(arr, ink_mask(arr), box, dataclasses.replace(base, plot_small=0.0))
    assert plot_frame(arr, ink_mask(arr), box, dataclasses.replace(base, plot_small=1.0))


def test_plot_small_lets_a_plot_under_the_size_limit_stand() -> None:
    """The thick-label chart with a plot 10 px wide, under the figure's size limit of 12 px, and
    its labels drawn as letters' stems: no member can stand, so without ``plot_small`` the chart is
    lost; with it the framed plot stands and its tick labels join it. Without axes nothing joins
    either way. (Solid blocks 8 px across would count as framed too: see section 70.)"""
    arr, chart = thick_label_chart(axes=True, w=10, letters=True)
    off = _guided(arr, chart, 0.5)
    assert max((iou(b, chart) for b in off), default=0.0) < 0.5
    on = _guided(arr, chart, 0.5, small=1.0)
    assert len(on) == 1 and iou(on[0], chart) > 0.95
    arr, chart = thick_label_chart(axes=False, w=10, letters=True)
    bare = _guided(arr, chart, 0.5, small=1.0)
    assert max((iou(b, chart) for b in bare), default=0.0) < 0.5


def _figure_with(draw: object) -> tuple[np.ndarray, np.ndarray]:
    img = Image.new("RGB", (512, 512), "white")
    draw(ImageDraw.Draw(img))  # type: ignore[operator]
    arr = np.asarray(img)
    ink = ink_mask(arr)
    return ink, ink


def test_text_run_keeps_a_square_chart_and_drops_a_rotated_word() -> None:
    """A sparse 50-px chart box whose axes (27 px each) are one L spanning half its long side is
    text by section 61's stroke test; with ``text_run`` 0.4 its axis keeps it. A word written at 30
    degrees (blocks on a slope) has no straight line and stays text."""
    on = tuned_settings("guided")[1]
    base = dataclasses.replace(on, text_run=0.0)
    chart: Box = (100, 100, 150, 150)

    def draw_chart(dr: ImageDraw.ImageDraw) -> None:
        dr.line([(120, 110), (120, 137), (147, 137)], fill=INK, width=1)
        for y in (112, 122, 132):
            dr.rectangle([104, y, 108, y + 3], fill=INK)  # tick labels
        for x, y in ((125, 128), (131, 121), (138, 115), (144, 112)):
            dr.rectangle([x, y, x + 1, y + 1], fill=(30, 60, 200))  # dots

    ink, pale = _figure_with(draw_chart)
    assert text_line(ink, pale, chart, base)
    assert not text_line(ink, pale, chart, on)

    word: Box = (300, 300, 348, 330)

    def draw_word(dr: ImageDraw.ImageDraw) -> None:
        for k in range(8):  # letters climbing to the right
            x, y = 301 + 6 * k, 324 - 3 * k
            dr.polygon([(x, y + 2), (x + 2, y), (x + 4, y + 2), (x + 2, y + 4)], fill=INK)

    ink, pale = _figure_with(draw_word)
    assert text_line(ink, pale, word, base)
    assert text_line(ink, pale, word, on)


def test_the_shipped_default_sets_them() -> None:
    """Sections 69 and 70's fresh runs cleared every bar: all three ship, at the values measured."""
    hp = Separator("guided").hybrid
    assert hp.strokes == 0.5 and hp.text_run == 0.4 and hp.plot_small == 1.0


def test_strokes_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, thick_label_chart(True)[0], "strokes", 0.5)


def test_plot_small_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, thick_label_chart(True)[0], "plot_small", 1.0)


def test_text_run_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, thick_label_chart(True)[0], "text_run", 0.4)


@pytest.mark.parametrize("key", ["strokes", "text_run", "plot_small"])
@pytest.mark.parametrize("bad", [math.nan, -1.0, 1.5])
def test_a_bad_value_in_the_sidecar_is_refused(tmp_path: Path, key: str, bad: float) -> None:
    check_bad_value_refused(tmp_path, key, bad)
