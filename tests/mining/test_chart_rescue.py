"""Guided's ``rescue`` setting (diary, section 78): a small chart that whitespace cut into pieces,
each too small to stand as a panel, comes back whole where a confident detector box holds them and
one of them is a plot framed by its axes; nothing is added where something was kept, or where the
pieces hold no such plot."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_dominant_merge import check_bad_value_refused, check_recorded_only_when_set
from test_ringing import one_layout

from glomssl.mining.boxes import Box, Scored
from glomssl.mining.classic import ink_mask
from glomssl.mining.hybrid import rescue_lost
from glomssl.mining.separate import Separator, tuned_settings

PICTURE = (20, 20, 140, 180)
CHART = (190, 66, 232, 111)  # the chart's ink: y title, plot, slanted tick labels
CHART_BOX = ((188.0, 64.0, 236.0, 106.0), 0.7)  # what a detector gives it (clips the y title)


def chart_figure() -> np.ndarray:
    """A 300 x 200 figure: a textured picture and, right of it, a small chart whose pieces are
    each under --min-side (24): a y title cut at its spaces into three dashes, a 22 x 18 plot with
    its axes at the bottom left and four dots, and a block of slanted x tick labels as large as
    the plot (so the merge's `dominant` test sees two rival panels, not a plot with its labels)."""
    rng = np.random.default_rng(5)
    arr = np.full((200, 300, 3), 255, np.uint8)
    x0, y0, x1, y1 = PICTURE
    arr[y0:y1, x0:x1] = rng.integers(60, 200, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    draw = ImageDraw.Draw(im)
    for top in (70, 86, 100):  # the y title's words
        draw.rectangle([190, top, 192, top + 10], fill=(0, 0, 0))
    draw.line([(206, 66), (206, 84)], fill=(0, 0, 0))  # y axis
    draw.line([(206, 84), (228, 84)], fill=(0, 0, 0))  # x axis
    for x, y in ((210, 80), (215, 76), (220, 72), (225, 68)):
        draw.rectangle([x, y, x + 1, y + 1], fill=(30, 100, 200))
    for x in range(204, 228, 3):  # the tick labels, rotated
        draw.line([(x, 104), (x + 6, 90)], fill=(0, 0, 0))
    return np.asarray(im)


def separator(rescue: float, dets: list[Scored]) -> Separator:
    """The shipped guided separator with ``rescue`` and a detector that gives ``dets``."""
    sep = Separator("guided", hybrid={"rescue": rescue})
    sep.detect = lambda arrs: [list(dets) for _ in arrs]  # type: ignore[method-assign]
    return sep


def test_a_chart_cut_into_small_pieces_comes_back_whole() -> None:
    dets: list[Scored] = [(tuple(map(float, PICTURE)), 0.9), CHART_BOX]  # type: ignore[list-item]
    fig = Image.fromarray(chart_figure())
    without = [b for b, _ in separator(0.0, dets).split([fig])[0]]
    # every piece is dropped, so the figure is taken for one picture with a blank margin
    assert without == [(20, 20, 232, 180)]
    got = separator(0.3, dets).split([fig])[0]
    assert [b for b, _ in got] == [PICTURE, CHART]  # the pieces' union, not the detector's box
    assert got[1][1] == pytest.approx(0.7)  # the detector box's confidence


def regions_of(arr: np.ndarray) -> list[Box]:
    sep = Separator("guided")
    return sep._regions(arr, ink_mask(arr), None)()


def rescued(
    arr: np.ndarray,
    kept: list[Scored],
    dets: list[Scored],
    regions: list[Box] | None = None,
    rescue: float = 0.3,
    min_side: int = 24,
) -> list[Box]:
    params = dataclasses.replace(tuned_settings("guided")[1], rescue=rescue)
    pieces = regions_of(arr) if regions is None else regions
    return [
        b for b, _ in rescue_lost(arr, ink_mask(arr), kept, dets, lambda: pieces, min_side, params)
    ]


def test_rescue_lost_joins_the_pieces_a_confident_box_holds() -> None:
    arr = chart_figure()
    kept: list[Scored] = [(PICTURE, 0.9)]
    assert rescued(arr, kept, [CHART_BOX]) == [CHART]
    assert rescued(arr, kept, [CHART_BOX], rescue=0.0) == []  # off
    assert rescued(arr, kept, [CHART_BOX], rescue=0.75) == []  # the box is not confident enough
    assert rescued(arr, kept, [CHART_BOX], min_side=50) == []  # the union is under --min-side


def test_nothing_is_rescued_where_a_panel_was_kept() -> None:
    arr = chart_figure()
    kept: list[Scored] = [(PICTURE, 0.9), ((205, 65, 230, 86), 0.5)]  # the plot stood
    assert rescued(arr, kept, [CHART_BOX]) == []


def test_a_box_reaching_into_a_kept_picture_is_left_alone() -> None:
    """A detector box overlapping a kept panel by more than a tenth of the smaller of the two may
    be that panel's own box: it rescues nothing (the measured candidate of section 78)."""
    arr = chart_figure()
    wide = ((120.0, 64.0, 236.0, 106.0), 0.7)  # a sixth of it on the picture
    assert rescued(arr, [(PICTURE, 0.9)], [wide]) == []
    assert rescued(arr, [(PICTURE, 0.9)], [((130.0, 64.0, 236.0, 106.0), 0.7)]) == [CHART]


def test_one_piece_alone_is_not_rescued() -> None:
    """A box holding a single dropped region (here the plot alone, with a low --min-side) adds
    nothing: that region was dropped by a filter of its own, not cut apart."""
    arr = chart_figure()
    plot_only = ((204.0, 64.0, 230.0, 87.0), 0.7)
    assert rescued(arr, [(PICTURE, 0.9)], [plot_only], min_side=8) == []


def test_pieces_without_a_framed_plot_are_not_rescued() -> None:
    """The same pieces with the axes taken out (a caption's words, bare glass): no plot, nothing
    added; nor when the plot is a speck beside large pieces (a word that happens to be framed)."""
    arr = chart_figure().copy()
    arr[66:86, 206] = 255  # no y axis
    arr[84, 206:229] = 255  # no x axis
    assert rescued(arr, [(PICTURE, 0.9)], [CHART_BOX]) == []
    framed = chart_figure()
    pieces = regions_of(framed)
    plot = next(r for r in pieces if r[0] >= 204 and r[3] <= 86)
    tall = (150, 20, 200, 180)  # a large piece the box holds: the plot is under a tenth of it
    box = ((150.0, 20.0, 236.0, 180.0), 0.7)
    assert rescued(framed, [], [box], [*pieces, tall]) == []
    assert rescued(framed, [], [box], [plot, tall]) == []


def test_a_region_half_inside_the_union_stops_it() -> None:
    """A region the box holds less than half of, lying inside the union (the union reaches below
    the box, to the y title's end), keeps the union out: it could be another panel's piece."""
    arr = chart_figure()
    pieces = regions_of(arr)
    stray = (200, 105, 220, 111)  # a sixth of it in the box, all of it in the union
    assert rescued(arr, [(PICTURE, 0.9)], [CHART_BOX], pieces) == [CHART]
    assert rescued(arr, [(PICTURE, 0.9)], [CHART_BOX], [*pieces, stray]) == []


def test_rescue_is_recorded_only_when_set(tmp_path: Path) -> None:
    check_recorded_only_when_set(tmp_path, chart_figure(), "rescue", 0.3)


@pytest.mark.parametrize("bad", [math.nan, -0.3, 1.5])
def test_a_bad_rescue_in_the_sidecar_is_refused(tmp_path: Path, bad: float) -> None:
    check_bad_value_refused(tmp_path, "rescue", bad)


@pytest.mark.realdata
def test_real_layout_small_charts_come_back(shared_data: Path, tmp_path: Path) -> None:
    """B-odd's layout 0125 (fill 0, charts 0.3; a looking set): two 47 x 54 px charts among 33
    pictures lose every piece without the setting and are found exactly with it."""
    from glomssl.mining.synth.heldout import layout_file_set

    figs, truths = layout_file_set(one_layout(tmp_path, "0125"), shared_data, 1, 0, "odd", 0.3)
    charts = [(165, 207, 211, 260), (220, 82, 267, 138)]
    assert all(c in [tuple(t) for t in truths[0]] for c in charts)
    off = [b for b, _ in Separator("guided", hybrid={"rescue": 0.0}).split(figs)[0]]
    on = [b for b, _ in Separator("guided", hybrid={"rescue": 0.3}).split(figs)[0]]
    assert not any(c in off for c in charts)
    assert all(c in on for c in charts)
    assert set(off) <= set(on) and len(on) == len(off) + 2  # only added, nothing changed


def test_the_shipped_default_rescues_small_charts() -> None:
    assert tuned_settings("guided")[1].rescue == 0.3  # diary 78: adopted
