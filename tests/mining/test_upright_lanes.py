"""Guided's ``tiny_upright`` setting (diary, section 65): a region between gutters that stands
upright (a lane, a column of micrographs) is kept down to ``tiny`` px wide, though narrower than
the size limit (3 % of the figure's short side), when it is filled like a picture; a word printed
rotated at the figure's edge, which has blank space between its letters, is not."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_dominant_merge import check_bad_value_refused, check_recorded_only_when_set
from test_flat_lines import pictures_on_white

from glomssl.mining.boxes import iou
from glomssl.mining.hybrid import HybridParams, upright_lane
from glomssl.mining.separate import Separator
from glomssl.mining.synth import Fonts

Box = tuple[int, int, int, int]
LAYOUTS = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "sciint_layouts.txt"


def lanes_beside_row_labels() -> tuple[Image.Image, list[Box], list[Box], list[Box]]:
    """A 512 x 512 figure (size limit 15 px): two large pictures, eight 11-px-wide upright lanes
    between them behind 9-px gutters, and two row labels printed rotated, in bold, at the left
    edge. Returns the figure, the large boxes, the lane boxes and the label boxes."""
    large = [(60, 30, 200, 480), (390, 30, 500, 480)]
    lanes = [(220 + 20 * i, 60, 231 + 20 * i, 440) for i in range(8)]
    img = pictures_on_white((512, 512), large + lanes, 3)
    font = Fonts().get(np.random.default_rng(1), 12)
    labels = []
    for word, y in (("Control", 100), ("Treated", 320)):
        tile = Image.new("RGB", (80, 16), (255, 255, 255))
        ImageDraw.Draw(tile).text((2, 1), word, font=font, fill=(0, 0, 0), stroke_width=1)
        tile = tile.rotate(90, expand=True)  # 16 x 80, reading bottom to top
        img.paste(tile, (4, y))
        labels.append((4, y, 20, y + 80))
    return img, large, lanes, labels


def _found(out: list[Box], truth: list[Box]) -> int:
    return sum(any(iou(b, t) >= 0.5 for b in out) for t in truth)


def _touching(out: list[Box], areas: list[Box]) -> int:
    return sum(any(b[0] < t[2] and t[0] < b[2] and b[1] < t[3] and t[1] < b[3] for t in areas)
               for b in out)  # fmt: skip


def test_upright_lane_needs_shape_fill_and_the_setting() -> None:
    on = HybridParams(tiny=8.0, tiny_upright=2.0)
    full = np.ones((100, 100), bool)
    assert upright_lane((0, 0, 10, 60), 15, full, on)  # narrow, high, filled
    assert not upright_lane((0, 0, 7, 60), 15, full, on)  # under tiny
    assert not upright_lane((0, 0, 10, 14), 15, full, on)  # lower than the size limit
    assert not upright_lane((0, 0, 10, 19), 15, full, on)  # under twice as high as wide
    half = full.copy()
    half[::2] = False  # every other row blank, as between a rotated word's letters
    assert not upright_lane((0, 0, 10, 60), 15, half, on)
    assert upright_lane(
        (0, 0, 10, 60), 15, half, HybridParams(tiny=8, tiny_upright=2, tiny_fill=0.5)
    )
    assert not upright_lane((0, 0, 10, 60), 15, full, HybridParams(tiny=8.0))  # off
    assert not upright_lane((0, 0, 10, 60), 15, full, HybridParams(tiny_upright=2.0))  # no tiny


def test_lanes_are_kept_and_rotated_labels_are_not() -> None:
    img, large, lanes, labels = lanes_beside_row_labels()
    runs = {"on": {}, "off": {"tiny_upright": 0.0}, "no_fill": {"tiny_fill": 0.0}}
    out = {
        k: [b for b, _ in Separator("guided", hybrid=h).split([img])[0]] for k, h in runs.items()
    }
    assert _found(out["on"], large) == 2 and _found(out["on"], lanes) == 8
    assert _touching(out["on"], labels) == 0 and len(out["on"]) == 10
    assert _found(out["off"], lanes) == 0  # 11-px lanes are under the 15-px limit
    assert _found(out["off"], large) == 2 and _touching(out["off"], labels) == 0
    assert _found(out["no_fill"], lanes) == 8 and _touching(out["no_fill"], labels) >= 1


def test_the_shipped_sidecar_keeps_upright_lanes() -> None:
    hp = Separator("guided").hybrid
    assert (hp.tiny, hp.tiny_upright, hp.tiny_fill) == (8.0, 2.0, 0.9)
    img, large, lanes, labels = lanes_beside_row_labels()
    out = [b for b, _ in Separator("guided").split([img])[0]]
    assert _found(out, lanes) == 8 and _touching(out, labels) == 0


def test_tiny_upright_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(
        tmp_path, np.asarray(lanes_beside_row_labels()[0]), "tiny_upright", 2.0
    )


@pytest.mark.parametrize(("key", "bad"), [("tiny_upright", math.nan), ("tiny_upright", -1.0),
                                          ("tiny_fill", 1.5)])  # fmt: skip
def test_a_bad_upright_setting_in_the_sidecar_is_refused(
    tmp_path: Path, key: str, bad: float
) -> None:
    check_bad_value_refused(tmp_path, key, bad)


@pytest.mark.realdata
def test_lanes_of_a_real_layout_are_found(shared_data: Path, tmp_path: Path) -> None:
    """Real layout 0119 of B's looked-at half (41 panels, most 8-15 px wide columns of
    micrographs; fill 17, spent): the lanes the size limit dropped are found (39 of 41 with the
    setting, 20 without, when this test was written)."""
    from glomssl.mining.synth.heldout import layout_file_set

    line = next(ln for ln in LAYOUTS.read_text().splitlines() if ln.startswith("0119 "))
    small = tmp_path / "b.txt"
    small.write_text(line + "\n")
    figs, truths = layout_file_set(small, shared_data, 1, 17)
    found = {}
    for upright in (2.0, 0.0):
        out = Separator("guided", hybrid={"tiny_upright": upright}).split(figs)[0]
        found[upright] = _found([b for b, _ in out], truths[0])
    assert len(truths[0]) == 41
    assert found[2.0] >= 37 and found[2.0] >= found[0.0] + 15
