"""Guided's ``hairline`` and ``tiny_pale`` settings (diary, section 60).

``hairline``: a box guided returns is cut at blank lines one pixel wide when its parts are pictures
of similar size (a montage behind hairline gutters); a large picture with small close-ups beside
it, or a chart, stays one panel. ``tiny_pale``: a narrow picture that is mostly pale glass passes
the picture test of panels under --min-side (its pale pixels count), after its box has grown over
them."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_dominant_merge import (
    check_bad_value_refused,
    check_recorded_only_when_set,
    default_finds_all_then_without,
    stored_settings,
)
from test_pale_edges import _glass
from test_picture_groups import _texture

from glomssl.mining.boxes import iou, union_box
from glomssl.mining.classic import ink_mask, size_limit
from glomssl.mining.hybrid import guided_boxes, hairline_cuts
from glomssl.mining.separate import SeparateConfig, run_separate, tuned_settings

Box = tuple[int, int, int, int]


def hairline_figure(boxes: list[Box], shape: tuple[int, int] = (200, 260)) -> np.ndarray:
    """A white figure with a textured picture in each box (boxes one pixel apart make hairlines)."""
    rng = np.random.default_rng(5)
    arr = np.full((*shape, 3), 255, np.uint8)
    for x0, y0, x1, y1 in boxes:
        arr[y0:y1, x0:x1] = _texture(rng, y1 - y0, x1 - x0)
    return arr


GRID: list[Box] = [(20, 20, 90, 90), (91, 20, 161, 90), (20, 91, 90, 161), (91, 91, 161, 161)]
CLOSE_UPS: list[Box] = [(20, 20, 120, 120), (121, 20, 170, 69), (121, 70, 170, 120)]


def _guided(arr: np.ndarray, hairline: float) -> list[Box]:
    """Guided with the shipped settings, ``hairline`` as given, and no detector boxes (so nothing
    but the hairline cut can part what whitespace two pixels wide does not)."""
    params = dataclasses.replace(tuned_settings("guided")[1], hairline=hairline)
    return [b for b, _ in guided_boxes(arr, ink_mask(arr), [], 12, params)]


def test_pictures_behind_one_pixel_gutters_come_apart() -> None:
    arr = hairline_figure(GRID)
    whole = _guided(arr, 0.0)
    assert len(whole) == 1 and iou(whole[0], union_box(GRID)) > 0.95
    parts = _guided(arr, 0.6)
    assert len(parts) == 4
    for t in GRID:
        assert max(iou(t, b) for b in parts) > 0.95


def test_a_picture_with_small_close_ups_beside_it_stays_one_panel() -> None:
    """The large picture holds 0.67 of the parts' area: one panel with its close-ups."""
    arr = hairline_figure(CLOSE_UPS)
    assert len(_guided(arr, 0.6)) == 1
    assert len(_guided(arr, 0.7)) == 3  # the size test is what keeps it whole


def test_a_bar_chart_with_bars_one_pixel_apart_stays_whole() -> None:
    """Flat bars are not pictures (grey levels do not spread), so the chart is not cut."""
    img = Image.new("RGB", (260, 200), "white")
    dr = ImageDraw.Draw(img)
    for k, h in enumerate((60, 110, 80, 130, 40)):
        dr.rectangle([30 + 31 * k, 170 - h, 59 + 31 * k, 170], fill=(60 + 30 * k, 90, 160))
    arr = np.asarray(img)
    assert len(_guided(arr, 0.6)) == 1


def test_leftover_pieces_above_the_share_keep_the_box() -> None:
    """Two pictures plus a label block beside them that holds over 5 % of the box: not a
    montage (the block is not a picture and not small)."""
    arr = hairline_figure([(20, 20, 90, 120), (91, 20, 161, 120)])
    arr[20:120, 162:176] = 0  # a dark bar one pixel right of the pictures, under the size limit
    limit = size_limit(arr.shape, 12, 0.03)
    assert 176 - 162 < 2 * limit
    params = dataclasses.replace(tuned_settings("guided")[1], hairline=0.6)
    box = ((20, 20, 176, 120), 0.9)
    ink = ink_mask(arr)
    assert hairline_cuts(arr, ink, [box], 16, params) == [box]  # the bar is 14 px: a leftover
    loose = dataclasses.replace(params, hairline_rest=0.2)
    assert len(hairline_cuts(arr, ink, [box], 16, loose)) == 2


def test_the_shipped_sidecar_sets_both() -> None:
    params = tuned_settings("guided")[1]
    assert params.hairline == 0.6 and params.tiny_pale == 1.0


def test_hairline_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, hairline_figure(GRID), "hairline", 0.6)
    assert "hairline_rest" not in stored_settings(tmp_path / "a")


@pytest.mark.parametrize("bad", [math.nan, -0.5])
def test_a_bad_hairline_in_the_sidecar_is_refused(tmp_path: Path, bad: float) -> None:
    check_bad_value_refused(tmp_path, "hairline", bad)


def pale_strip_figure(seed: int = 0) -> tuple[np.ndarray, list[Box]]:
    """Two 100-px micrographs and, between them behind white gutters, a 16-px wide picture that is
    mostly bare glass with sparse stained specks (a third of it ink by the 30-level mask)."""
    rng = np.random.default_rng(seed)
    arr = np.full((160, 300, 3), 255, np.uint8)
    boxes = [(20, 30, 120, 130), (142, 30, 158, 130), (180, 30, 280, 130)]
    for x0, y0, x1, y1 in boxes[::2]:
        arr[y0:y1, x0:x1] = _texture(rng, y1 - y0, x1 - x0)
    x0, y0, x1, y1 = boxes[1]
    strip = _glass(rng, y1 - y0, x1 - x0)
    specks = rng.random((y1 - y0, x1 - x0)) < 0.3
    specks[:, 0] = specks[:, -1] = True  # specks reach both long edges: the trim keeps the width
    strip[specks] = (150, 70, 140)
    arr[y0:y1, x0:x1] = strip
    return arr, boxes


def test_a_narrow_mostly_pale_picture_is_kept_with_tiny_pale(tmp_path: Path) -> None:
    arr, truth = pale_strip_figure()
    ink = ink_mask(arr)
    assert ink[30:130, 142:158].mean() < 0.7  # fails the plain picture test
    plain = default_finds_all_then_without(tmp_path, arr, truth, "tiny_pale", 0.9)
    assert max(iou(truth[1], b) for b in plain) < 0.5  # dropped as a label


def test_tiny_pale_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, pale_strip_figure()[0], "tiny_pale", 1.0)
    default = tmp_path / "c"  # the shipped sidecar sets both
    run_separate(SeparateConfig(input=str(tmp_path / "figs"), out=str(default), quiet=True))
    got = stored_settings(default)
    assert got["tiny_pale"] == 1.0 and got["hairline"] == 0.6 and got["hairline_rest"] == 0.05
