"""Guided's ``tiny`` setting (diary, section 49): narrow pictures under --min-side are returned,
letters, labels and flat patches are not; and the real-layout file reader of the B benchmark."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from glomssl.mining.boxes import iou
from glomssl.mining.classic import ink_mask
from glomssl.mining.hybrid import HybridParams, tiny_picture
from glomssl.mining.separate import SeparateConfig, Separator, run_separate
from glomssl.mining.synth import Fonts
from glomssl.mining.synth.heldout import read_layouts
from glomssl.mining.yolo import DEFAULT_WEIGHTS

Box = tuple[int, int, int, int]
ON = HybridParams(tiny=12.0)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A stained-tissue-like patch: smooth blotches plus grain around a random stain colour, no
    white (neighbouring pictures of a montage differ in stain and brightness)."""
    base = rng.uniform([120, 60, 110], [210, 150, 200]).astype(np.float32)
    blotch = rng.normal(0, 1, (h // 4 + 1, w // 4 + 1, 1)).repeat(4, 0).repeat(4, 1)[:h, :w]
    grain = rng.normal(0, 12, (h, w, 3))
    return np.clip(base + 30 * blotch + grain, 20, 235).astype(np.uint8)


def _strip_figure(seed: int = 0) -> tuple[Image.Image, list[Box], list[Box], Box]:
    """A 512 x 500 figure laid out like a real blot-and-micrograph figure: two large pictures on the
    left, two groups of four 17-px-wide picture strips in two rows (4-px gutters), and a caption
    line. Returns (figure, large boxes, strip boxes, caption box)."""
    rng = np.random.default_rng(seed)
    arr = np.full((500, 512, 3), 255, np.uint8)
    large = [(13, 56, 101, 225), (12, 287, 101, 456)]
    strips = [
        (x0, y0, x0 + 17, y1)
        for g in range(2)
        for y0, y1 in ((60, 220), (290, 450))
        for x0 in (138 + 200 * g + 21 * i for i in range(4))
    ]
    for x0, y0, x1, y1 in large + strips:
        arr[y0:y1, x0:x1] = _texture(rng, y1 - y0, x1 - x0)
    img = Image.fromarray(arr)
    font = Fonts().get(np.random.default_rng(1), 13)
    ImageDraw.Draw(img).text(
        (14, 470), "Kidney cortex, PAS, day 7 vs. control", font=font, fill=(0, 0, 0)
    )
    caption = (10, 465, 400, 495)
    return img, large, strips, caption


def test_tiny_picture_takes_textured_boxes_only() -> None:
    rng = np.random.default_rng(0)
    arr = np.full((120, 300, 3), 255, np.uint8)
    arr[10:110, 10:26] = _texture(rng, 100, 16)  # a narrow picture
    arr[10:110, 40:56] = (200, 30, 30)  # a flat colour bar (a legend key, a bar of a chart)
    img = Image.fromarray(arr)
    dr = ImageDraw.Draw(img)
    font = Fonts().get(np.random.default_rng(1), 14)
    dr.text((80, 40), "Glomerular area", font=font, fill=(0, 0, 0))  # a label, sparse ink
    dr.text((80, 80), "B", font=font, fill=(0, 0, 0))  # a letter: short
    arr = np.asarray(img)
    ink = ink_mask(arr)
    assert tiny_picture(arr, ink, (10, 10, 26, 110), ON)
    assert not tiny_picture(arr, ink, (40, 10, 56, 110), ON)  # flat
    label = (80, 40, 200, 58)
    assert float(ink[40:58, 80:200].mean()) < ON.tiny_ink  # the label is sparse ...
    assert not tiny_picture(arr, ink, label, ON)  # ... so not a picture
    assert not tiny_picture(arr, ink, (80, 80, 94, 96), ON)  # a letter is too short
    # the thresholds are the setting's: lowered, the label passes as a picture
    assert tiny_picture(arr, ink, label, dataclasses.replace(ON, tiny_ink=0.05, tiny_std=1.0))


def test_guided_tiny_returns_narrow_pictures_that_were_dropped() -> None:
    img, large, strips, caption = _strip_figure()
    off = Separator("guided", hybrid={"tiny": 0.0}).split([img])[0]
    tiny = Separator("guided").split([img])[0]  # the shipped default (section 49)

    def found(pred: list, truth: list[Box]) -> int:
        return sum(any(iou(b, t) >= 0.5 for b, _ in pred) for t in truth)

    assert Separator("guided").hybrid.tiny == 8  # on in the shipped sidecar (12 until section 64)
    assert found(off, strips) == 0  # every strip is under --min-side 24: never returned
    assert found(tiny, strips) >= 6  # of 16 (8 at the time of writing)
    assert found(tiny, large) == found(off, large) == 2
    # the caption is text, not a picture: no returned box lies mostly on it
    for b, _ in tiny:
        inside = max(0, min(b[2], caption[2]) - max(b[0], caption[0])) * max(
            0, min(b[3], caption[3]) - max(b[1], caption[1])
        )
        assert inside < 0.5 * (b[2] - b[0]) * (b[3] - b[1]), b


def test_tiny_is_guided_only_and_respects_a_smaller_min_side() -> None:
    img, *_ = _strip_figure()
    assert Separator("guided", hybrid={"tiny": 12.0})._floor() == 12
    assert Separator("guided", hybrid={"tiny": 12.0}, min_side=8)._floor() == 8
    assert Separator("hybrid", hybrid={"tiny": 12.0})._floor() == 24
    assert Separator("guided", hybrid={"tiny": 0.0})._floor() == 24


def _weights_with(tmp_path: Path, guided: dict) -> Path:
    weights = tmp_path / "w" / "panel_detector.safetensors"
    weights.parent.mkdir(exist_ok=True)
    shutil.copy(DEFAULT_WEIGHTS, weights)
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    meta["separate"]["guided"] = guided
    weights.with_suffix(".json").write_text(json.dumps(meta))
    return weights


def test_sidecar_tiny_reaches_guided_and_is_recorded_only_when_set(tmp_path: Path) -> None:
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    figs = tmp_path / "figs"
    figs.mkdir()
    _strip_figure()[0].save(figs / "f.png")

    def stored(out: Path) -> dict:
        with sqlite3.connect(out / "separate.sqlite") as db:
            return json.loads(db.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0])

    plain = _weights_with(tmp_path, {**meta["separate"]["guided"], "tiny": 0})
    cfg = SeparateConfig(input=str(figs), out=str(tmp_path / "a"), weights=str(plain), quiet=True)
    few = run_separate(cfg)["panels"]
    assert not any(k.startswith("tiny") for k in stored(tmp_path / "a"))
    shutil.rmtree(tmp_path / "w")
    on = _weights_with(tmp_path, {**meta["separate"]["guided"], "tiny": 12})
    assert Separator("guided", weights=str(on)).hybrid.tiny == 12.0
    with pytest.raises(Exception, match="other settings"):  # must not resume silently
        run_separate(cfg)
    more = run_separate(dataclasses.replace(cfg, out=str(tmp_path / "b")))["panels"]
    assert stored(tmp_path / "b")["tiny"] == 12 and stored(tmp_path / "b")["tiny_ink"] == 0.7
    assert more >= few + 6  # the strips


def test_read_layouts(tmp_path: Path) -> None:
    f = tmp_path / "layouts.txt"
    f.write_text("# comment\n0001 fig2 2 10,20,110,220 130,20,230,220\n0002 fig1 1 0,0,50,40\n")
    got = read_layouts(f)
    assert got[0] == ("0001", (240, 240), [(10, 20, 110, 220), (130, 20, 230, 220)])
    assert got[1] == ("0002", (50, 40), [(0, 0, 50, 40)])
    f.write_text("0003 fig1 2 10,20,110,220\n")  # N says 2, one box given
    with pytest.raises(ValueError, match="0003"):
        read_layouts(f)
    f.write_text("0004 fig1 1 110,20,10,220\n")  # x1 < x0
    with pytest.raises(ValueError, match="0004"):
        read_layouts(f)


def test_shipped_layout_file_reads() -> None:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "sciint_layouts.txt"
    got = read_layouts(path)
    assert len(got) == 303 and sum(len(b) for *_, b in got) == 2843
    assert [int(i) for i, *_ in got] == list(range(1, 304))


@pytest.mark.realdata
def test_default_finds_narrow_panels_of_real_biomedical_layouts(
    shared_data: Path, tmp_path: Path
) -> None:
    """On real biomedical layouts (B, section 49; the first 40 figures of the looked-at half, one
    fill) the default beats classic and its own setting without ``tiny``."""
    from glomssl.mining.boxes import prf1
    from glomssl.mining.synth.heldout import layout_file_set

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "sciint_layouts.txt"
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    odd = [ln for ln in lines if int(ln.split()[0]) % 2 == 1][:40]
    small = tmp_path / "b.txt"
    small.write_text("\n".join(odd) + "\n")
    figs, truths = layout_file_set(small, shared_data, 1, 0)

    def f1(sep: Separator) -> float:
        preds = [[b for b, _ in p] for p in sep.split(figs)]
        return float(prf1(preds, truths)["f1"])

    default = f1(Separator("guided"))
    assert default > f1(Separator("guided", hybrid={"tiny": 0.0})) + 0.05
    assert default > f1(Separator("classic"))
