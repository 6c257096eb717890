"""Guided's ``hairline_pale`` setting (diary, section 66): the one-pixel cut of ``hairline`` reads
its blank lines and its picture test with bare glass counted as picture, so a row of lanes in which
one lane is partly glass still comes apart; a pale line one pixel wide along a gutter (a JPEG's
ringing) is not glass and leaves the gutter blank."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_dominant_merge import check_bad_value_refused, check_recorded_only_when_set
from test_pale_edges import _glass
from test_picture_groups import _texture

from glomssl.mining.boxes import iou
from glomssl.mining.classic import ink_mask
from glomssl.mining.hybrid import guided_boxes
from glomssl.mining.separate import Separator, tuned_settings

Box = tuple[int, int, int, int]


def lanes_with_glass(seed: int = 0) -> tuple[np.ndarray, list[Box]]:
    """Seven 18-px lanes behind one-pixel gutters; the fourth is tissue on top and bare glass
    below, with two specks of tissue in the glass that overlap both ways (so no blank line parts
    them, and together they are too sparse to pass as a picture on plain ink)."""
    rng = np.random.default_rng(seed)
    arr = np.full((200, 180, 3), 255, np.uint8)
    lanes = [(20 + 19 * i, 20, 38 + 19 * i, 180) for i in range(7)]
    for k, (x0, y0, x1, y1) in enumerate(lanes):
        if k == 3:
            arr[y0:y1, x0:x1] = _glass(rng, y1 - y0, x1 - x0)
            arr[y0 : y0 + 60, x0:x1] = _texture(rng, 60, x1 - x0)
            arr[y0 + 90 : y0 + 104, x0 : x0 + 10] = _texture(rng, 14, 10)
            arr[y0 + 100 : y0 + 116, x0 + 8 : x1] = _texture(rng, 16, x1 - x0 - 8)
        else:
            arr[y0:y1, x0:x1] = _texture(rng, y1 - y0, x1 - x0)
    return arr, lanes


def lanes_with_ringing(seed: int = 1) -> tuple[np.ndarray, list[Box]]:
    """Five dark 24-px lanes whose one-pixel gutters carry a pale line (9 levels under white), as
    a JPEG's ringing leaves them."""
    rng = np.random.default_rng(seed)
    arr = np.full((180, 160, 3), 255, np.uint8)
    lanes = [(15 + 25 * i, 20, 39 + 25 * i, 160) for i in range(5)]
    for x0, y0, x1, y1 in lanes:
        arr[y0:y1, x0:x1] = (_texture(rng, y1 - y0, x1 - x0) * 0.8).astype(np.uint8)
        if x1 < 135:
            arr[y0:y1, x1] = 246
    return arr, lanes


def _guided(arr: np.ndarray, hairline_pale: float) -> list[Box]:
    """Guided with the shipped settings, ``hairline_pale`` as given, and no detector boxes;
    section 79's ``hairline_plots`` off, because the glass lane's specks (an L of texture, under
    70 % ink) pass its plot test and would part the row without the glass read either."""
    tuned = tuned_settings("guided")[1]
    params = dataclasses.replace(tuned, hairline_pale=hairline_pale, hairline_plots=0.0)
    return [b for b, _ in guided_boxes(arr, ink_mask(arr), [], 12, params)]


def _found(out: list[Box], truth: list[Box]) -> int:
    return sum(any(iou(b, t) >= 0.5 for b in out) for t in truth)


def test_a_lane_with_glass_no_longer_keeps_the_row_whole() -> None:
    arr, lanes = lanes_with_glass()
    before = _guided(arr, 0.0)
    assert len(before) == 1 and _found(before, lanes) == 0  # the row as one box
    after = _guided(arr, 1.0)
    assert len(after) == 7 and _found(after, lanes) == 7


def test_a_pale_line_along_a_gutter_keeps_it_blank() -> None:
    arr, lanes = lanes_with_ringing()
    out = _guided(arr, 1.0)
    assert len(out) == 5 and _found(out, lanes) == 5


def test_the_shipped_sidecar_reads_hairlines_with_glass() -> None:
    assert Separator("guided").hybrid.hairline_pale == 1.0
    arr, lanes = lanes_with_glass()
    out = [b for b, _ in Separator("guided").split([Image.fromarray(arr)])[0]]
    assert len(out) == 7 and _found(out, lanes) == 7
    off = Separator("guided", hybrid={"hairline_pale": 0.0, "hairline_plots": 0.0})
    assert len(off.split([Image.fromarray(arr)])[0]) == 1


def test_hairline_pale_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, lanes_with_glass()[0], "hairline_pale", 1.0)


@pytest.mark.parametrize("bad", [math.nan, -1.0])
def test_a_bad_hairline_pale_in_the_sidecar_is_refused(tmp_path: Path, bad: float) -> None:
    check_bad_value_refused(tmp_path, "hairline_pale", bad)
