"""Guided's ``valley`` setting (diary, section 80): after the hairline cut, each box is cut once
more with the gutters that a shrink from print size blended with the pictures beside them read as
blank (runs of at most three lines far paler than the lines beside them), unless a part is a block
of flat colour such as a chart's bar."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from test_dominant_merge import check_bad_value_refused, check_recorded_only_when_set
from test_hairline_cuts import hairline_figure
from test_ringing import one_layout

from glomssl.mining.boxes import Box, iou
from glomssl.mining.classic import VALLEY_FLANK, Valleys, ink_mask, off_level, valley_lines
from glomssl.mining.hybrid import flat_colour, guided_boxes
from glomssl.mining.separate import Separator, tuned_settings

WHITE = np.array([255.0, 255.0, 255.0])


def blended_row(boxes: list[Box], shape: tuple[int, int] = (160, 240)) -> np.ndarray:
    """Textured pictures in ``boxes`` (two pixels apart), each two-pixel gutter filled the way a
    shrink leaves it: three parts white to one part of the picture column beside it, so the
    gutter holds ink along its whole length (no plain reading calls it blank), yet it is far
    paler than the pictures."""
    arr = hairline_figure(boxes, shape).copy()
    for (_, y0, x1, y1), (x0n, _, _, _) in zip(boxes, boxes[1:]):
        for x in range(x1, x0n):
            side = x1 - 1 if x == x1 else x0n
            arr[y0:y1, x] = np.round(0.75 * 255 + 0.25 * arr[y0:y1, side]).astype(np.uint8)
    return arr


PAIR: list[Box] = [(20, 20, 100, 140), (102, 20, 182, 140)]
TRIO: list[Box] = [(10, 20, 70, 140), (72, 20, 132, 140), (134, 20, 194, 140)]


def guided(arr: np.ndarray, valley: float) -> list[Box]:
    """Guided with the shipped settings, ``valley`` as given, no detector boxes: only the
    hairline cuts can part pictures this close."""
    params = dataclasses.replace(tuned_settings("guided")[1], valley=valley)
    return sorted(b for b, _ in guided_boxes(arr, ink_mask(arr), [], 8, params))


def found(boxes: list[Box], truth: list[Box]) -> int:
    return sum(any(iou(t, b) >= 0.9 for b in boxes) for t in truth)


def test_a_valley_between_dark_lines_is_read() -> None:
    level = np.array([100, 110, 20, 25, 105, 100, 100, 60, 100, 90], dtype=float)
    got = valley_lines(level, 0.35)
    assert got.tolist() == [False, False, True, True, False, False, False, False, False, False]
    # the line at 60 is paler than its neighbours, but not 0.35 times as pale: a picture's own
    assert not valley_lines(level, 0.5)[7] and valley_lines(level, 0.65)[7]


def test_a_valley_needs_dark_lines_on_both_sides() -> None:
    """Beside lines under VALLEY_FLANK (a chart's white plot, bare glass) no valley is read, nor
    at the ends, where one side is missing, nor for a run wider than the ridge's three lines plus
    the reach."""
    pale = VALLEY_FLANK - 1
    assert not valley_lines(np.array([pale, pale, 5, pale, pale]), 0.35).any()
    assert not valley_lines(np.array([5, 100, 100, 100]), 0.35).any()
    assert not valley_lines(np.array([100, 5, 5, 5, 5, 5, 5, 100]), 0.35).any()
    assert valley_lines(np.array([100, 5, 5, 5, 100]), 0.35)[1:4].all()


def test_short_lines_are_never_valleys() -> None:
    """Across a lane narrower than 20 px, a line's mean is noise: no valley is read there."""
    arr = blended_row(PAIR)
    valleys = Valleys.of(arr, WHITE, 0.35)
    counts = np.ones(200, dtype=np.int64)
    columns = valleys.blank((20, 20, 182, 140), counts[:162], 0)
    assert columns[80:82].all() and columns.sum() == 2  # the two gutter columns, nothing else
    short = valleys.blank((20, 20, 182, 39), counts[:162], 0)  # columns 19 px long
    assert not short.any()


def test_off_level_is_the_largest_channel_difference() -> None:
    arr = np.array([[[250, 200, 255], [0, 255, 255]]], dtype=np.uint8)
    assert off_level(arr, np.array([255, 255, 255])).tolist() == [[55, 255]]
    assert off_level(arr, np.array([250, 250, 250])).tolist() == [[50, 250]]


def test_pictures_behind_a_blended_gutter_come_apart() -> None:
    arr = blended_row(PAIR)
    whole = guided(arr, 0.0)
    assert len(whole) == 1  # the gutter holds ink: the hairline cut sees no blank line
    assert found(guided(arr, 0.35), PAIR) == 2


def test_a_part_of_an_earlier_cut_is_cut_again() -> None:
    """Three pictures, the second gutter blank and the first blended: the blank gutter parts the
    row in two, and the pair left of it is cut again at its valley."""
    arr = blended_row(TRIO)
    arr[20:140, 132:134] = 255  # the second gutter blank
    assert guided(arr, 0.0) == [(10, 20, 132, 140), (134, 20, 194, 140)]
    assert found(guided(arr, 0.35), TRIO) == 3


def test_bars_stay_one_chart() -> None:
    """Two bars of flat colour behind a blended gutter: the valley is there, but a part of flat
    colour is a chart's bar, not a picture, so nothing is cut."""
    arr = np.full((160, 240, 3), 255, np.uint8)
    arr[20:140, 20:100] = (40, 90, 170)
    arr[20:140, 102:182] = (170, 60, 60)
    arr[20:140, 100:102] = (220, 220, 235)  # pale, but ink
    arr[60:62, 20:182] = 0  # a grid line: the bars fail no other test of the hairline cut
    arr[100:102, 20:182] = 0
    assert len(guided(arr, 0.35)) == 1


def test_flat_colour_sees_a_bar_not_a_picture() -> None:
    pic = hairline_figure(PAIR)
    level = off_level(pic, WHITE)
    assert not flat_colour(pic, level, PAIR[0])
    bar = np.full((40, 40, 3), 255, np.uint8)
    rng = np.random.default_rng(0)
    # a colour on a bin edge (128), blurred by JPEG-like noise: the offset grid still sees one bin
    bar[5:35, 5:35] = np.clip(128 + rng.integers(-3, 4, (30, 30, 3)), 0, 255)
    level = off_level(bar, WHITE)
    assert flat_colour(bar, level, (5, 5, 35, 35))
    empty = np.full((40, 40, 3), 255, np.uint8)  # no ink at all: nothing to stand on
    assert flat_colour(empty, off_level(empty, WHITE), (5, 5, 35, 35))


def test_the_shipped_default_reads_valleys() -> None:
    assert tuned_settings("guided")[1].valley == 0.35  # diary 80: adopted


def test_valley_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, blended_row(PAIR), "valley", 0.35)


