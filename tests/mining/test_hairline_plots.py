"""Guided's ``hairline_plots`` setting (diary, section 79): the hairline cut parts a row of pictures
behind one-pixel gutters with a chart's plot among them (axes at its bottom left), where the picture
test alone kept the whole row as one panel; a chart on its own, or a row where charts are the
majority, is not cut."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_dominant_merge import check_bad_value_refused, check_recorded_only_when_set
from test_hairline_cuts import hairline_figure
from test_ringing import one_layout

from glomssl.mining.boxes import Box, iou
from glomssl.mining.classic import ink_mask
from glomssl.mining.hybrid import _hairline_parts, guided_boxes
from glomssl.mining.separate import Separator, tuned_settings

# a row of four 40 x 120 px lanes one pixel apart: pictures, then a chart in the third
ROW: list[Box] = [(20, 20, 60, 140), (61, 20, 101, 140), (102, 20, 142, 140), (143, 20, 183, 140)]


def draw_chart(arr: np.ndarray, box: Box) -> None:
    """A line chart filling ``box``: white, with its y axis down the left edge and its x axis
    along the whole bottom edge (so no blank column crosses it, and the gutters beside it stay one
    pixel wide), and a rising line of dots."""
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = 255
    arr[y0:y1, x0 : x0 + 2] = 0  # y axis
    arr[y1 - 2 : y1, x0:x1] = 0  # x axis
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    for k in range(6):
        x, y = x0 + 6 + 5 * k, y1 - 10 - 15 * k
        draw.rectangle([x, y, x + 2, y + 2], fill=(30, 100, 200))
    arr[:] = np.asarray(img)


def row(charts: tuple[int, ...]) -> np.ndarray:
    arr = hairline_figure(ROW, (160, 200)).copy()
    for k in charts:
        draw_chart(arr, ROW[k])
    return arr


def cut(arr: np.ndarray, on: float) -> list[Box]:
    """Guided with the shipped settings, ``hairline_plots`` as given, no detector boxes: only the
    hairline cut can part lanes one pixel apart."""
    params = dataclasses.replace(tuned_settings("guided")[1], hairline_plots=on)
    return sorted(b for b, _ in guided_boxes(arr, ink_mask(arr), [], 8, params))


def found(boxes: list[Box]) -> int:
    return sum(any(iou(t, b) >= 0.9 for b in boxes) for t in ROW)


def test_pictures_alone_are_cut_either_way() -> None:
    arr = row(())
    assert found(cut(arr, 0.0)) == 4 and found(cut(arr, 1.0)) == 4


def test_a_row_with_a_chart_among_pictures_comes_apart() -> None:
    arr = row((2,))
    assert len(cut(arr, 0.0)) == 1  # the chart fails the picture test: the row stays whole
    assert found(cut(arr, 1.0)) == 4


def test_a_row_of_mostly_charts_stays_whole() -> None:
    """Three charts and one picture: under half are pictures, so the cut is refused."""
    arr = row((0, 1, 2))
    assert len(cut(arr, 1.0)) == 1


def test_a_part_that_is_neither_picture_nor_plot_keeps_the_row_whole() -> None:
    """A lane of flat colour (a legend key, a bar) is no plot: the row is not cut."""
    arr = row(())
    x0, y0, x1, y1 = ROW[2]
    arr[y0:y1, x0:x1] = (60, 90, 160)
    assert len(cut(arr, 1.0)) == 1


def test_the_part_test_asks_for_axes() -> None:
    """The parts' test itself: the chart's lane passes with its axes, and fails once they are
    taken out (its dots alone: a lane of specks or text), as does a lane of flat colour."""
    params = dataclasses.replace(tuned_settings("guided")[1], hairline_plots=1.0)
    arr = row((2,))
    assert _hairline_parts(arr, ink_mask(arr), ROW, params)
    x0, y0, x1, y1 = ROW[2]
    bare = arr.copy()
    bare[y0:y1, x0 : x0 + 2] = 255
    bare[y1 - 2 : y1, x0:x1] = 255
    assert not _hairline_parts(bare, ink_mask(bare), ROW, params)
    flat = row(())
    flat[y0:y1, x0:x1] = (60, 90, 160)
    assert not _hairline_parts(flat, ink_mask(flat), ROW, params)
    off = dataclasses.replace(params, hairline_plots=0.0)
    assert not _hairline_parts(arr, ink_mask(arr), ROW, off)


def test_the_shipped_default_cuts_such_rows() -> None:
    assert tuned_settings("guided")[1].hairline_plots == 1.0  # diary 79: adopted


def test_hairline_plots_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, row((2,)), "hairline_plots", 1.0)


@pytest.mark.parametrize("bad", [math.nan, -1.0, 2.0])
def test_a_bad_hairline_plots_in_the_sidecar_is_refused(tmp_path: Path, bad: float) -> None:
    check_bad_value_refused(tmp_path, "hairline_plots", bad)


@pytest.mark.realdata
def test_a_real_row_of_lanes_with_charts_comes_apart(shared_data: Path, tmp_path: Path) -> None:
    """B-odd's layout 0029 (fill 0, charts 0.3; a looking set): a row of 23 narrow lanes one
    pixel apart, some drawn as charts. Without the setting the rows with a chart stay whole (12 of
    23 found when this test was written); with it every lane is found, with no false panel."""
    from glomssl.mining.synth.heldout import layout_file_set

    figs, truths = layout_file_set(one_layout(tmp_path, "0029"), shared_data, 1, 0, "odd", 0.3)
    assert len(truths[0]) == 23
    found = {}
    for on in (0.0, 1.0):
        out = [b for b, _ in Separator("guided", hybrid={"hairline_plots": on}).split(figs)[0]]
        found[on] = sum(any(iou(t, b) >= 0.5 for b in out) for t in truths[0])
        if on:
            assert len(out) == 23
    assert found[0.0] <= 15 and found[1.0] == 23
