"""Guided's ``dominant`` setting (diary, section 54): a group of whitespace regions that one
confident detector box holds is merged into one panel only when its largest region dominates it
(a chart's plot with its thin label pieces); regions of similar size (a row of pictures or of
charts) stay apart."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_picture_groups import chart_with_legend, row_of_pictures

from glomssl.errors import GlomsslError
from glomssl.mining.boxes import iou, union_box
from glomssl.mining.classic import ink_mask
from glomssl.mining.hybrid import guided_boxes
from glomssl.mining.separate import SeparateConfig, Separator, run_separate, tuned_settings
from glomssl.mining.yolo import DEFAULT_WEIGHTS

Box = tuple[int, int, int, int]


def _bar_chart(dr: ImageDraw.ImageDraw, x0: int, y0: int, bars: tuple[int, ...]) -> Box:
    """Axes and bars (no labels) with the top-left corner at (x0, y0); returns the chart's box."""
    dr.line([(x0, y0), (x0, y0 + 100), (x0 + 110, y0 + 100)], fill=(0, 0, 0), width=2)
    for k, h in enumerate(bars):
        dr.rectangle(
            [x0 + 12 + 24 * k, y0 + 100 - h, x0 + 28 + 24 * k, y0 + 100], fill=(60, 90, 160)
        )
    return (x0, y0, x0 + 111, y0 + 102)


def _guided(arr: np.ndarray, box: Box, dominant: float) -> list[Box]:
    """Guided with the shipped settings (``dominant`` as given) and one confident detector box."""
    _, params = tuned_settings("guided")
    params = dataclasses.replace(params, dominant=dominant, hairline=0.0)  # its own test
    found = guided_boxes(arr, ink_mask(arr), [(box, 0.9)], 24, params)
    return [b for b, _ in found]


def test_pictures_of_similar_size_stay_apart() -> None:
    arr, truth = row_of_pictures([40, 44, 40, 42])
    held = union_box(truth)
    merged = _guided(arr, held, 0.0)  # off: the box joins the row into one panel
    assert len(merged) == 1 and iou(merged[0], held) > 0.95
    apart = _guided(arr, held, 0.6)
    assert len(apart) == 4
    for t in truth:
        assert max(iou(t, b) for b in apart) > 0.9


def test_charts_side_by_side_stay_apart() -> None:
    """Two bar charts (mostly background, so ``pictures`` would not part them) of similar size."""
    img = Image.new("RGB", (320, 200), "white")
    dr = ImageDraw.Draw(img)
    truth = [_bar_chart(dr, 30, 40, (60, 90, 40)), _bar_chart(dr, 170, 40, (80, 30, 70))]
    arr = np.asarray(img)
    held = union_box(truth)
    assert len(_guided(arr, held, 0.0)) == 1
    apart = _guided(arr, held, 0.6)
    assert len(apart) == 2
    for t in truth:
        assert max(iou(t, b) for b in apart) > 0.8


def test_a_chart_cut_from_its_legend_is_still_merged() -> None:
    arr, chart = chart_with_legend()  # the plot holds most of the two pieces' area
    for dominant in (0.0, 0.6):
        got = _guided(arr, chart, dominant)
        assert len(got) == 1 and iou(got[0], chart) > 0.8


def weights_with(tmp_path: Path, name: str, key: str, value: float) -> Path:
    """A copy of the shipped detector whose sidecar sets ``separate.guided.<key>`` to ``value``."""
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    w = tmp_path / name / "panel_detector.safetensors"
    w.parent.mkdir()
    shutil.copy(DEFAULT_WEIGHTS, w)
    meta["separate"]["guided"][key] = value
    w.with_suffix(".json").write_text(json.dumps(meta))
    return w


def default_finds_all_then_without(
    tmp_path: Path, arr: np.ndarray, truth: list[Box], key: str, min_iou: float
) -> list[Box]:
    """Asserts the shipped default returns exactly ``truth``'s panels of ``arr`` (each at IoU above
    ``min_iou``); returns the boxes of the same figure with ``key`` at 0 in a copy of the sidecar."""
    img = Image.fromarray(arr)
    (found,) = Separator("guided").split([img])
    assert len(found) == len(truth)
    for t in truth:
        assert max(iou(t, b) for b, _ in found) > min_iou
    off = weights_with(tmp_path, "w0", key, 0.0)
    (without,) = Separator("guided", weights=str(off)).split([img])
    return [b for b, _ in without]


def stored_settings(out: Path) -> dict:
    """The settings a ``separate`` output folder was cut with (its resume fingerprint)."""
    with sqlite3.connect(out / "separate.sqlite") as db:
        return json.loads(db.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0])


def check_recorded_only_when_set(tmp_path: Path, figure: np.ndarray, key: str, on: float) -> None:
    """A sidecar key at 0 (off) stays out of a run's fingerprint, so folders cut before the key
    existed still resume; set to ``on``, it is recorded and reaches the separator."""
    figs = tmp_path / "figs"
    figs.mkdir()
    Image.fromarray(figure).save(figs / "f.png")
    off = weights_with(tmp_path, "w0", key, 0.0)
    cfg = SeparateConfig(input=str(figs), out=str(tmp_path / "a"), weights=str(off), quiet=True)
    run_separate(cfg)
    assert key not in stored_settings(tmp_path / "a")
    w = weights_with(tmp_path, "w1", key, on)
    assert getattr(Separator("guided", weights=str(w)).hybrid, key) == on
    run_separate(dataclasses.replace(cfg, out=str(tmp_path / "b"), weights=str(w)))
    assert stored_settings(tmp_path / "b")[key] == on


def check_bad_value_refused(tmp_path: Path, key: str, bad: float) -> None:
    w = weights_with(tmp_path, "bad", key, bad)
    with pytest.raises(GlomsslError, match=key):
        Separator("guided", weights=str(w))


def test_dominant_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, row_of_pictures([40, 40, 40, 40])[0], "dominant", 0.6)


@pytest.mark.parametrize("bad", [math.nan, -0.5])
def test_a_bad_dominant_in_the_sidecar_is_refused(tmp_path: Path, bad: float) -> None:
    check_bad_value_refused(tmp_path, "dominant", bad)
