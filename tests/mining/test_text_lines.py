"""Guided's ``text`` setting (diary, section 61): a returned box that holds one line of text (a
chart's rotated tick label that whitespace parts from the plot) is dropped; small charts, small
pictures and pale pictures are not text."""

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
    stored_settings,
    weights_with,
)
from test_pale_edges import _glass
from test_picture_groups import _texture

from glomssl.mining.classic import background_colour, ink_mask, off_background
from glomssl.mining.hybrid import text_line
from glomssl.mining.separate import Separator, tuned_settings
from glomssl.mining.synth import Fonts

Box = tuple[int, int, int, int]
LABELS = ("Control", "Vehicle", "Week 12")


def labelled_charts(angle: int = 60) -> tuple[Image.Image, list[Box]]:
    """Two bar charts side by side, each with three tick labels written at ``angle`` degrees
    below its x axis, a blank gap between axis and labels. Returns the figure and the charts'
    boxes (axes and bars)."""
    font = Fonts().get(np.random.default_rng(2), 15)
    img = Image.new("RGB", (512, 300), "white")
    dr = ImageDraw.Draw(img)
    charts: list[Box] = []
    for x0 in (40, 290):
        dr.line([(x0, 30), (x0, 180), (x0 + 180, 180)], fill=(0, 0, 0), width=2)
        for k, h in enumerate((70, 120, 90)):
            bx = x0 + 20 + 55 * k
            dr.rectangle([bx, 180 - h, bx + 35, 180], fill=(60 + 60 * k, 90, 160))
            word = Image.new("L", (80, 24), 0)
            ImageDraw.Draw(word).text((2, 2), LABELS[k], font=font, fill=255)
            word = word.rotate(angle, expand=True)
            word = word.crop(word.getbbox())
            img.paste((0, 0, 0), (bx + 30 - word.width, 190), word)
        charts.append((x0, 30, x0 + 181, 182))
    return img, charts


def _is_text(arr: np.ndarray, box: Box, text: float = 0.125) -> bool:
    params = dataclasses.replace(tuned_settings("guided")[1], text=text)
    bg = background_colour(arr)
    ink = ink_mask(arr, bg=bg)
    return text_line(ink, ink | off_background(arr, bg, params.pale), box, params)


def test_a_rotated_tick_label_is_text_and_a_small_chart_is_not() -> None:
    img, _ = labelled_charts()
    arr = np.asarray(img)
    ink = ink_mask(arr)
    ys, xs = np.nonzero(ink[188:, 100:150])  # the second label of the first chart
    label = (
        100 + int(xs.min()),
        188 + int(ys.min()),
        100 + int(xs.max()) + 1,
        188 + int(ys.max()) + 1,
    )
    assert max(label[2] - label[0], label[3] - label[1]) < 64
    assert _is_text(arr, label)
    assert not _is_text(arr, label, text=0.05)  # too large for a smaller limit
    small = Image.new("RGB", (512, 300), "white")  # a 50-px chart: its axes run across it
    dr = ImageDraw.Draw(small)
    dr.line([(20, 20), (20, 70), (70, 70)], fill=(0, 0, 0), width=1)
    for k, h in enumerate((20, 35, 12)):
        dr.line([(30 + 12 * k, 70 - h), (30 + 12 * k, 70)], fill=(0, 0, 0), width=2)
    assert not _is_text(np.asarray(small), (20, 20, 71, 71))


def test_small_pictures_are_not_text() -> None:
    rng = np.random.default_rng(4)
    arr = np.full((300, 512, 3), 255, np.uint8)
    arr[20:70, 20:70] = _texture(rng, 50, 50)  # a small stained picture: mostly ink
    assert not _is_text(arr, (20, 20, 70, 70))
    glass = _glass(rng, 50, 50)  # bare glass with a few dark specks: sparse by the ink mask
    specks = rng.random((50, 50)) < 0.1
    glass[specks] = (150, 70, 140)
    arr[100:150, 20:70] = glass
    assert ink_mask(arr)[100:150, 20:70].mean() < 0.25
    assert not _is_text(arr, (20, 100, 70, 150))  # pale pixels count: not sparse


def test_the_default_drops_tick_labels_and_keeps_the_charts(tmp_path: Path) -> None:
    img, charts = labelled_charts()
    (found,) = Separator("guided").split([img])
    assert sorted(b for b, _ in found) == sorted(charts)
    off = weights_with(tmp_path, "w0", "text", 0.0)
    (before,) = Separator("guided", weights=str(off)).split([img])
    assert len(before) == 8  # the six labels came back as panels


def test_the_shipped_sidecar_sets_text() -> None:
    assert tuned_settings("guided")[1].text == 0.125


def test_text_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, np.asarray(labelled_charts()[0]), "text", 0.125)
    assert "text_ink" not in stored_settings(tmp_path / "a")
    assert stored_settings(tmp_path / "b")["text_stroke"] == 0.8


@pytest.mark.parametrize("bad", [math.nan, -0.1])
def test_a_bad_text_in_the_sidecar_is_refused(tmp_path: Path, bad: float) -> None:
    check_bad_value_refused(tmp_path, "text", bad)
