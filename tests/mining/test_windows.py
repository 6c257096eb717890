"""Detector windows along long strips (docs/experiments/panel-detector.md, section 28): the window
geometry, the merge of per-window detections, and the sidecar setting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from glomssl.errors import GlomsslError
from glomssl.mining.boxes import merge_windows, strip_windows


def test_windows_cover_a_long_strip_with_half_window_steps() -> None:
    wins = strip_windows((100, 1000), 3)  # (H, W): a row 10 times as long as high
    assert [w[0] for w in wins] == [0, 150, 300, 450, 600, 700]
    assert all(w[2] - w[0] == 300 and (w[1], w[3]) == (0, 100) for w in wins)
    for a in range(0, 1000 - 150):  # any picture up to half a window long lies inside one window
        assert any(w[0] <= a and a + 150 <= w[2] for w in wins)
    col = strip_windows((1000, 100), 3)  # a column: the same along y
    assert [(w[1], w[3]) for w in col] == [(w[0], w[2]) for w in wins]
    assert all((w[0], w[2]) == (0, 100) for w in col)


@pytest.mark.parametrize("shape,ratio", [((200, 300), 3), ((100, 300), 3), ((100, 1000), 0)])
def test_other_figures_are_one_window(shape: tuple[int, int], ratio: float) -> None:
    assert strip_windows(shape, ratio) == [(0, 0, shape[1], shape[0])]


def test_merge_drops_pictures_cut_by_a_window_and_keeps_one_of_each() -> None:
    wins = strip_windows((100, 1000), 3)[:2]  # x 0-300 and x 150-450 of a 1000-px row
    first = [((10, 5, 140, 95), 0.6), ((160, 5, 290, 95), 0.9), ((200, 5, 299, 95), 0.95)]
    second = [((10, 5, 140, 95), 0.7), ((160, 5, 290, 95), 0.85)]  # x 160-290 and 310-440
    merged = merge_windows([first, second], wins, (100, 1000))
    assert sorted(b for b, _ in merged) == [(10, 5, 140, 95), (160, 5, 290, 95), (310, 5, 440, 95)]
    # x 200-299 reaches the first window's inner border (x = 300): cut, dropped however sure;
    # x 160-290 was seen twice: the surer box stays
    assert dict(merged)[(160, 5, 290, 95)] == 0.9
    # a box at the figure's own edge (x = 0 in the first window) is not "cut"
    assert merge_windows([[((0, 0, 100, 100), 0.5)]], wins[:1], (100, 1000)) == [
        ((0, 0, 100, 100), 0.5)
    ]


_BAD = ["abc", float("nan"), -1, True, None]


@pytest.mark.parametrize(
    ("key", "bad"),
    [("windows", b) for b in [*_BAD, 0.5]]
    + [("stretch", b) for b in [*_BAD, 255, 300]]
    + [("zoom", b) for b in [*_BAD, 0.5]]
    + [("zoom_hint", b) for b in [*_BAD, 1.5]]
    + [("zoom_cap", b) for b in [*_BAD, 1.5]]
    + [("zoom_conf", b) for b in [*_BAD, 1.5]]
    + [("zoom_letters", b) for b in [*_BAD, 0.5]],
)
def test_bad_sidecar_number_is_a_one_line_error(tmp_path: Path, key: str, bad) -> None:  # type: ignore[no-untyped-def]
    """``separate.windows`` (section 28), ``separate.stretch`` (section 31) and ``separate.zoom``
    (section 36): a bad value is one line naming the setting, and the CLI exits 2 before any
    output."""
    from glomssl.mining.separate import Separator
    from glomssl.mining.yolo import DEFAULT_WEIGHTS

    weights = tmp_path / "panel_detector.safetensors"
    shutil.copy(DEFAULT_WEIGHTS, weights)
    meta = json.loads(Path(DEFAULT_WEIGHTS).with_suffix(".json").read_text())
    meta["separate"][key] = bad
    weights.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(GlomsslError, match=f"separate.{key}") as err:
        Separator("yolo", weights=str(weights))
    assert "\n" not in str(err.value)
    from click.testing import CliRunner
    from PIL import Image

    from glomssl.cli import cli

    (tmp_path / "figs").mkdir()
    Image.new("RGB", (64, 48), "white").save(tmp_path / "figs" / "a.png")
    args = ["separate", "--input", str(tmp_path / "figs"), "--out", str(tmp_path / "o")]
    res = CliRunner().invoke(cli, [*args, "--weights", str(weights)])
    assert res.exit_code == 2 and f"separate.{key}" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o").exists()


@pytest.mark.parametrize("vertical", [False, True])
def test_windows_let_the_detector_find_every_picture_of_a_long_strip(vertical: bool) -> None:
    """12 photos 200 px across with 3-px gutters, at full resolution (2,433 px long): shrunk whole
    to the detector's 512 px the photos are 42 px and the detector sees one or two panels, and the
    gutters are too thin for the whitespace cuts; in windows it finds each photo."""
    import numpy as np
    from PIL import Image, ImageFilter

    from glomssl.mining.boxes import prf1
    from glomssl.mining.separate import Separator

    rng = np.random.default_rng(1)
    tones = [(200, 120, 190), (120, 60, 140), (230, 170, 200), (90, 90, 90), (170, 100, 120)]
    n, side, gutter = 12, 200, 3
    length = n * side + (n - 1) * gutter
    fig = Image.new("RGB", (side, length) if vertical else (length, side), "white")
    truth = []
    for i in range(n):
        x, y = (0, i * (side + gutter)) if vertical else (i * (side + gutter), 0)
        noise = rng.normal(tones[i % len(tones)], 60, (side, side, 3))  # a blurred-noise "photo"
        pic = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))
        fig.paste(pic.filter(ImageFilter.GaussianBlur(2)), (x, y))
        truth.append((x, y, x + side, y + side))
    for method in ("guided", "yolo"):
        whole = [b for b, _ in Separator(method, windows=0.0).split([fig])[0]]
        windowed = [b for b, _ in Separator(method, windows=4.0).split([fig])[0]]
        assert len(whole) <= 2
        assert prf1([windowed], [truth])["f1"] == 1.0


def test_zoom_separates_a_long_panel_again_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """``zoom`` 2: a returned panel at least twice as long as high is separated again as a figure
    of its own; two or more panels found there replace it (in figure pixels, reading order), one
    leaves it as it was; a shorter panel is never looked at again; off, nothing changes."""
    import numpy as np
    from PIL import Image

    from glomssl.mining.separate import Separator

    seen: list[tuple[int, int]] = []

    def fake_split(self: Separator, arrs: list, jpegs: object = None) -> tuple[list, list]:
        out = []
        for a in arrs:
            h, w = a.shape[:2]
            seen.append((w, h))
            if (w, h) == (400, 300):  # the figure: a long row on top, a square panel below
                out.append([((0, 0, 400, 100), 0.9), ((100, 120, 250, 290), 0.8)])
            elif (w, h) == (400, 100):  # the row on its own: three touching pictures
                out.append([((0, 0, 133, 100), 0.7), ((133, 0, 266, 100), 0.6), ((266, 0, 400, 100), 0.5)])  # fmt: skip
            else:
                out.append([((0, 0, w, h), 1.0)])
        return out, [dets.get((w, h), []) for (w, h) in seen[-len(arrs) :]]

    dets: dict[tuple[int, int], list] = {}  # figure-scale detector boxes by figure size
    monkeypatch.setattr(Separator, "_split", fake_split)
    fig = Image.fromarray(np.full((300, 400, 3), 200, np.uint8))
    zoomed = Separator("guided", zoom=2.0).split([fig])[0]
    assert zoomed == [
        ((0, 0, 133, 100), 0.7),
        ((133, 0, 266, 100), 0.6),
        ((266, 0, 400, 100), 0.5),
        ((100, 120, 250, 290), 0.8),
    ]
    assert seen == [(400, 300), (400, 100)]  # the 150 x 170 panel is not looked at again
    seen.clear()
    assert Separator("guided", zoom=5.0).split([fig])[0] == [
        ((0, 0, 400, 100), 0.9),
        ((100, 120, 250, 290), 0.8),
    ]  # 4:1 is under 5: kept
    assert seen == [(400, 300)]
    seen.clear()
    assert Separator("guided", zoom=0.0).split([fig])[0][0] == ((0, 0, 400, 100), 0.9)
    assert Separator("yolo", zoom=2.0).zoom == 0.0  # guided only
    # zoom_hint (section 37): only a long panel the figure-scale detector saw a smaller panel in
    hinted = Separator("guided", zoom=2.0, zoom_hint=0.7)
    seen.clear()
    dets[(400, 300)] = [((0.0, 0.0, 400.0, 100.0), 0.9), ((90.0, 110.0, 260.0, 295.0), 0.8)]
    assert hinted.split([fig])[0][0] == ((0, 0, 400, 100), 0.9)  # only boxes that ARE panels
    assert seen == [(400, 300)]  # no second pass at all
    dets[(400, 300)].append(((130.0, -5.0, 270.0, 95.0), 0.3))  # 140 x 100, 95 % inside the row
    assert len(hinted.split([fig])[0]) == 4  # now it is looked at again and cut in three
    dets[(400, 300)][-1] = ((130.0, 40.0, 270.0, 180.0), 0.3)  # 140 x 140, 43 % inside: no hint
    assert len(hinted.split([fig])[0]) == 2
    assert Separator("guided", zoom_hint=0.7).zoom_hint == 0.0  # nothing to hint without zoom
    # zoom_cap (section 38): at most zoom_cap more parts than hinting boxes
    dets[(400, 300)][-1] = ((130.0, -5.0, 270.0, 95.0), 0.3)  # one hint again
    capped = Separator("guided", zoom=2.0, zoom_hint=0.7, zoom_cap=1)
    assert capped.split([fig])[0][0] == ((0, 0, 400, 100), 0.9)  # 3 parts > 1 hint + 1: kept
    dets[(400, 300)].append(((270.0, 0.0, 400.0, 100.0), 0.3))  # a second hinting box
    assert len(capped.split([fig])[0]) == 4  # 3 parts <= 2 hints + 1: cut
    assert Separator("guided", zoom=2.0, zoom_cap=1).zoom_cap == 0.0  # a cap needs the hint
    # zoom_conf (section 39): only hinting boxes at least this confident count (both are 0.3)
    assert Separator("guided", zoom=2.0, zoom_hint=0.7, zoom_conf=0.6).split([fig])[0][0] == (
        (0, 0, 400, 100),
        0.9,
    )
    assert len(Separator("guided", zoom=2.0, zoom_hint=0.7, zoom_conf=0.3).split([fig])[0]) == 4
    # zoom 1: any kept panel, however square, is looked at again when hinted
    dets[(150, 170)] = []
    seen.clear()
    Separator("guided", zoom=1.0, zoom_hint=0.7).split([fig])
    assert (150, 170) not in seen  # the square panel holds no hint: not looked at
    dets[(400, 300)].append(((110.0, 130.0, 200.0, 220.0), 0.3))  # inside the square panel
    seen.clear()
    Separator("guided", zoom=1.0, zoom_hint=0.7).split([fig])
    assert (150, 170) in seen


def test_zoom_letters_keeps_one_lettered_panels_pictures_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``zoom_letters`` 1 (section 40): a zoom whose parts are the pictures of one lettered panel
    (one letter, at the top-left part, read among the whole figure's small regions: outside the
    crop) is undone; without the letter, or without the setting, the zoom stands."""
    import numpy as np
    from PIL import Image

    from glomssl.mining.separate import Separator

    def fake_split(self: Separator, arrs: list, jpegs: object = None) -> tuple[list, list]:
        out = []
        for a in arrs:
            h, w = a.shape[:2]
            if (w, h) == (400, 300):  # a long row (its letter above-left of it) and a panel
                out.append([((16, 16, 400, 100), 0.9), ((100, 120, 250, 290), 0.8)])
            elif (w, h) == (384, 84):  # the row on its own: three touching pictures
                out.append([((0, 0, 128, 84), 0.7), ((128, 0, 256, 84), 0.6), ((256, 0, 384, 84), 0.5)])  # fmt: skip
            else:
                out.append([((0, 0, w, h), 1.0)])
        return out, [[] for _ in arrs]

    monkeypatch.setattr(Separator, "_split", fake_split)
    page = np.full((300, 400, 3), 255, np.uint8)
    page[16:100, 16:400] = (150, 60, 140)  # the row of pictures
    page[120:290, 100:250] = (90, 90, 90)  # the other panel
    lettered = page.copy()
    lettered[2:12, 2:10] = 0  # its letter: a small dark mark up and left of the row
    for arr, letters, n in [(lettered, 1.0, 2), (lettered, 0.0, 4), (page, 1.0, 4)]:
        sep = Separator("guided", zoom=2.0, zoom_letters=letters)
        assert len(sep.split([Image.fromarray(arr)])[0]) == n, (letters, n)
