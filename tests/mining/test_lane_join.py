"""Guided's ``lane_join`` setting (diary, section 88). A chart shrunk from print size into a narrow
lane keeps its tick labels inside the lane, but whitespace can cut its rotated y title off; the
lane left is then 8-11 px wide, too narrow for ``lane_axis``'s wider search, and was dropped.
``lane_join`` tests such a box together with the loose title beside its left and keeps the two as
one panel when they pass together."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_dominant_merge import check_bad_value_refused, check_recorded_only_when_set
from test_lane_axis import INK, print_size_lane
from test_lane_axis import guided_panels as _panels
from test_lane_axis import guided_params as _params

from glomssl.mining.boxes import iou
from glomssl.mining.classic import ink_mask
from glomssl.mining.hybrid import TITLE_GAP, HybridParams, narrow_plot, titled_lane

Box = tuple[int, int, int, int]


def lane_and_title(gap: int = 2) -> tuple[np.ndarray, Box, Box, Box]:
    """A chart shrunk into an 11-px lane (tick labels and marks fill it up to its y axis at column
    5) and its rotated y title, outlined letters 3 px wide, ``gap`` px to its left. Returns the
    figure, the lane's box, the title's and the whole chart's."""
    arr, lane = print_size_lane(width=11, axis=0.45)
    img = Image.fromarray(arr)
    dr = ImageDraw.Draw(img)
    left = lane[0] - gap - 3
    for y in range(lane[1] + 25, lane[1] + 60, 6):
        dr.rectangle([left, y, left + 2, y + 4], outline=INK)
    title = (left, lane[1] + 25, left + 3, lane[1] + 59)
    return np.asarray(img), lane, title, (left, lane[1], lane[2], lane[3])


def _passes(arr: np.ndarray, params: HybridParams) -> Callable[[Box], bool]:
    ink = ink_mask(arr)
    return lambda box: narrow_plot(arr, ink, box, 24, params)


def test_titled_lane_joins_the_title_when_the_two_pass_together() -> None:
    arr, lane, title, whole = lane_and_title()
    ink = ink_mask(arr)
    on = _params(lane_join=1.0)
    assert not narrow_plot(arr, ink, lane, 24, on)  # too narrow for the wider search alone
    assert narrow_plot(arr, ink, whole, 24, on)
    assert titled_lane(lane, [title], _passes(arr, on), on) == whole
    off = _params(lane_join=0.0)
    assert titled_lane(lane, [title], _passes(arr, off), off) is None  # off
    assert titled_lane(lane, [], _passes(arr, on), on) is None  # no title beside it
    assert titled_lane(lane, [title], lambda u: False, on) is None  # the two fail together


def test_only_a_title_shaped_region_close_beside_the_lane_is_joined() -> None:
    assert TITLE_GAP == 3
    arr, lane, title, _ = lane_and_title()
    on = _params(lane_join=1.0)
    test = _passes(arr, on)
    label = (lane[0] - 6, lane[1] + 30, lane[0] - 2, lane[1] + 35)  # shaped like a tick label
    assert titled_lane(lane, [label], test, on) is None
    far = (title[0] - 2, title[1], title[2] - 2, title[3])  # 4 px away
    assert titled_lane(lane, [far], test, on) is None
    above = (title[0], lane[1] - 20, title[2], lane[1] + 20)  # reaching above the lane
    assert titled_lane(lane, [above], test, on) is None
    right = (lane[2] + 2, title[1], lane[2] + 5, title[3])  # on the wrong side
    assert titled_lane(lane, [right], test, on) is None


def test_such_a_lane_stands_with_its_title() -> None:
    arr, lane, _, whole = lane_and_title()
    off = _panels(arr, lane_join=0.0)
    assert max(iou(b, lane) for b in off) == 0.0  # dropped
    on = _panels(arr, lane_join=1.0)
    assert max(iou(b, whole) for b in on) == 1.0
    assert len(on) == len(off) + 1  # the pictures come back as before


def test_a_title_further_off_is_not_joined() -> None:
    arr, lane, _, _ = lane_and_title(gap=4)
    assert max(iou(b, lane) for b in _panels(arr, lane_join=1.0)) < 0.5


def test_lane_join_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, lane_and_title()[0], "lane_join", 1.0)


@pytest.mark.parametrize("bad", [math.nan, -0.1, 1.5])
def test_a_bad_lane_join_in_the_sidecar_is_refused(tmp_path: Path, bad: float) -> None:
    check_bad_value_refused(tmp_path, "lane_join", bad)
