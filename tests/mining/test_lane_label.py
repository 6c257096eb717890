"""Guided's ``lane_label`` setting (diary, section 85). ``lane_title`` drops a narrow lane that
passes only by ``lane_axis``'s wider search when a loose region stands beside its left: the tick
labels of a chart drawn at 512 px, whose plot alone is the lane. A chart shrunk from print size into
a lane keeps its tick labels inside the lane but often leaves its rotated y title loose beside it,
and the shrink leaves specks; ``lane_label`` counts only a region shaped like a tick label."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_dominant_merge import check_bad_value_refused, check_recorded_only_when_set
from test_lane_axis import INK, cut_off_plot, print_size_lane
from test_lane_axis import guided_panels as _panels
from test_lane_axis import guided_params as _params
from test_valley import one_layout

from glomssl.mining.boxes import iou
from glomssl.mining.classic import ink_mask
from glomssl.mining.hybrid import LABEL_LEAST, TITLE_TALL, lane_piece, tick_label
from glomssl.mining.separate import Separator

Box = tuple[int, int, int, int]


def titled_lane() -> tuple[np.ndarray, Box, Box]:
    """A chart shrunk from print size into a 20-px lane (its axis at 0.6 of the width, its tick
    labels inside the lane) and its rotated y title loose 3 px to its left: outlined letters 3 px
    wide, one above the other. Returns the figure, the lane's box and the whole chart's."""
    arr, lane = print_size_lane(width=20, axis=0.6)
    img = Image.fromarray(arr)
    dr = ImageDraw.Draw(img)
    left = lane[0] - 6
    for y in range(lane[1] + 25, lane[1] + 60, 6):
        dr.rectangle([left, y, left + 2, y + 4], outline=INK)
    return np.asarray(img), lane, (left, lane[1], lane[2], lane[3])


def test_the_shipped_default_sets_it() -> None:
    """Section 85's fresh run cleared every bar: lane_label 1 ships, with lane_title 1."""
    hp = Separator("guided").hybrid
    assert (hp.lane_label, hp.lane_title) == (1.0, 1.0)
    arr, _, whole = titled_lane()
    assert max(iou(b, whole) for b in _panels(arr)) == 1.0


def test_tick_label_tells_labels_from_titles_and_specks() -> None:
    assert (LABEL_LEAST, TITLE_TALL) == (4, 3)
    assert tick_label((0, 0, 4, 5))  # a number beside a tick mark
    assert tick_label((0, 0, 14, 6))  # "0.25"
    assert tick_label((0, 0, 2, 5))  # a narrow digit: 2.5 times as high as wide
    assert not tick_label((0, 0, 3, 9))  # a rotated title: 3 times as high as wide
    assert not tick_label((0, 0, 3, 30))
    assert not tick_label((0, 0, 11, 2))  # a speck left by the shrink
    assert not tick_label((0, 0, 1, 1))
    assert not tick_label((0, 0, 6, 3))  # under LABEL_LEAST high


def test_lane_piece_ignores_a_title_beside_the_lane_with_the_setting() -> None:
    arr, lane, _ = titled_lane()
    ink = ink_mask(arr)
    title = (lane[0] - 6, lane[1] + 25, lane[0] - 3, lane[1] + 60)
    assert lane_piece(arr, ink, lane, [title], _params(lane_label=0.0))
    assert not lane_piece(arr, ink, lane, [title], _params(lane_label=1.0))
    label = (lane[0] - 8, lane[1] + 4, lane[0] - 4, lane[1] + 9)  # a tick label still counts
    assert lane_piece(arr, ink, lane, [title, label], _params(lane_label=1.0))


def test_a_lane_with_its_title_loose_beside_it_stands() -> None:
    arr, lane, whole = titled_lane()
    assert max(iou(b, whole) for b in _panels(arr, lane_title=0.0)) == 1.0  # stands untested
    off = _panels(arr, lane_label=0.0)
    assert max(iou(b, lane) for b in off) == 0.0  # the title read as a label: dropped
    on = _panels(arr, lane_label=1.0)
    assert max(iou(b, whole) for b in on) == 1.0  # kept, and grown over its title
    assert len(on) == len(off) + 1


def test_a_plot_cut_off_from_its_tick_labels_is_still_dropped() -> None:
    """Section 83's case (a chart drawn at 512 px): its loose tick labels are shaped like labels."""
    arr, plot, _ = cut_off_plot(title=False)
    for on in (0.0, 1.0):
        assert max(iou(b, plot) for b in _panels(arr, lane_label=on)) == 0.0


def test_the_setting_acts_only_with_lane_title() -> None:
    arr, lane, _ = titled_lane()
    ink = ink_mask(arr)
    title = (lane[0] - 6, lane[1] + 25, lane[0] - 3, lane[1] + 60)
    assert not lane_piece(arr, ink, lane, [title], _params(lane_label=1.0, lane_title=0.0))


def test_lane_label_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, titled_lane()[0], "lane_label", 1.0)


@pytest.mark.parametrize("bad", [math.nan, -0.1, 1.5])
def test_a_bad_lane_label_in_the_sidecar_is_refused(tmp_path: Path, bad: float) -> None:
    check_bad_value_refused(tmp_path, "lane_label", bad)


@pytest.mark.realdata
def test_real_charts_keep_lanes_beside_their_titles(shared_data: Path, tmp_path: Path) -> None:
    """B-odd's layout 0115 (fill 0, charts 0.3; a looking set) drawn at its own size and shrunk to
    512 px, as PNG: two of its charts sit in narrow lanes with their rotated y titles loose beside
    them. With lane_title alone 10 of its 12 panels were found when this test was written; with
    lane_label all 12, with no false panel."""
    from glomssl.mining.synth.heldout import layout_file_set

    figs, truths = layout_file_set(
        one_layout(tmp_path, "0115"), shared_data, 1, 0, "odd", 0.3, 2600
    )
    assert len(truths[0]) == 12
    found, count = found_off_and_on(figs[0], truths[0], "lane_label")
    assert found[0.0] <= 10 and found[1.0] == count[1.0] == 12


def found_off_and_on(
    fig: Image.Image, truth: list[Box], key: str
) -> tuple[dict[float, int], dict[float, int]]:
    """Guided on ``fig`` with the setting ``key`` at 0 and at 1: the truth boxes found (IoU >= 0.5)
    and the boxes returned, each by setting."""
    found, count = {}, {}
    for on in (0.0, 1.0):
        out = [b for b, _ in Separator("guided", hybrid={key: on}).split([fig])[0]]
        found[on] = sum(any(iou(t, b) >= 0.5 for b in out) for t in truth)
        count[on] = len(out)
    return found, count
