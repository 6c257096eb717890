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
    params = dataclasses.replace(params, dominant=dominant)
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


def _weights_with(tmp_path: Path, name: str, value: float) -> Path:
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    w = tmp_path / name / "panel_detector.safetensors"
    w.parent.mkdir()
    shutil.copy(DEFAULT_WEIGHTS, w)
    meta["separate"]["guided"]["dominant"] = value
    w.with_suffix(".json").write_text(json.dumps(meta))
    return w


def test_dominant_is_recorded_only_when_set(tmp_path: Path) -> None:
    figs = tmp_path / "figs"
    figs.mkdir()
    Image.fromarray(row_of_pictures([40, 40, 40, 40])[0]).save(figs / "f.png")

    def stored(out: Path) -> dict:
        with sqlite3.connect(out / "separate.sqlite") as db:
            return json.loads(db.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0])

    off = _weights_with(tmp_path, "w0", 0.0)
    cfg = SeparateConfig(input=str(figs), out=str(tmp_path / "a"), weights=str(off), quiet=True)
    run_separate(cfg)
    assert "dominant" not in stored(tmp_path / "a")  # output folders of earlier runs still resume
    on = _weights_with(tmp_path, "w1", 0.6)
    assert Separator("guided", weights=str(on)).hybrid.dominant == 0.6
    run_separate(dataclasses.replace(cfg, out=str(tmp_path / "b"), weights=str(on)))
    assert stored(tmp_path / "b")["dominant"] == 0.6


@pytest.mark.parametrize("bad", [math.nan, -0.5])
def test_a_bad_dominant_in_the_sidecar_is_refused(tmp_path: Path, bad: float) -> None:
    w = _weights_with(tmp_path, "bad", bad)
    with pytest.raises(GlomsslError, match="dominant"):
        Separator("guided", weights=str(w))
