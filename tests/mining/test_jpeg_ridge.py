"""Guided's ``ridge`` setting (diary, section 76): in a figure read from a JPEG file, the hairline
cuts read a gutter 1-3 px wide that the JPEG blurred pale along its length as blank, when both
lines beside it are picture edges; a PNG is cut as before."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import numpy as np
import pytest
from test_dominant_merge import check_bad_value_refused, check_recorded_only_when_set
from test_ringing import one_layout

from glomssl.data.images import load_rgb
from glomssl.mining.boxes import iou
from glomssl.mining.classic import (
    RIDGE_WIDTH,
    RINGING_PALE,
    Gutters,
    background_colour,
    ink_mask,
    off_background,
    ridge_lines,
)
from glomssl.mining.hybrid import guided_boxes
from glomssl.mining.separate import Separator, tuned_settings

LEFT = (20, 20, 110, 140)  # two pictures parted by one blurred column at x 110
RIGHT = (111, 20, 200, 140)


def blurred_gutter(width: int = 1, off: tuple[int, int] = (32, 40)) -> np.ndarray:
    """A 220 x 160 figure: two textured pictures with a gutter ``width`` px wide between them whose
    every pixel is ``off`` (low, high) grey levels off white: ink by the mask's 30, none past the
    ringing level 45, pale along its whole length (what JPEG 75 leaves of a thin gutter)."""
    rng = np.random.default_rng(3)
    arr = np.full((160, 220 + width - 1, 3), 255, np.uint8)
    right = (RIGHT[0] + width - 1, RIGHT[1], RIGHT[2] + width - 1, RIGHT[3])
    for x0, y0, x1, y1 in (LEFT, right):
        arr[y0:y1, x0:x1] = rng.integers(60, 200, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    arr[20:140, 110 : 110 + width] = 255 - rng.integers(off[0], off[1], (120, width, 1))
    return arr


def gutters_for(arr: np.ndarray) -> Gutters:
    bg = background_colour(arr)
    ink = ink_mask(arr, bg=bg)
    return Gutters(
        strong=ink_mask(arr, 45, bg=bg), pale=ink | off_background(arr, bg, RINGING_PALE)
    )


def boxes(arr: np.ndarray, ridge: float, gutters: bool) -> list:
    # valley off: it reads such a gutter too (in PNG figures as well), and would hide this setting
    params = dataclasses.replace(tuned_settings("guided")[1], ridge=ridge, valley=0.0)
    ink = ink_mask(arr)
    got = guided_boxes(arr, ink, [], 24, params, gutters=gutters_for(arr) if gutters else None)
    return sorted(b for b, _ in got)


def test_ridge_lines_takes_a_narrow_faint_run_between_strong_lines() -> None:
    strong = np.array([10, 10, 0, 10, 0, 0, 0, 0, 10, 2, 0, 10])  # per line, of 10 pixels
    faint = strong == 0
    got = ridge_lines(faint, strong, 10, 0.3)
    assert np.flatnonzero(got).tolist() == [2]  # lines 4-7 are a run of 4: too wide
    assert RIDGE_WIDTH == 3
    assert not ridge_lines(faint, strong, 10, 0.3)[10]  # a flank (line 9) of 20 % is not an edge
    assert ridge_lines(faint, strong, 10, 0.2)[10]
    edge = np.array([0, 10, 10])  # a faint first line has no flank before it
    assert not ridge_lines(edge == 0, edge, 10, 0.3).any()


def test_ridge_reach_looks_further_out_for_the_picture_edges() -> None:
    # a faint line (2) between half-blended edges (1, 3) and full picture lines (0, 4)
    strong = np.array([10, 2, 0, 2, 10])
    faint = strong == 0
    assert not ridge_lines(faint, strong, 10, 0.3).any()
    assert np.flatnonzero(ridge_lines(faint, strong, 10, 0.3, reach=1)).tolist() == [2]
    far = np.array([10, 2, 2, 0, 2, 2, 10])  # the edges two lines further out: reach 2 only
    assert not ridge_lines(far == 0, far, 10, 0.3, reach=1).any()
    assert ridge_lines(far == 0, far, 10, 0.3, reach=2)[3]


def test_the_hairline_cut_parts_a_blurred_gutter_only_with_the_setting() -> None:
    arr = blurred_gutter()
    ink = ink_mask(arr)
    assert ink[20:140, 110].all()  # the gutter is ink along its whole length: no blank line
    assert boxes(arr, 0.3, gutters=True) == [LEFT, RIGHT]
    assert boxes(arr, 0.0, gutters=True) == [(20, 20, 200, 140)]  # ringing alone: pale, no cut
    assert boxes(arr, 0.3, gutters=False) == [(20, 20, 200, 140)]  # no Gutters: not a JPEG


def test_a_gutter_three_wide_is_cut_and_four_wide_is_left_to_the_other_cuts() -> None:
    three = blurred_gutter(width=3)
    assert len(boxes(three, 0.3, gutters=True)) == 2
    assert len(boxes(three, 0.0, gutters=True)) == 1
    four = blurred_gutter(width=4)
    assert boxes(four, 0.3, gutters=True) == boxes(four, 0.0, gutters=True)


def test_a_strong_pixel_in_the_line_keeps_it_ink() -> None:
    arr = blurred_gutter()
    arr[80, 110] = 180  # 75 levels off: real ink, not a blurred gutter
    assert len(boxes(arr, 0.3, gutters=True)) == 1


def test_the_shipped_default_sets_it() -> None:
    assert tuned_settings("guided")[1].ridge == 0.3
    assert tuned_settings("guided")[1].ridge_reach == 0.0  # diary 77: not adopted


def test_ridge_reach_reaches_the_hairline_cut() -> None:
    arr = blurred_gutter()
    arr[20:140, 109] = 255 - 40  # the picture columns beside the gutter blended faint too ...
    arr[20:140, 111] = 255 - 40
    arr[20:140:4, 109] = 150  # ... with a quarter of their pixels strong
    arr[20:140:4, 111] = 150
    params = tuned_settings("guided")[1]
    ink = ink_mask(arr)

    def parts(reach: float) -> int:
        p = dataclasses.replace(params, ridge=0.3, ridge_reach=reach, valley=0.0)
        return len(guided_boxes(arr, ink, [], 24, p, gutters=gutters_for(arr)))

    assert parts(0.0) == 1
    assert parts(1.0) == 2


def test_ridge_reach_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, blurred_gutter(), "ridge_reach", 1.0)


@pytest.mark.parametrize("bad", [math.nan, -1.0, 0.5, 4.0])
def test_a_bad_ridge_reach_in_the_sidecar_is_refused(tmp_path: Path, bad: float) -> None:
    check_bad_value_refused(tmp_path, "ridge_reach", bad)


def test_ridge_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, blurred_gutter(), "ridge", 0.3)


@pytest.mark.parametrize("bad", [math.nan, -0.3, 1.5])
def test_a_bad_ridge_in_the_sidecar_is_refused(tmp_path: Path, bad: float) -> None:
    check_bad_value_refused(tmp_path, "ridge", bad)


@pytest.mark.realdata
def test_a_row_of_narrow_pas_pictures_in_a_jpeg_figure_comes_apart(
    shared_data: Path, tmp_path: Path
) -> None:
    """B-odd's layout 0029 (fill 0, pictures only; a looking set) saved as JPEG 75: a row of
    narrow PAS pictures 18-20 px wide parted by 1-px gutters, which the JPEG blurs pale. Without
    the setting most of the row comes back as one panel; as a PNG it is cut either way."""
    from glomssl.mining.synth.heldout import layout_file_set

    one = one_layout(tmp_path, "0029")
    figs, truths = layout_file_set(one, shared_data, 1, 0, "odd", 0.0)
    targets = [(51, 38, 70, 186), (71, 38, 90, 186), (91, 38, 110, 186)]
    assert all(t in [tuple(b) for b in truths[0]] for t in targets)
    buf = io.BytesIO()
    figs[0].save(buf, format="JPEG", quality=75)
    (tmp_path / "f.jpg").write_bytes(buf.getvalue())
    figs[0].save(tmp_path / "f.png")

    def found(path: Path, ridge: float) -> int:
        sep = Separator("auto", hybrid={"ridge": ridge, "valley": 0.0})  # valley: see boxes()
        got = [b for b, _ in sep.split([load_rgb(path)])[0]]
        return sum(any(iou(b, t) >= 0.5 for b in got) for t in targets)

    assert found(tmp_path / "f.jpg", 0.3) == 3
    assert found(tmp_path / "f.jpg", 0.0) == 0
    assert found(tmp_path / "f.png", 0.3) == found(tmp_path / "f.png", 0.0) == 3


@pytest.mark.realdata
def test_native_draws_a_layout_at_its_own_size_and_shrinks_it(
    shared_data: Path, tmp_path: Path
) -> None:
    """``layout_file_set(native=...)`` (the benchmark's --native): layout 0029 is 846 px
    across, so it is drawn at that size and shrunk to 512; at 0 the set is drawn at 512 as ever."""
    from glomssl.mining.synth.heldout import layout_file_set, read_layouts

    one = one_layout(tmp_path, "0029")
    ((_, (w, h), native_boxes),) = read_layouts(one)
    assert max(w, h) == 846
    flat, flat_truth = layout_file_set(one, shared_data, 1, 0, "odd")
    big, big_truth = layout_file_set(one, shared_data, 1, 0, "odd", native=2600)
    assert max(flat[0].size) == max(big[0].size) == 512
    assert len(big_truth[0]) == len(flat_truth[0]) == len(native_boxes)
    # the same boxes to within the rounding of two scalings
    for a, b in zip(sorted(flat_truth[0]), sorted(big_truth[0])):
        assert max(abs(u - v) for u, v in zip(a, b)) <= 2
    # the shrink blends a 1-px gutter: its column is no longer clean white
    x = 50  # between (32, 37, 50, 185) and (51, 38, 70, 186)
    flat_col = np.asarray(flat[0])[60:160, x]
    big_col = np.asarray(big[0])[60:160, x]
    assert flat_col.min() == 255
    assert big_col.min() < 255
    with pytest.raises(ValueError):
        layout_file_set(one, shared_data, 1, 0, "odd", charts=2.0)
