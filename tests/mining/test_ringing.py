"""Guided's ``ringing`` setting (diary, section 74): in a figure read from a JPEG file, a gutter line
whose only ink is a JPEG's sparse faint ringing still counts as blank; a PNG is cut as before."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_dominant_merge import check_bad_value_refused, check_recorded_only_when_set

from glomssl.data.images import SOURCE_FORMAT, is_jpeg, load_rgb
from glomssl.mining.boxes import iou
from glomssl.mining.classic import (
    RINGING_PALE,
    Gutters,
    background_colour,
    ink_mask,
    leaves,
    off_background,
)
from glomssl.mining.hybrid import guided_boxes
from glomssl.mining.separate import Separator, tuned_settings

LEFT = (20, 20, 110, 140)  # the two pictures, parted by a 3-px gutter at x 110-112
RIGHT = (113, 20, 220, 140)


def ringing_figure(specks: int = 3, level: int = 36, wash: bool = False) -> np.ndarray:
    """A 240 x 160 figure: two textured pictures with a 3-px gutter between them, and on each of
    the gutter's columns ``specks`` pixels ``level`` grey levels off white in one channel (a JPEG's
    ringing: colour bleeding into the gutter). ``wash``: the gutter's column is instead pale along
    its whole height (12 levels off: a pale wash, not a gutter), with the same specks."""
    rng = np.random.default_rng(5)
    arr = np.full((160, 240, 3), 255, np.uint8)
    for x0, y0, x1, y1 in (LEFT, RIGHT):
        arr[y0:y1, x0:x1] = rng.integers(60, 200, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    for x in range(110, 113):
        if wash:
            arr[20:140, x] = (243, 243, 243)
        rows = rng.choice(np.arange(22, 138), specks, replace=False)
        arr[rows, x, 1] = 255 - level
    return arr


def gutters_for(arr: np.ndarray, level: float = 45.0) -> Gutters:
    bg = background_colour(arr)
    ink = ink_mask(arr, bg=bg)
    return Gutters(
        strong=ink_mask(arr, round(level), bg=bg), pale=ink | off_background(arr, bg, RINGING_PALE)
    )


def test_a_gutter_with_sparse_faint_ink_is_blank_with_gutters_only() -> None:
    arr = ringing_figure()
    ink = ink_mask(arr)
    assert ink[:, 110:113].any()  # the specks are ink: without the setting there is no gutter
    assert len(leaves(arr, ink, 24)) == 1
    regions = leaves(arr, ink, 24, gutters=gutters_for(arr))
    assert sorted(regions) == [LEFT, RIGHT]


def test_a_strong_speck_a_dense_run_or_a_pale_wash_keeps_the_line_ink() -> None:
    for arr in (
        ringing_figure(level=50),  # one speck beyond the ringing level: real ink
        ringing_figure(specks=5),  # 5 of 120 pixels (over 3 %): not sparse
        ringing_figure(wash=True),  # pale along the whole line: a wash inside one picture
    ):
        assert len(leaves(arr, ink_mask(arr), 24, gutters=gutters_for(arr))) == 1


def test_blank_reads_each_line_of_the_box() -> None:
    arr = ringing_figure()
    ink = ink_mask(arr)
    g = gutters_for(arr)
    box = (20, 20, 220, 140)
    cols = ink[20:140, 20:220].sum(axis=0)
    blank = g.blank(box, cols, 0)
    assert blank.shape == (200,)
    assert np.flatnonzero(blank).tolist() == [90, 91, 92]  # x 110-112 only
    rows = ink[20:140, 20:220].sum(axis=1)
    assert not g.blank(box, rows, 1).any()  # every row crosses the pictures


def test_guided_cuts_the_gutter_only_with_gutters() -> None:
    arr = ringing_figure()
    ink = ink_mask(arr)
    # valley off: the second hairline pass would part this gutter without any JPEG reading
    params = dataclasses.replace(tuned_settings("guided")[1], ringing=45.0, valley=0.0)
    plain = guided_boxes(arr, ink, [], 24, params)
    cut = guided_boxes(arr, ink, [], 24, params, gutters=gutters_for(arr))
    assert len(plain) == 1
    assert sorted(b for b, _ in cut) == [LEFT, RIGHT]


def _jpeg_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=75)
    return buf.getvalue()


def test_is_jpeg_knows_jpeg_files_and_keeps_knowing_after_load_rgb(tmp_path: Path) -> None:
    arr = ringing_figure()
    (tmp_path / "f.jpg").write_bytes(_jpeg_bytes(arr))
    Image.fromarray(arr).save(tmp_path / "f.png")
    with Image.open(tmp_path / "f.jpg") as im:
        assert is_jpeg(im)
        assert not is_jpeg(im.convert("RGB"))  # conversion drops the format ...
    assert is_jpeg(load_rgb(tmp_path / "f.jpg"))  # ... load_rgb keeps it
    assert not is_jpeg(load_rgb(tmp_path / "f.png"))
    load_rgb(tmp_path / "f.jpg").save(tmp_path / "again.png")  # a JPEG saved again as PNG
    assert not is_jpeg(load_rgb(tmp_path / "again.png"))
    assert is_jpeg(load_rgb(tmp_path / "f.jpg", max_side=100))  # shrunk, still known


def test_the_separator_reads_gutters_through_ringing_only_in_jpeg_figures() -> None:
    arr = ringing_figure()
    on = Separator("guided", hybrid={"ringing": 45.0})
    bg = background_colour(arr)
    ink = ink_mask(arr, bg=bg)
    assert on._gutters(arr, bg, ink, None, jpeg=True) is not None
    assert on._gutters(arr, bg, ink, None, jpeg=False) is None
    off = Separator("guided", hybrid={"ringing": 0.0})
    assert off._gutters(arr, bg, ink, None, jpeg=True) is None
    png = Image.fromarray(arr)
    jpeg = Image.fromarray(arr)
    jpeg.info[SOURCE_FORMAT] = "JPEG"
    assert on.split([png]) == off.split([png])  # a PNG is cut as before, whatever the setting
    assert sorted(b for b, _ in on.split([jpeg])[0]) == [LEFT, RIGHT]


def test_the_shipped_default_sets_it() -> None:
    assert tuned_settings("guided")[1].ringing == 45.0


def test_ringing_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, ringing_figure(), "ringing", 45.0)


@pytest.mark.parametrize("bad", [math.nan, -1.0, 20.0, 30.0, 300.0])
def test_a_bad_ringing_in_the_sidecar_is_refused(tmp_path: Path, bad: float) -> None:
    check_bad_value_refused(tmp_path, "ringing", bad)


def one_layout(tmp_path: Path, ident: str) -> Path:
    """A layouts file in ``tmp_path`` holding only figure ``ident`` of B's layouts file."""
    line = next(
        x
        for x in (Path(__file__).parents[2] / "benchmarks/data/sciint_layouts.txt")
        .read_text()
        .splitlines()
        if x.startswith(ident + " ")
    )
    path = tmp_path / "one.txt"
    path.write_text(line + "\n")
    return path


