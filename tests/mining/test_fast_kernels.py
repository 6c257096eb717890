"""The separator's faster pixel kernels give exactly what the plain numpy / scipy forms give.

Each kernel replaced a slower expression in the guided path (median and quartile of colour jumps,
channel reductions, the off-background test, the 3x3 opening of bare glass, the grey of the ink stretch); a
changed result would change which panels are cut, so each is checked against its reference on
random arrays of many shapes, odd and even lengths, fractional background colours included."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from glomssl.mining.classic import (
    LineSums,
    channel_min,
    median_and_quarter,
    neighbour_jump,
    off_background,
)
from glomssl.mining.hybrid import open_square
from glomssl.mining.separate import mean_grey


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 9, 16, 17, 101])
def test_median_and_quarter_equal_numpy(n: int) -> None:
    rng = np.random.default_rng(n)
    values = rng.integers(0, 256, (23, n)).astype(np.uint8)
    median, quarter = median_and_quarter(values)
    wide = values.astype(np.int16)
    np.testing.assert_array_equal(median, np.median(wide, axis=1))
    np.testing.assert_array_equal(quarter, np.quantile(wide, 0.25, axis=1))


def test_neighbour_jump_and_channel_min_equal_numpy() -> None:
    rng = np.random.default_rng(7)
    for h, w in [(1, 5), (5, 1), (2, 2), (17, 31), (40, 9)]:
        arr = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        wide = arr.astype(np.int16)
        if w > 1:
            expect = np.abs(wide[:, 1:] - wide[:, :-1]).max(axis=2)
            np.testing.assert_array_equal(neighbour_jump(arr, 1), expect)
        if h > 1:
            expect = np.abs(wide[1:] - wide[:-1]).max(axis=2)
            np.testing.assert_array_equal(neighbour_jump(arr, 0), expect)
        np.testing.assert_array_equal(channel_min(arr), arr.min(axis=2))


def test_line_sums_jumps_are_the_boxs_own() -> None:
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (30, 40, 3)).astype(np.uint8)
    lines = LineSums(arr, np.ones((30, 40), dtype=bool))
    x0, y0, x1, y1 = 5, 3, 33, 21
    sub = arr[y0:y1, x0:x1].astype(np.int16)
    across_columns = np.abs(sub[:, 1:] - sub[:, :-1]).max(axis=2).T  # (w - 1, h)
    across_rows = np.abs(sub[1:] - sub[:-1]).max(axis=2)  # (h - 1, w)
    np.testing.assert_array_equal(lines.jumps((x0, y0, x1, y1), 1), across_columns)
    np.testing.assert_array_equal(lines.jumps((x0, y0, x1, y1), 0), across_rows)


@pytest.mark.parametrize("tol", [3.0, 8.0, 8.5, 30.0])
def test_off_background_equals_the_float_test(tol: float) -> None:
    rng = np.random.default_rng(int(tol * 10))
    arr = rng.integers(0, 256, (37, 23, 3)).astype(np.uint8)
    for bg in (
        np.array([244.0, 244.0, 244.0]),
        rng.uniform(0, 255, 3),
        np.array([0.3, 128.5, 255]),
    ):
        expect = (np.abs(arr.astype(np.float32) - bg.astype(np.float32)) > tol).any(axis=2)
        np.testing.assert_array_equal(off_background(arr, bg, tol), expect)
        as_float = arr.astype(np.float32)  # not uint8: the direct form
        np.testing.assert_array_equal(off_background(as_float, bg, tol), expect)


def test_open_square_equals_scipy() -> None:
    rng = np.random.default_rng(11)
    square = np.ones((3, 3), dtype=bool)
    for h, w in [(1, 1), (1, 7), (2, 2), (3, 3), (4, 9), (25, 31)]:
        for density in (0.3, 0.7, 0.95):
            mask = rng.random((h, w)) < density
            np.testing.assert_array_equal(
                open_square(mask), ndimage.binary_opening(mask, structure=square)
            )
    full = np.ones((6, 6), dtype=bool)  # the border counts as empty: the frame survives
    assert open_square(full).all()
    lone = np.zeros((6, 6), dtype=bool)
    lone[2, 2:5] = True  # a line one pixel thin is opened away
    assert not open_square(lone).any()


def test_mean_grey_equals_the_channel_mean() -> None:
    rng = np.random.default_rng(5)
    for h, w in [(1, 1), (3, 7), (48, 64)]:
        arr = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        np.testing.assert_array_equal(mean_grey(arr), arr.mean(axis=2))
    white = np.full((4, 4, 3), 255, np.uint8)  # no overflow at the top of the range
    np.testing.assert_array_equal(mean_grey(white), np.full((4, 4), 255.0))
