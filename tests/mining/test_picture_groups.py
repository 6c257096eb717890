"""Guided's ``pictures`` setting (diary, section 50; shipped off): a group of whitespace regions one
confident detector box holds stays apart when its members are pictures, and is merged as before
when they are a chart's pieces, specks or letters."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from glomssl.mining.boxes import iou, union_box
from glomssl.mining.classic import ink_mask
from glomssl.mining.hybrid import guided_boxes
from glomssl.mining.separate import SeparateConfig, Separator, run_separate, tuned_settings
from glomssl.mining.synth import Fonts
from glomssl.mining.yolo import DEFAULT_WEIGHTS

Box = tuple[int, int, int, int]


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A stained-tissue-like patch with no white in it."""
    base = rng.uniform([120, 60, 110], [210, 150, 200]).astype(np.float32)
    blotch = rng.normal(0, 1, (h // 4 + 1, w // 4 + 1, 1)).repeat(4, 0).repeat(4, 1)[:h, :w]
    return np.clip(base + 30 * blotch + rng.normal(0, 12, (h, w, 3)), 20, 235).astype(np.uint8)


def row_of_pictures(widths: list[int], height: int = 120) -> tuple[np.ndarray, list[Box]]:
    """A 200 x 320 figure with pictures of ``widths`` side by side, 6-px gutters between them."""
    rng = np.random.default_rng(3)
    arr = np.full((200, 320, 3), 255, np.uint8)
    boxes: list[Box] = []
    x = 20
    for w in widths:
        arr[40 : 40 + height, x : x + w] = _texture(rng, height, w)
        boxes.append((x, 40, x + w, 40 + height))
        x += w + 6
    return arr, boxes


def _guided(arr: np.ndarray, box: Box, pictures: float) -> list[Box]:
    """Guided with the shipped settings (``pictures`` as given, ``dominant`` off so that the box
    merges as it did when ``pictures`` was designed) and one confident detector box."""
    _, params = tuned_settings("guided")
    params = dataclasses.replace(params, pictures=pictures, dominant=0.0, hairline=0.0)
    found = guided_boxes(arr, ink_mask(arr), [(box, 0.9)], 24, params)
    return [b for b, _ in found]


def test_pictures_one_box_holds_stay_apart() -> None:
    arr, truth = row_of_pictures([40, 40, 40, 40])
    held = union_box(truth)
    merged = _guided(arr, held, 0.0)  # shipped: one panel over the group
    assert len(merged) == 1 and iou(merged[0], held) > 0.95
    apart = _guided(arr, held, 1.0)
    assert len(apart) == 4
    for t in truth:
        assert max(iou(t, b) for b in apart) > 0.9


def chart_with_legend() -> tuple[np.ndarray, Box]:
    """A bar chart and its framed legend, which whitespace cuts apart; returns it and its box."""
    img = Image.new("RGB", (320, 200), "white")
    dr = ImageDraw.Draw(img)
    font = Fonts().get(np.random.default_rng(1), 11)
    dr.line([(30, 30), (30, 160), (200, 160)], fill=(0, 0, 0), width=2)  # the axes
    for k, h in enumerate((60, 100, 40, 120)):
        dr.rectangle([45 + 40 * k, 160 - h, 70 + 40 * k, 160], fill=(60, 90, 160))
    dr.rectangle([230, 60, 300, 130], outline=(0, 0, 0))  # the legend, framed
    for k, label in enumerate(("sham", "UUO", "UUO+T")):
        dr.rectangle([236, 70 + 20 * k, 246, 80 + 20 * k], fill=(60 + 60 * k, 90, 160))
        dr.text((252, 68 + 20 * k), label, font=font, fill=(0, 0, 0))
    return np.asarray(img), (29, 30, 301, 162)


def test_a_charts_pieces_are_still_merged() -> None:
    """A bar chart whose legend whitespace cuts off: both pieces are long but mostly background, so
    one box still merges them into one panel."""
    arr, chart = chart_with_legend()
    ink = ink_mask(arr)
    assert float(ink[60:131, 230:301].mean()) < 0.7  # the legend is no picture
    for pictures in (0.0, 1.0):
        got = _guided(arr, chart, pictures)
        assert len(got) == 1 and iou(got[0], chart) > 0.8


def test_a_short_member_keeps_the_merge() -> None:
    """Every member must have a long side of ``tiny_long`` px: a speck or letter-sized picture beside
    a large one does not make the group "pictures" (a tile's blank corner beside its tissue)."""
    arr, truth = row_of_pictures([120, 20], height=20)
    arr[40:160, 20:140] = _texture(np.random.default_rng(4), 120, 120)  # the first one is large
    truth[0] = (20, 40, 140, 160)
    held = union_box(truth)
    got = _guided(arr, held, 1.0)
    assert len(got) == 1 and iou(got[0], held) > 0.95


def test_pictures_is_recorded_only_when_set(tmp_path: Path) -> None:
    figs = tmp_path / "figs"
    figs.mkdir()
    Image.fromarray(row_of_pictures([40, 40, 40, 40])[0]).save(figs / "f.png")
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())

    def weights_with(name: str, pictures: float) -> Path:
        w = tmp_path / name / "panel_detector.safetensors"
        w.parent.mkdir()
        shutil.copy(DEFAULT_WEIGHTS, w)
        side = json.loads(json.dumps(meta))
        side["separate"]["guided"]["pictures"] = pictures
        w.with_suffix(".json").write_text(json.dumps(side))
        return w

    def stored(out: Path) -> dict:
        with sqlite3.connect(out / "separate.sqlite") as db:
            return json.loads(db.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0])

    off = SeparateConfig(input=str(figs), out=str(tmp_path / "a"), quiet=True)
    run_separate(off)
    assert "pictures" not in stored(tmp_path / "a")  # older output folders still resume
    on = weights_with("w1", 1.0)
    assert Separator("guided", weights=str(on)).hybrid.pictures == 1.0
    run_separate(dataclasses.replace(off, out=str(tmp_path / "b"), weights=str(on)))
    assert stored(tmp_path / "b")["pictures"] == 1.0