@pytest.mark.realdata
def test_a_real_pas_gutter_in_a_jpeg_figure_is_cut(shared_data: Path, tmp_path: Path) -> None:
    """B-odd's layout 0157 (fill 0, charts 0.3; a looking set) saved as JPEG 75: the narrow PAS
    picture at (23, 289, 35, 358) stands 4 px from its neighbour. The JPEG's pink bleeds into the
    gutter 30-36 levels off white, so without the setting the two come back as one panel."""
    from glomssl.mining.synth.heldout import layout_file_set

    figs, truths = layout_file_set(one_layout(tmp_path, "0157"), shared_data, 1, 0, "odd", 0.3)
    target = (23, 289, 35, 358)
    assert target in [tuple(t) for t in truths[0]]
    (tmp_path / "f.jpg").write_bytes(_jpeg_bytes(np.asarray(figs[0])))
    fig = load_rgb(tmp_path / "f.jpg")

    def found(ringing: float) -> bool:  # section 79's hairline_plots off: it parts this row too
        hybrid = {"ringing": ringing, "hairline_plots": 0.0}
        boxes = [b for b, _ in Separator("auto", hybrid=hybrid).split([fig])[0]]
        return any(iou(b, target) >= 0.5 for b in boxes)

    assert found(45.0) and not found(0.0)
