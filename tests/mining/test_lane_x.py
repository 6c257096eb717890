"""Guided's ``lane_x`` setting (diary, section 86). A chart shrunk from print size into a narrow
lane can have its tick labels and y title fill most of the lane, so its y axis stands far in and
its x axis, from there to the right edge, is shorter than half the lane: ``axes_corner``'s x-axis
test failed. With ``lane_x``, a lane at least three times as high as wide also passes with its x
axis measured from its y axis rightwards."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_dominant_merge import check_bad_value_refused, check_recorded_only_when_set
from test_lane_axis import INK, _pictures
from test_lane_axis import guided_panels as _panels
from test_lane_axis import guided_params as _params

from glomssl.mining.boxes import iou
from glomssl.mining.classic import ink_mask
from glomssl.mining.hybrid import LANE_X_TALL, axes_corner, lane_corner
from glomssl.mining.separate import Separator

Box = tuple[int, int, int, int]


def far_axis_lane(width: int = 20, height: int = 90) -> tuple[np.ndarray, Box]:
    """A 400 x 300 figure: two textured pictures and between them a chart ``width`` px wide whose
    tick labels (columns 0-5) and tick marks fill the left 60 %, its y axis (2 px) stands at 0.6 of
    its width and its x axis runs from there to the right edge, under half the lane. Returns it
    and the chart's box."""
    arr = np.full((300, 400, 3), 255, np.uint8)
    _pictures(arr, (20, 260))
    img = Image.fromarray(arr)
    dr = ImageDraw.Draw(img)
    x0, y0 = 190, 105
    ax = x0 + round(0.6 * width)
    dr.line([(ax, y0), (ax, y0 + height - 1)], fill=INK, width=2)
    dr.line([(ax, y0 + height - 2), (x0 + width - 1, y0 + height - 2)], fill=INK, width=2)
    for y in range(y0 + 6, y0 + height - 30, 16):  # none in the bottom third
        dr.line([(x0 + 6, y), (ax, y)], fill=INK)  # tick marks
        dr.rectangle([x0, y - 2, x0 + 5, y + 2], fill=INK)  # tick labels
    for k in range(4):
        x = ax + 3 + k
        dr.point([(x, y0 + height - 10 - k * 15)], fill=(30, 90, 200))
    return np.asarray(img), (x0, y0, x0 + width, y0 + height)


def test_the_shipped_default_sets_it() -> None:
    """Section 86's fresh run cleared every bar: lane_x 1 ships."""
    assert Separator("guided").hybrid.lane_x == 1.0
    arr, chart = far_axis_lane()
    assert max(iou(b, chart) for b in _panels(arr)) > 0.8


def test_the_x_axis_is_measured_from_the_y_axis() -> None:
    arr, chart = far_axis_lane()
    ink = ink_mask(arr)
    hp = _params()
    assert not axes_corner(arr, ink, chart, hp, 0.7)  # the x axis runs 8 of 20 px
    assert axes_corner(arr, ink, chart, hp, 0.7, from_axis=True)  # ... all 8 right of the axis
    assert not axes_corner(arr, ink, chart, hp, from_axis=True)  # the axis lies past the third
    bare = arr.copy()
    bare[chart[3] - 3 : chart[3], chart[0] + 13 : chart[2]] = 255  # the x axis cut short
    assert not axes_corner(bare, ink_mask(bare), chart, hp, 0.7, from_axis=True)


def test_lane_corner_uses_it_only_with_the_setting_and_in_tall_lanes() -> None:
    assert LANE_X_TALL == 3
    arr, chart = far_axis_lane()
    ink = ink_mask(arr)
    assert not lane_corner(arr, ink, chart, 24, _params(lane_x=0.0))
    assert lane_corner(arr, ink, chart, 24, _params(lane_x=1.0))
    assert not lane_corner(arr, ink, chart, 24, _params(lane_x=1.0, lane_axis=0.0))
    low, piece = far_axis_lane(height=55)  # 2.75 times as high as wide: a piece, not a lane
    assert not lane_corner(low, ink_mask(low), piece, 24, _params(lane_x=1.0))
    tall, lane = far_axis_lane(height=60)
    assert lane_corner(tall, ink_mask(tall), lane, 24, _params(lane_x=1.0))


def test_such_a_lane_stands_as_a_panel() -> None:
    arr, chart = far_axis_lane()
    off = _panels(arr, lane_x=0.0)
    assert max(iou(b, chart) for b in off) < 0.5
    on = _panels(arr, lane_x=1.0)
    assert max(iou(b, chart) for b in on) > 0.8
    assert len(on) == len(off) + 1  # the pictures come back as before


def test_lane_x_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, far_axis_lane()[0], "lane_x", 1.0)


@pytest.mark.parametrize("bad", [math.nan, -0.1, 1.5])
def test_a_bad_lane_x_in_the_sidecar_is_refused(tmp_path: Path, bad: float) -> None:
    check_bad_value_refused(tmp_path, "lane_x", bad)
