"""Guided's ``label_member`` setting (diary, section 67): where a detector box holds a panel-size
region, thin regions beside it are its label strips. They join the box's merge when the box holds
half of them (a tight box clips a chart's axis labels) and are no rival panels in the ``dominant``
test (a small chart's labels are as large as its plot). Pictures of similar size still stay apart,
and a region as thick as the panel beside it is no label."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_dominant_merge import check_bad_value_refused, check_recorded_only_when_set
from test_picture_groups import row_of_pictures
from test_upright_lanes import LAYOUTS

from glomssl.mining.boxes import iou, union_box
from glomssl.mining.classic import ink_mask
from glomssl.mining.hybrid import guided_boxes
from glomssl.mining.separate import Separator, tuned_settings

Box = tuple[int, int, int, int]
INK = (0, 0, 0)


def _word(dr: ImageDraw.ImageDraw, box: Box, upright: bool) -> None:
    """A line of letter-sized blocks filling ``box`` (along its long side), one px apart."""
    x0, y0, x1, y1 = box
    step = 6
    if upright:
        for y in range(y0, y1 - 4, step):
            dr.rectangle([x0, y, x1 - 1, y + 4], fill=INK)
    else:
        for x in range(x0, x1 - 4, step):
            dr.rectangle([x, y0, x + 4, y1 - 1], fill=INK)


def small_chart(width: int, height: int) -> tuple[np.ndarray, Box]:
    """A bar chart on a 200-px figure: a rotated y label (7 px wide), a column of tick labels (8 px
    wide), the plot (axes and three bars, ``width`` x ``height`` px) and an x label (7 px high),
    each parted from the next by 6 px of white. Returns the figure and the chart's box."""
    img = Image.new("RGB", (200, 200), "white")
    dr = ImageDraw.Draw(img)
    px0, py0 = 40, 30
    px1, py1 = px0 + width, py0 + height
    _word(dr, (14, py0 + 2, 21, py1 - 2), upright=True)  # y label
    for y in range(py0, py1 - 3, 6):  # tick labels, 2 px apart: one column
        dr.rectangle([27, y, 34, y + 3], fill=INK)
    dr.line([(px0, py0), (px0, py1), (px1, py1)], fill=INK, width=2)
    slot = width // 3
    for k in range(3):
        top = py0 + (k + 1) * height // 4
        dr.rectangle(
            [px0 + 3 + k * slot, top, px0 + 3 + k * slot + slot // 2, py1], fill=(60, 90, 160)
        )
    _word(dr, (px0, py1 + 8, px1, py1 + 15), upright=False)  # x label
    return np.asarray(img), (14, py0, px1 + 1, py1 + 15)


def _guided(arr: np.ndarray, dets: list[tuple[Box, float]], label_member: float) -> list[Box]:
    """Guided with the shipped settings, ``label_member`` as given, and the given detector boxes
    (the size floor of 8 px, as the separator passes it with ``tiny``)."""
    params = dataclasses.replace(tuned_settings("guided")[1], label_member=label_member)
    return [b for b, _ in guided_boxes(arr, ink_mask(arr), dets, 8, params)]


def test_labels_the_box_clips_join_the_plot() -> None:
    """A large plot: the detector box holds all of the plot and tick labels but only about 4 px of
    the 7-px y and x labels (share 0.57), so without the setting they are no members and the plot
    comes back alone."""
    arr, chart = small_chart(80, 120)
    det = (chart[0] + 3, chart[1] - 2, chart[2] + 2, chart[3] - 3)
    off = _guided(arr, [(det, 0.9)], 0.0)
    assert max(iou(b, chart) for b in off) < 0.9
    assert not any(b[0] <= 21 for b in off)  # the y label is not in any box
    on = _guided(arr, [(det, 0.9)], 0.5)
    assert len(on) == 1 and iou(on[0], chart) > 0.95


def test_label_strips_are_no_rivals_of_a_small_plot() -> None:
    """A small plot (18 x 40 px) whose label strips together are nearly as large as itself, all
    inside one box: the ``dominant`` test alone refuses the merge; with the setting, the strips do
    not count."""
    arr, chart = small_chart(18, 40)
    det = (chart[0] - 3, chart[1] - 3, chart[2] + 3, chart[3] + 3)
    off = _guided(arr, [(det, 0.9)], 0.0)
    assert not any(iou(b, chart) > 0.8 for b in off)
    on = _guided(arr, [(det, 0.9)], 0.5)
    assert len(on) == 1 and iou(on[0], chart) > 0.95


def test_pictures_of_similar_size_still_stay_apart() -> None:
    arr, truth = row_of_pictures([40, 44, 40, 42])
    out = _guided(arr, [(union_box(truth), 0.9)], 0.5)
    assert len(out) == 4
    for t in truth:
        assert max(iou(t, b) for b in out) > 0.9


def test_a_region_as_thick_as_the_panel_is_no_label() -> None:
    """A 10-px lane and, 6 px to its right, a 7-px one (under the size limit of 8): the box holds
    0.6 of the narrow one, but at more than half the lane's width it is no label strip."""
    rng = np.random.default_rng(3)
    arr = np.full((160, 80, 3), 255, np.uint8)
    lane, narrow = (20, 20, 30, 140), (36, 20, 43, 140)
    for x0, y0, x1, y1 in (lane, narrow):
        arr[y0:y1, x0:x1] = rng.integers(40, 160, (y1 - y0, x1 - x0, 3))
    det = (18, 18, 40, 142)  # 4 of the narrow lane's 7 columns
    for member in (0.0, 0.5):
        out = _guided(arr, [(det, 0.9)], member)
        assert not any(b[2] > 36 for b in out), member  # never joined to the lane


def test_the_shipped_default_sets_it() -> None:
    assert Separator("guided").hybrid.label_member == 0.5


def test_label_member_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, small_chart(18, 40)[0], "label_member", 0.5)