@pytest.mark.parametrize("bad", [math.nan, -0.1, 1.5])
def test_a_bad_valley_in_the_sidecar_is_refused(tmp_path: Path, bad: float) -> None:
    check_bad_value_refused(tmp_path, "valley", bad)


@pytest.mark.realdata
def test_real_pictures_shrunk_from_print_size_come_apart(shared_data: Path, tmp_path: Path) -> None:
    """B-odd's layout 0087 (fill 0; a looking set) drawn at its own size and shrunk to 512 px, as
    PNG: two of its seven pictures sit two pixels apart, and the shrink blended that gutter with
    both. Without the setting the pair is one box (5 of 7 found when this test was written); with
    it all seven are found, with no false panel."""
    from glomssl.mining.synth.heldout import layout_file_set

    figs, truths = layout_file_set(
        one_layout(tmp_path, "0087"), shared_data, 1, 0, "odd", 0.0, 2600
    )
    assert len(truths[0]) == 7
    found = {}
    for on in (0.0, 0.35):
        out = [b for b, _ in Separator("guided", hybrid={"valley": on}).split(figs)[0]]
        found[on] = sum(any(iou(t, b) >= 0.5 for b in out) for t in truths[0])
        if on:
            assert len(out) == 7
    assert found[0.0] <= 6 and found[0.35] == 7
