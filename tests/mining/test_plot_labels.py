"""Guided's ``plot_labels`` setting (diary, section 73): a returned box that is a chart's plot, with
its axes at the bottom left, grows over the labels that whitespace cut off (tick labels and the y
title to its left, tick labels and the x title under it), and over nothing else."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_dominant_merge import check_bad_value_refused, check_recorded_only_when_set

from glomssl.mining.boxes import Box, Scored, iou
from glomssl.mining.classic import ink_mask
from glomssl.mining.hybrid import HybridParams, axes_corner, join_plot_labels
from glomssl.mining.separate import Separator, tuned_settings

INK = (0, 0, 0)
PLOT: Box = (100, 100, 161, 161)  # the plot's box: axes at its left and bottom
LEFT_LABELS: Box = (91, 104, 97, 158)  # tick labels, 3 px left of the y axis
TITLE: Box = (82, 112, 88, 150)  # the y title, 3 px beyond them
BELOW: Box = (102, 164, 160, 170)  # tick labels, 3 px under the x axis
LETTER: Box = (92, 86, 98, 96)  # a panel letter above the chart, 2 px left of the plot


def chart_figure(axes: bool = True) -> np.ndarray:
    """A 300 x 260 figure with one small chart whose labels whitespace parts from its plot, its
    panel letter, and a textured picture to its right."""
    img = Image.new("RGB", (300, 260), "white")
    dr = ImageDraw.Draw(img)
    x0, y0, x1, y1 = PLOT
    if axes:
        dr.line([(x0, y0), (x0, y1 - 1)], fill=INK, width=2)
        dr.line([(x0, y1 - 2), (x1 - 1, y1 - 2)], fill=INK, width=2)
    for k in range(10):  # the data
        x, y = x0 + 6 + 5 * k, y1 - 10 - 4 * k
        dr.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(30, 90, 200))
    for y in range(LEFT_LABELS[1], LEFT_LABELS[3] - 4, 12):  # tick labels: short strokes
        dr.rectangle([LEFT_LABELS[0], y, LEFT_LABELS[2] - 1, y + 4], fill=INK)
    for y in range(TITLE[1], TITLE[3] - 3, 7):  # the title's letters, rotated
        dr.rectangle([TITLE[0], y, TITLE[2] - 1, y + 4], fill=INK)
    for x in range(BELOW[0], BELOW[2] - 5, 14):
        dr.rectangle([x, BELOW[1], x + 5, BELOW[3] - 1], fill=INK)
    dr.rectangle([LETTER[0], LETTER[1], LETTER[2] - 1, LETTER[3] - 1], fill=INK)
    arr = np.asarray(img).copy()
    rng = np.random.default_rng(2)
    arr[90:200, 190:290] = rng.integers(40, 210, (110, 100, 3), dtype=np.uint8)
    return arr


def _params(share: float = 0.02, strokes: float = 0.5) -> HybridParams:
    return dataclasses.replace(tuned_settings("guided")[1], plot_labels=share, strokes=strokes)


PICTURE: Box = (190, 90, 290, 200)


def _join(arr: np.ndarray, boxes: list[Box], regions: list[Box], params: HybridParams) -> list[Box]:
    scored: list[Scored] = [(b, 0.9) for b in boxes]
    out = join_plot_labels(arr, ink_mask(arr), scored, lambda: regions, params)
    return [b for b, _ in out]


def test_a_plot_takes_in_its_labels_and_title() -> None:
    arr = chart_figure()
    assert axes_corner(arr, ink_mask(arr), PLOT, _params())
    out = _join(arr, [PLOT, PICTURE], [LEFT_LABELS, TITLE, BELOW, LETTER], _params())
    assert out[0] == (TITLE[0], PLOT[1], PLOT[2], BELOW[3])  # labels, title and ticks below
    assert out[1] == PICTURE  # no plot: unchanged


def test_the_letter_above_and_far_regions_stay_out() -> None:
    arr = chart_figure()
    out = _join(arr, [PLOT], [LETTER], _params())
    assert out == [PLOT]
    tight = _params(share=2 / 300)  # 2 px: the labels 3 px away are too far
    assert _join(arr, [PLOT], [LEFT_LABELS, BELOW], tight) == [PLOT]


def test_regions_other_boxes_touch_or_reach_stay_out() -> None:
    arr = chart_figure()
    held = (89, 100, 98, 160)  # a returned box holding the tick labels
    out = _join(arr, [PLOT, held], [LEFT_LABELS, BELOW], _params())
    assert out[0] == (PLOT[0], PLOT[1], PLOT[2], BELOW[3])  # only the ticks below
    near = (160, 167, 190, 200)  # clear of the ticks, but the grown box would reach into it
    assert _join(arr, [PLOT, near], [BELOW], _params())[0] == PLOT
    assert _join(arr, [PLOT], [BELOW], _params())[0] != PLOT  # without it, the plot grows


def test_no_axes_no_growth_and_off_by_default() -> None:
    bare = chart_figure(axes=False)
    assert not axes_corner(bare, ink_mask(bare), PLOT, _params())
    assert _join(bare, [PLOT], [LEFT_LABELS, BELOW], _params()) == [PLOT]
    arr = chart_figure()
    assert _join(arr, [PLOT], [LEFT_LABELS, BELOW], _params(share=0.0)) == [PLOT]
    assert _join(arr, [PLOT], [LEFT_LABELS, BELOW], _params(strokes=0.0)) == [PLOT]


def test_a_picture_beside_is_not_a_label() -> None:
    arr = chart_figure()
    rng = np.random.default_rng(8)
    arr[110:150, 84:97] = rng.integers(40, 210, (40, 13, 3), dtype=np.uint8)
    out = _join(arr, [PLOT], [(84, 110, 97, 150)], _params())
    assert out == [PLOT]


def test_the_separator_returns_the_whole_chart() -> None:
    arr = chart_figure()
    whole = (TITLE[0], PLOT[1], PLOT[2], BELOW[3])
    on = Separator("guided", hybrid={"plot_labels": 0.02}).split([Image.fromarray(arr)])[0]
    assert max(iou(b, whole) for b, _ in on) > 0.95
    off = Separator("guided", hybrid={"plot_labels": 0.0}).split([Image.fromarray(arr)])[0]
    assert max(iou(b, whole) for b, _ in off) < max(iou(b, whole) for b, _ in on)


def test_the_shipped_default_sets_it() -> None:
    """Section 73's fresh runs cleared every bar: plot_labels 0.012 ships."""
    assert Separator("guided").hybrid.plot_labels == 0.012
    arr = chart_figure()
    whole = (TITLE[0], PLOT[1], PLOT[2], BELOW[3])
    default = Separator("auto").split([Image.fromarray(arr)])[0]
    assert max(iou(b, whole) for b, _ in default) > 0.95


def test_plot_labels_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, chart_figure(), "plot_labels", 0.012)


@pytest.mark.parametrize("bad", [math.nan, -1.0, 1.5])
def test_a_bad_plot_labels_in_the_sidecar_is_refused(tmp_path: Path, bad: float) -> None:
    check_bad_value_refused(tmp_path, "plot_labels", bad)
