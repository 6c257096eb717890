"""Guided's ``pale_join`` setting (diary, section 63): two returned boxes that are pieces of one
picture, parted by a band of bare slide glass that the ink mask reads as a gutter, are joined back;
a white gutter, a box in between, a gap too narrow, sides that do not line up and two pieces the
detector holds apart each keep them separate."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from test_dominant_merge import (
    check_bad_value_refused,
    check_recorded_only_when_set,
    default_finds_all_then_without,
)
from test_pale_edges import _glass, _tissue

from glomssl.mining.classic import background_colour, ink_mask, off_background
from glomssl.mining.hybrid import HybridParams, join_pale
from glomssl.mining.separate import tuned_settings

Box = tuple[int, int, int, int]
PARAMS = HybridParams(pale=8.0, pale_share=0.6, pale_join=4.0)


def lanes(seed: int = 0, band: tuple[int, int] = (120, 170), white: bool = False):
    """Six tall narrow pictures (36 x 300 px, 8-px gutters) side by side; the third has a band of
    bare glass (or, with ``white``, of bare page: two pictures) across it at rows ``band``.
    Returns the figure and the six pictures' boxes."""
    rng = np.random.default_rng(seed)
    arr = np.full((360, 512, 3), 255, np.uint8)
    truth: list[Box] = []
    for k in range(6):
        x = 40 + k * 44
        arr[30:330, x : x + 36] = _tissue(rng, 300, 36)
        truth.append((x, 30, x + 36, 330))
    x = truth[2][0]
    arr[band[0] : band[1], x : x + 36] = 255 if white else _glass(rng, band[1] - band[0], 36)
    return arr, truth


def _pale_ink(arr: np.ndarray) -> np.ndarray:
    bg = background_colour(arr)
    return ink_mask(arr, bg=bg) | off_background(arr, bg, PARAMS.pale)


def _join(arr, before, after, dets=(), params=PARAMS):
    scored = lambda boxes: [(b, 0.5 + 0.1 * k) for k, b in enumerate(boxes)]  # noqa: E731
    out = join_pale(scored(before), scored(after), _pale_ink(arr), list(dets), params)
    return sorted(b for b, _ in out), out


# the third lane cut at the band: the pieces as cut (trimmed to ink) and as grown over the glass
CUT = [(128, 30, 164, 120), (128, 170, 164, 330)]
GROWN = [(128, 30, 164, 145), (128, 145, 164, 330)]


def test_pieces_parted_by_glass_are_joined_with_the_higher_score() -> None:
    arr, truth = lanes()
    boxes, out = _join(arr, CUT, GROWN)
    assert boxes == [truth[2]]
    assert out[0][1] == pytest.approx(0.6)


def test_a_white_gutter_keeps_the_pieces_apart() -> None:
    arr, _ = lanes(white=True)
    boxes, _ = _join(arr, CUT, GROWN)
    assert boxes == sorted(GROWN)


def test_a_narrow_gap_a_box_between_or_misaligned_sides_keep_them_apart() -> None:
    arr, _ = lanes(band=(120, 123))  # glass 3 px high: under pale_join's 4 px
    cut = [(128, 30, 164, 120), (128, 123, 164, 330)]
    grown = [(128, 30, 164, 121), (128, 121, 164, 330)]
    assert _join(arr, cut, grown)[0] == sorted(grown)
    arr, _ = lanes()
    between = (130, 140, 160, 150)  # another returned box lies in the gap
    boxes, _ = _join(arr, CUT + [between], GROWN + [between])
    assert boxes == sorted(GROWN + [between])
    narrow = [(128, 30, 164, 145), (128, 145, 150, 330)]  # right ends 14 px apart
    assert _join(arr, CUT, narrow)[0] == sorted(narrow)


def test_pieces_the_detector_holds_apart_stay_apart() -> None:
    arr, truth = lanes()
    both = [(128.0, 31.0, 164.0, 146.0), (127.0, 144.0, 165.0, 331.0)]
    assert _join(arr, CUT, GROWN, dets=both)[0] == sorted(GROWN)
    one = both[:1]  # only one piece confirmed: still joined
    assert _join(arr, CUT, GROWN, dets=one)[0] == [truth[2]]


def test_the_default_joins_the_lane_and_without_the_setting_cuts_it(tmp_path: Path) -> None:
    arr, truth = lanes()
    assert tuned_settings("guided")[1].pale_join == 4.0  # the shipped sidecar sets it
    without = default_finds_all_then_without(tmp_path, arr, truth, "pale_join", 0.99)
    assert len(without) == 7  # the glass band cuts the third lane in two
    assert truth[2] not in without


def test_pale_join_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, lanes()[0], "pale_join", 4.0)


@pytest.mark.parametrize("bad", [math.nan, -1.0])
def test_a_bad_pale_join_in_the_sidecar_is_refused(tmp_path: Path, bad: float) -> None:
    check_bad_value_refused(tmp_path, "pale_join", bad)
