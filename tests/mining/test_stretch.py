"""Pale figures darkened for the detector (docs/experiments/panel-detector.md, section 31): the
stretch itself, and that the detector is given the stretched pixels (a bad sidecar value:
test_windows.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from glomssl.mining.separate import stretch_ink


def _pale(seed: int = 0) -> np.ndarray:
    """A 120 x 160 figure: white page, one pale textured picture (grey 170-225)."""
    rng = np.random.default_rng(seed)
    arr = np.full((120, 160, 3), 255, np.uint8)
    arr[10:110, 10:150] = rng.integers(170, 226, (100, 140, 3), dtype=np.uint8)
    return arr


def test_pale_ink_reaches_the_level_and_white_stays_white() -> None:
    arr = _pale()
    out = stretch_ink(arr, 80.0)
    grey = out.mean(axis=2)
    ink = grey[grey < 235]
    assert abs(float(np.percentile(ink, 2)) - 80.0) < 6  # the darkest ink now near the level
    assert (out[0, 0] == 255).all() and (out[115, 155] == 255).all()  # the page is untouched
    inside = out[10:110, 10:150].astype(int)
    assert (inside <= arr[10:110, 10:150].astype(int)).all()  # only ever darker
    # the order of tones is kept: a darker pixel stays darker
    a, b = arr[50, 50].astype(int).sum(), arr[60, 60].astype(int).sum()
    c, d = out[50, 50].astype(int).sum(), out[60, 60].astype(int).sum()
    assert (a < b) == (c < d) or a == b


def test_dark_or_empty_figures_and_level_zero_are_left_alone() -> None:
    dark = _pale()
    dark[20:45, 20:45] = 20  # some ink (over 2% of it) darker than the level
    assert stretch_ink(dark, 80.0) is dark
    blank = np.full((50, 50, 3), 255, np.uint8)
    blank[0, :5] = 200  # under 100 ink pixels
    assert stretch_ink(blank, 80.0) is blank
    pale = _pale()
    assert stretch_ink(pale, 0.0) is pale


def test_the_detector_sees_the_stretched_figure() -> None:
    from glomssl.mining.separate import Separator

    sep = Separator("yolo")
    seen: list[np.ndarray] = []

    class Spy:
        def predict(self, a: Any, **_: Any) -> list[Any]:
            import torch

            batch = a if isinstance(a, list) else [a]
            seen.extend(batch)
            none = SimpleNamespace(xyxy=torch.zeros((0, 4)), conf=torch.zeros(0))
            return [SimpleNamespace(boxes=none) for _ in batch]

    sep.detector = Spy()
    sep.rect = True
    pale = _pale()
    for level, darker in ((0.0, False), (80.0, True)):
        seen.clear()
        sep.stretch = level
        sep._predict([pale])
        assert len(seen) == 1
        got = seen[0][:, :, ::-1]  # back from BGR
        assert (int(got.min()) < int(pale.min()) - 30) == darker