@pytest.mark.parametrize("bad", [math.nan, -1.0, 1.5])
def test_a_bad_label_member_in_the_sidecar_is_refused(tmp_path: Path, bad: float) -> None:
    check_bad_value_refused(tmp_path, "label_member", bad)


@pytest.mark.realdata
def test_small_charts_of_a_real_layout_keep_their_labels(shared_data: Path, tmp_path: Path) -> None:
    """Real layout 0023 of B's looked-at half (18 panels) filled with charts in 0.3 of its boxes
    (fill 0, looked at while the setting was designed): 17 panels found with the setting and 12
    without when this test was written; five small charts came back as their plots alone."""
    from glomssl.mining.synth.heldout import layout_file_set

    line = next(ln for ln in LAYOUTS.read_text().splitlines() if ln.startswith("0023 "))
    small = tmp_path / "b.txt"
    small.write_text(line + "\n")
    figs, truths = layout_file_set(small, shared_data, 1, 0, charts=0.3)
    found = {}
    for member in (0.5, 0.0):  # section 69's strokes and 78's rescue off: they also join some
        hybrid = {"label_member": member, "strokes": 0.0, "rescue": 0.0}
        out = Separator("guided", hybrid=hybrid).split(figs)[0]
        found[member] = sum(any(iou(b, t) >= 0.5 for b, _ in out) for t in truths[0])
    assert len(truths[0]) == 18
    assert found[0.5] >= 16 and found[0.5] >= found[0.0] + 3


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_the_chart_share_of_the_b_set_is_checked(tmp_path: Path, bad: float) -> None:
    from glomssl.mining.synth.heldout import layout_file_set

    with pytest.raises(ValueError, match="charts"):
        layout_file_set(LAYOUTS, tmp_path, 1, 0, charts=bad)


@pytest.mark.realdata
def test_the_chart_variant_of_the_b_set(shared_data: Path, tmp_path: Path) -> None:
    """``charts`` 0 draws exactly the pictures-only set; 0.3 draws some boxes as charts (white
    with ink: a chart's truth is its ink box, inside the layout's box), the rest as before."""
    from glomssl.mining.synth.heldout import layout_file_set, read_layouts

    line = next(ln for ln in LAYOUTS.read_text().splitlines() if ln.startswith("0023 "))
    small = tmp_path / "b.txt"
    small.write_text(line + "\n")
    plain, plain_truth = layout_file_set(small, shared_data, 1, 0)
    same, same_truth = layout_file_set(small, shared_data, 1, 0, charts=0.0)
    assert np.array_equal(np.asarray(plain[0]), np.asarray(same[0]))
    assert plain_truth == same_truth
    mixed, mixed_truth = layout_file_set(small, shared_data, 1, 0, charts=0.3)
    ((_, (w, h), cells),) = read_layouts(small)
    s = 512 / max(w, h)
    cells = [tuple(round(v * s) for v in c) for c in cells]
    arr = np.asarray(mixed[0].convert("L"))
    charts = [t for t in mixed_truth[0] if t not in cells]  # ink boxes, tighter than the cell
    assert 2 <= len(charts) <= 12 and len(mixed_truth[0]) == len(plain_truth[0])
    for t in charts:
        assert any(c[0] <= t[0] and c[1] <= t[1] and t[2] <= c[2] and t[3] <= c[3] for c in cells)
        patch = arr[t[1] : t[3], t[0] : t[2]]
        assert (patch > 230).mean() > 0.4  # mostly white paper, not a micrograph
