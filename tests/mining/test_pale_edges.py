"""Guided's ``pale`` setting (diary, section 57): a returned box grows back over its picture's pale
edge (bare slide glass a few grey levels under white), which the ink mask's 30-level tolerance
trims off; a white gutter, a neighbour's ink and another returned box stop it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from test_dominant_merge import (
    check_bad_value_refused,
    check_recorded_only_when_set,
    default_finds_all_then_without,
    stored_settings,
    weights_with,
)

from glomssl.errors import GlomsslError
from glomssl.mining.boxes import inter, iou
from glomssl.mining.classic import grow_pale, ink_mask, trim_box
from glomssl.mining.separate import SeparateConfig, Separator, run_separate, tuned_settings

Box = tuple[int, int, int, int]


def _tissue(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A dark, textured (h, w, 3) patch: stained tissue."""
    base = np.array([170, 90, 150], dtype=np.int16)
    return np.clip(base + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8)


def _glass(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A pale (h, w, 3) patch: slide glass about 11 levels under white, with scanner noise."""
    return np.clip(244 + rng.integers(-3, 4, (h, w, 3)), 0, 255).astype(np.uint8)


def pale_pair(seed: int = 0) -> tuple[np.ndarray, list[Box]]:
    """Two 120-px micrographs with a white gutter; the left one's left 40 columns are bare glass,
    the right one's bottom 30 rows too. Returns the figure and the two true boxes."""
    rng = np.random.default_rng(seed)
    arr = np.full((160, 300, 3), 255, dtype=np.uint8)
    a, b = (20, 20, 140, 140), (160, 20, 280, 140)
    arr[20:140, 20:60] = _glass(rng, 120, 40)
    arr[20:140, 60:140] = _tissue(rng, 120, 80)
    arr[20:110, 160:280] = _tissue(rng, 90, 120)
    arr[110:140, 160:280] = _glass(rng, 30, 120)
    return arr, [a, b]


def _trimmed(arr: np.ndarray, truth: list[Box]) -> list[tuple[Box, float]]:
    ink = ink_mask(arr)
    out = []
    for t in truth:
        box = trim_box(ink, t)
        assert box is not None
        out.append((box, 1.0))
    return out


def test_a_box_grows_back_over_its_pale_edge() -> None:
    arr, truth = pale_pair()
    short = _trimmed(arr, truth)
    assert iou(short[0][0], truth[0]) < 0.7  # the ink mask cut the glass off
    assert iou(short[1][0], truth[1]) < 0.8
    grown = grow_pale(arr, ink_mask(arr), short, 8)
    for (box, score), t in zip(grown, truth):
        assert box == t
        assert score == 1.0


def test_glass_closer_to_white_than_the_tolerance_is_left_alone() -> None:
    arr, truth = pale_pair()
    short = _trimmed(arr, truth)
    assert grow_pale(arr, ink_mask(arr), short, 15) == short  # 244 is within 15 of white


def test_a_white_gutter_and_sparse_noise_do_not_move_a_box() -> None:
    rng = np.random.default_rng(1)
    arr = np.full((120, 120, 3), 255, dtype=np.uint8)
    arr[30:90, 30:90] = _tissue(rng, 60, 60)
    noisy = rng.random((120, 120)) < 0.3  # JPEG-like specks on 30 % of the gutter's pixels
    noisy[30:90, 30:90] = False
    arr[noisy] = 240
    box = ((30, 30, 90, 90), 0.5)
    assert grow_pale(arr, ink_mask(arr), [box], 8) == [box]


def test_growth_stops_at_ink_and_at_another_box() -> None:
    rng = np.random.default_rng(2)
    arr = np.full((100, 260, 3), 255, dtype=np.uint8)
    arr[20:80, 20:80] = _tissue(rng, 60, 60)
    arr[20:80, 80:120] = _glass(rng, 60, 40)  # glass between two touching pictures
    arr[20:80, 120:180] = _tissue(rng, 60, 60)  # not returned: its ink stops the growth
    arr[20:80, 180:200] = _glass(rng, 60, 20)
    arr[20:80, 200:240] = _tissue(rng, 60, 40)
    ink = ink_mask(arr)
    (grown,) = grow_pale(arr, ink, [((20, 20, 80, 80), 1.0)], 8)
    assert grown[0] == (20, 20, 120, 80)  # over the glass, not into the neighbour
    boxes = [((120, 20, 180, 80), 1.0), ((200, 20, 240, 80), 1.0)]
    (left, _), (right, _) = grow_pale(arr, ink, boxes, 8)
    assert inter(left, right) == 0  # the glass between them goes to one box, never to both
    assert (left[2], right[0]) in {(200, 200), (180, 180)}


def test_the_default_returns_whole_pale_micrographs(tmp_path: Path) -> None:
    """End to end through ``Separator``: the shipped sidecar sets ``pale``; without it the same
    figure comes back with the glass cut off."""
    arr, truth = pale_pair()
    assert tuned_settings("guided")[1].pale == 8.0
    short = default_finds_all_then_without(tmp_path, arr, truth, "pale", 0.97)
    assert max(iou(truth[0], b) for b in short) < 0.7


def test_pale_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, pale_pair()[0], "pale", 8.0)
    assert "pale_share" not in stored_settings(tmp_path / "a")
    default = tmp_path / "c"  # the shipped sidecar sets it
    run_separate(SeparateConfig(input=str(tmp_path / "figs"), out=str(default), quiet=True))
    assert stored_settings(default)["pale"] == 8.0


@pytest.mark.parametrize("bad", [math.nan, -1.0])
def test_a_bad_pale_in_the_sidecar_is_refused(tmp_path: Path, bad: float) -> None:
    check_bad_value_refused(tmp_path, "pale", bad)


@pytest.mark.parametrize("share", [0.0, 1.5])
def test_a_pale_share_outside_0_1_is_refused(tmp_path: Path, share: float) -> None:
    """At 0 every blank line would pass and boxes would grow across white gutters."""
    w = weights_with(tmp_path, "share", "pale_share", share)
    with pytest.raises(GlomsslError, match="pale_share"):
        Separator("guided", weights=str(w))
