"""Synthetic compound figures: boxes match what was drawn; YOLO files; reproducibility; CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from glomssl.errors import GlomsslError
from glomssl.mining.synth import LAYOUTS, Fonts, SynthConfig, load_pool, make_figure, run_synth


def _pool(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        arr = rng.integers(0, 255, (64 + 16 * i, 80, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"tile{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def _check_exact(fig: Image.Image, boxes: list) -> None:
    """Everything outside the boxes is one background colour, every box touches ink on all four
    edges, and boxes do not overlap."""
    arr = np.asarray(fig).astype(np.int16)  # (H, W, 3)
    h, w = arr.shape[:2]
    assert boxes, "a figure has at least one panel"
    inside = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert not inside[y0:y1, x0:x1].any(), "panel boxes overlap"
        inside[y0:y1, x0:x1] = True
    outside = arr[~inside]
    if outside.size == 0:
        return
    bg = outside[0]
    assert (np.abs(outside - bg).max(axis=1) <= 0).all(), "something was drawn outside the boxes"
    for x0, y0, x1, y1 in boxes:
        ink = np.abs(arr[y0:y1, x0:x1] - bg).max(axis=2) > 12  # (h, w)
        assert ink[0].any() and ink[-1].any() and ink[:, 0].any() and ink[:, -1].any(), (
            "box is not tight around what was drawn"
        )


@pytest.mark.parametrize("seed", range(12))
def test_boxes_are_exactly_what_was_drawn(seed: int) -> None:
    """Without letters/captions/resizing, the boxes are exactly the drawn panels."""
    rng = np.random.default_rng([7, seed])
    pool = [Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))]
    fig, boxes = make_figure(rng, Fonts(), pool, letters=False, captions=False, resize=False)
    _check_exact(fig, boxes)


@pytest.mark.parametrize("mode", LAYOUTS)
@pytest.mark.parametrize("seed", range(3))
def test_every_layout_kind_gives_exact_boxes(mode: str, seed: int) -> None:
    """Each layout kind (grid, cuts, justified rows, uniform grids up to 30 panels, a big panel
    beside small ones, very wide/tall strips, single) with every panel kind."""
    rng = np.random.default_rng([11, seed])
    pool = [Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))]
    fig, boxes = make_figure(
        rng, Fonts(), pool, letters=False, captions=False, resize=False, mode=mode
    )
    _check_exact(fig, boxes)
    if mode == "single":
        assert len(boxes) == 1
    elif mode in ("uniform", "strip", "big"):
        assert 2 <= len(boxes) <= 36


def test_layouts_cover_the_real_range() -> None:
    """2 to 30 panels, wide and tall figures, touching panels: all occur in a small sample."""
    fonts = Fonts()
    counts, ratios = [], []
    for i in range(60):
        fig, boxes = make_figure(np.random.default_rng([12, i]), fonts, [])
        counts.append(len(boxes))
        ratios.append(fig.size[0] / fig.size[1])
    assert min(counts) == 1 and max(counts) >= 15
    assert max(ratios) > 2.5 and min(ratios) < 0.6
    dense = [
        len(make_figure(np.random.default_rng([14, i]), fonts, [], mode="uniform")[1])
        for i in range(20)
    ]
    assert min(dense) == 2 and max(dense) == 30


def test_heldout_generator_boxes() -> None:
    from glomssl.mining.synth.heldout import make_heldout_figure

    rng = np.random.default_rng(0)
    pools = {
        "glom": [Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8))],
        "tissue": [Image.fromarray(rng.integers(0, 255, (400, 400, 3), dtype=np.uint8))],
    }
    fonts = Fonts()
    total = 0
    for i in range(6):
        fig, boxes = make_heldout_figure(np.random.default_rng([1, i]), pools, fonts)
        assert max(fig.size) == 512 and boxes
        w, h = fig.size
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            for b in boxes[k + 1 :]:  # panels never overlap (1 px of rounding allowed)
                ox = min(x1, b[2]) - max(x0, b[0])
                oy = min(y1, b[3]) - max(y0, b[1])
                assert ox <= 1 or oy <= 1, (boxes, k)
        total += len(boxes)
    assert total >= 12


def test_heldout_generator_scale_draws_the_same_layout_at_print_size() -> None:
    """``scale`` 2 draws each layout on a page twice as wide: the same panels, in the same order,
    but gutters, letters and labels keep their pixel size, so after the shrink to 512 px the
    panels fill more of the figure (and never less)."""
    from glomssl.mining.synth.heldout import make_heldout_figure

    rng = np.random.default_rng(0)
    pools = {
        "glom": [Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8))],
        "tissue": [Image.fromarray(rng.integers(0, 255, (400, 400, 3), dtype=np.uint8))],
    }
    fonts = Fonts()

    def filled(fig: Image.Image, boxes: list) -> float:
        return sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes) / (fig.size[0] * fig.size[1])

    gains = []
    for i in range(8):
        fig1, boxes1 = make_heldout_figure(np.random.default_rng([1, i]), pools, fonts)
        fig2, boxes2 = make_heldout_figure(np.random.default_rng([1, i]), pools, fonts, scale=2.0)
        assert max(fig2.size) == 512 and len(boxes2) == len(boxes1)
        for a, b in zip(boxes1, boxes2):  # the same panel, near the same place (reading order)
            assert abs((a[0] + a[2]) - (b[0] + b[2])) < 0.2 * 1024
        gains.append(filled(fig2, boxes2) - filled(fig1, boxes1))
    assert min(gains) >= 0.0 and max(gains) > 0.05


def test_refilled_layout_puts_panels_exactly_where_the_layout_says() -> None:
    """A refilled layout (the ``relayout`` evaluation set): each image panel's box is the layout's
    box and holds the pasted pixels; each chart's box is the tight box of its ink, inside its
    layout box; the space between panels stays white apart from panel letters; boxes under 8 px
    are left out."""
    from glomssl.mining.synth.heldout import refill_layout

    rng = np.random.default_rng(0)
    dark = rng.integers(0, 120, (300, 300, 3), dtype=np.uint8)  # never white: exact image boxes
    pools = {"glom": [Image.fromarray(dark)], "tissue": [Image.fromarray(dark)]}
    layout = [
        ((10, 30, 200, 190), "image"),
        ((210, 30, 400, 190), "chart"),
        ((10, 210, 400, 300), "image"),
        ((405, 30, 410, 300), "image"),  # 5 px wide: left out
    ]
    for seed in range(4):
        fig, boxes = refill_layout(np.random.default_rng(seed), pools, Fonts(), (420, 310), layout)
        assert fig.size == (420, 310) and len(boxes) == 3
        assert boxes[0] == (10, 30, 200, 190) and boxes[2] == (10, 210, 400, 300)
        cx0, cy0, cx1, cy1 = boxes[1]
        assert 210 <= cx0 < cx1 <= 400 and 30 <= cy0 < cy1 <= 190
        arr = np.asarray(fig).astype(int)
        nonwhite = arr.min(axis=2) < 250
        for x0, y0, x1, y1 in (boxes[0], boxes[2]):
            # every pasted pixel is there, apart from at most a letter in the top-left corner
            inner = nonwhite[y0:y1, x0:x1]
            assert inner.mean() > 0.99
        chart = nonwhite[cy0:cy1, cx0:cx1]  # tight: ink on every edge
        assert chart[0].any() and chart[-1].any() and chart[:, 0].any() and chart[:, -1].any()
        assert not nonwhite[:, 405:].any()  # the left-out sliver and the right margin stay blank
        assert not nonwhite[195:205, 40:].any()  # the gutter between the rows: a letter at most


def test_strip_figures_are_one_row_or_column_with_exact_boxes() -> None:
    """The strips probe (section 27): 3-20 pictures of one size in one row or column, at least
    2 px apart; image boxes are exactly the pasted pictures; the scaled set keeps the layout."""
    from glomssl.mining.synth.heldout import strip_figure

    rng = np.random.default_rng(0)
    dark = rng.integers(0, 120, (300, 300, 3), dtype=np.uint8)
    pools = {"glom": [Image.fromarray(dark)], "tissue": [Image.fromarray(dark)]}
    seen = set()
    for seed in range(12):
        fig, boxes = strip_figure(np.random.default_rng([20271, seed]), pools, Fonts())
        assert 3 <= len(boxes) <= 20
        vertical = fig.height > fig.width
        seen.add(vertical)
        across = {(b[0], b[2]) if vertical else (b[1], b[3]) for b in boxes}
        sizes = {(b[2] - b[0], b[3] - b[1]) for b in boxes}
        along = sorted(b[1] if vertical else b[0] for b in boxes)
        if all(b[2] - b[0] > 0 for b in boxes) and len(sizes) == 1:  # image strips: exact boxes
            assert len(across) == 1  # one row or column
            ((w, h),) = sizes
            step = {b - a for a, b in zip(along, along[1:])}
            gutter = step.pop() - (h if vertical else w)
            assert not step and gutter >= 2  # evenly spaced, never touching
            arr = np.asarray(fig).min(axis=2)
            for x0, y0, x1, y1 in boxes:
                assert (arr[y0:y1, x0:x1] < 250).mean() > 0.99  # the pasted picture, all of it
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= fig.width and 0 <= y0 < y1 <= fig.height
    assert seen == {True, False}


def test_run_synth_writes_consistent_yolo_set(tmp_path: Path) -> None:
    cfg = SynthConfig(out=str(tmp_path / "s"), n=6, val_fraction=0.34, seed=3, quiet=True)
    summary = run_synth(cfg)
    out = Path(summary["out"])
    rows = [json.loads(x) for x in (out / "boxes.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and summary["val"] == 2
    assert [r["split"] for r in rows] == ["train"] * 4 + ["val"] * 2
    assert sum(len(r["boxes"]) for r in rows) == summary["boxes"]
    for r in rows:
        img = Image.open(out / r["file"])
        assert img.size == (r["width"], r["height"])
        assert max(img.size) >= 300  # long side around 512
        label = out / r["file"].replace("images/", "labels/").replace(".jpg", ".txt")
        lines = label.read_text().splitlines()
        assert len(lines) == len(r["boxes"])
        for line, (x0, y0, x1, y1) in zip(lines, r["boxes"]):
            cls, cx, cy, bw, bh = line.split()
            assert cls == "0"
            assert float(cx) == pytest.approx((x0 + x1) / 2 / r["width"], abs=1e-5)
            assert float(bh) == pytest.approx((y1 - y0) / r["height"], abs=1e-5)
            assert 0 < float(bw) <= 1 and 0 < float(bh) <= 1
    data = (out / "data.yaml").read_text()
    assert "train: images/train" in data and "0: panel" in data


def test_same_seed_same_set_other_seed_other_set(tmp_path: Path) -> None:
    def labels(out: str, seed: int) -> list[str]:
        run_synth(SynthConfig(out=out, n=3, val_fraction=0.0, seed=seed, quiet=True))
        return [p.read_text() for p in sorted(Path(out, "labels", "train").glob("*.txt"))]

    a = labels(str(tmp_path / "a"), 5)
    assert a == labels(str(tmp_path / "b"), 5)
    assert (tmp_path / "a/images/train/000001.jpg").read_bytes() == (
        tmp_path / "b/images/train/000001.jpg"
    ).read_bytes()
    assert a != labels(str(tmp_path / "c"), 6)


def test_user_images_are_used_and_broken_ones_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import glomssl.data.images as images

    folder = _pool(tmp_path / "pool")
    assert len(load_pool([str(folder)], 100, 0)) == 3
    Image.new("L", (200, 200)).save(folder / "bomb.png")  # a bomb under the cap set below
    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 100)
    summary = run_synth(SynthConfig(out=str(tmp_path / "s"), n=2, images=[str(folder)], quiet=True))
    assert summary["pool_images"] == 3 and summary["skipped_images"] == 2
    skipped = [json.loads(x) for x in (tmp_path / "s" / "skipped.jsonl").read_text().splitlines()]
    assert {Path(r["path"]).name for r in skipped} == {"broken.png", "bomb.png"}
    assert any("pixels" in r["reason"] for r in skipped)


def test_older_six_kind_mixes_still_work(tmp_path: Path) -> None:
    cfg = SynthConfig(
        out=str(tmp_path / "s"), n=2, kinds=[0.2, 0.2, 0.3, 0.2, 0.05, 0.05], quiet=True
    )
    assert run_synth(cfg)["figures"] == 2
    with pytest.raises(GlomsslError, match="layouts must be 7"):
        run_synth(SynthConfig(out=str(tmp_path / "t"), layouts=[1.0, 1.0]))


def test_bad_options_raise_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(GlomsslError, match="--n"):
        run_synth(SynthConfig(out=str(tmp_path), n=0))
    with pytest.raises(GlomsslError, match="not a folder"):
        run_synth(SynthConfig(out=str(tmp_path), images=[str(tmp_path / "missing")]))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.png").write_bytes(b"junk")
    with pytest.raises(GlomsslError, match="no readable images"):
        run_synth(SynthConfig(out=str(tmp_path / "o"), n=1, images=[str(empty)]))


def test_cli_synth(tmp_path: Path) -> None:
    from glomssl.cli import cli

    runner = CliRunner()
    res = runner.invoke(
        cli, ["separator", "synth", "--out", str(tmp_path / "s"), "--n", "2", "--quiet"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["figures"] == 2
    res = runner.invoke(cli, ["separator", "synth", "--out", str(tmp_path / "t"), "--n", "-1"])
    assert res.exit_code == 2 and "Error: --n must be >= 1" in res.output
    pool = _pool(tmp_path / "pool")
    args = ["separator", "synth", "--n", "2", "--quiet", "--images", str(pool)]
    res = runner.invoke(cli, [*args, "--out", str(tmp_path / "m"), "--same-source", "0.5"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, [*args, "--out", str(tmp_path / "x"), "--same-source", "1.5"])
    assert res.exit_code == 2 and "Error: --same-source must be >= 0 and <= 1" in res.output


def test_same_source_figures_cut_every_panel_from_one_image() -> None:
    """``same_source`` 1: every panel is a photo (or tissue-on-slide) crop of ONE pool image, so on
    a pool of a red, a green and a blue picture each figure's coloured panels share one hue; at 0
    figures mix sources and panel kinds. Boxes stay exact."""
    rng = np.random.default_rng(5)
    pool = []
    for c in range(3):
        arr = rng.integers(0, 40, (90, 120, 3)).astype(np.uint8)
        arr[..., c] = rng.integers(160, 255, (90, 120))
        pool.append(Image.fromarray(arr))

    def hues(fig: Image.Image, boxes: list) -> list[int | None]:
        """Per panel: the dominant channel, or None for a grey (or grey-converted) panel."""
        arr = np.asarray(fig).astype(np.float32)
        out: list[int | None] = []
        for x0, y0, x1, y1 in boxes:
            mean = arr[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
            out.append(int(np.argmax(mean)) if mean.max() - mean.min() > 30 else None)
        return out

    mixed = one = 0
    for seed in range(12):
        kw = dict(letters=False, captions=False, resize=False, mode="uniform")
        fig, boxes = make_figure(np.random.default_rng([3, seed]), Fonts(), pool, **kw, same_source=1.0)  # type: ignore[arg-type]  # fmt: skip
        _check_exact(fig, boxes)
        coloured = [h for h in hues(fig, boxes) if h is not None]
        assert len(boxes) >= 2 and len(set(coloured)) <= 1, (seed, hues(fig, boxes))
        one += len(coloured) >= 2  # (a figure of shared-axis charts has no photos at all)
        fig0, boxes0 = make_figure(np.random.default_rng([3, seed]), Fonts(), pool, **kw)  # type: ignore[arg-type]  # fmt: skip
        mixed += len({h for h in hues(fig0, boxes0) if h is not None}) >= 2
    assert one >= 8
    assert mixed >= 3  # without it, many figures mix panels from several pool images
    with pytest.raises(GlomsslError, match="same-source"):
        run_synth(SynthConfig(out="unused", same_source=float("nan")))
    with pytest.raises(GlomsslError, match="pass --images"):  # nothing to cut montages from
        run_synth(SynthConfig(out="unused", same_source=0.3))


def _touching_pairs(boxes: list) -> int:
    """Neighbouring boxes that meet edge to edge (no gutter) along an overlap of > 5 px."""
    n = 0
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            side = min(a[3], b[3]) - max(a[1], b[1]) > 5 and (a[2] == b[0] or b[2] == a[0])
            stack = min(a[2], b[2]) - max(a[0], b[0]) > 5 and (a[3] == b[1] or b[3] == a[1])
            n += side or stack
    return n


def test_touch_figures_are_montages_of_pool_pictures_with_no_gutter() -> None:
    """``touch`` 1: panels are pool pictures (of several pool images, unlike ``same_source``) that
    meet their neighbours with no gutter; at 0 the same seeds draw gutters and mixed panel kinds.
    Boxes stay exact."""
    rng = np.random.default_rng(6)
    pool = []
    for c in range(3):  # a red, a green and a blue picture: each panel shows which one it came from
        arr = rng.integers(0, 40, (90, 120, 3)).astype(np.uint8)
        arr[..., c] = rng.integers(160, 255, (90, 120))
        pool.append(Image.fromarray(arr))
    kw = dict(letters=False, captions=False, resize=False)
    montages = touching0 = several = 0
    for seed in range(12):
        mode = ("grid", "uniform", "rows")[seed % 3]
        fig, boxes = make_figure(np.random.default_rng([4, seed]), Fonts(), pool, **kw, mode=mode, touch=1.0)  # type: ignore[arg-type]  # fmt: skip
        _check_exact(fig, boxes)
        arr = np.asarray(fig).astype(np.float32)
        means = [arr[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0) for x0, y0, x1, y1 in boxes]
        if len(boxes) < 2 or max(m.mean() for m in means) > 200:
            continue  # one panel, or a row of shared-axis charts (white, drawn with its own gap)
        montages += 1
        assert _touching_pairs(boxes) > 0, (seed, boxes)  # every montage of pictures touches
        # a coloured panel (not one turned grey) shows which pool picture it came from
        several += len({int(np.argmax(m)) for m in means if m.max() - m.min() > 30}) >= 2
        fig0, boxes0 = make_figure(np.random.default_rng([4, seed]), Fonts(), pool, **kw, mode=mode)  # type: ignore[arg-type]  # fmt: skip
        touching0 += _touching_pairs(boxes0) > 0
    assert montages >= 8
    assert touching0 <= montages // 2  # without it, most of the same figures keep a gutter
    assert several >= montages // 2  # panels come from several pool pictures
    with pytest.raises(GlomsslError, match="--touch must be in"):
        run_synth(SynthConfig(out="unused", touch=float("nan")))
    with pytest.raises(GlomsslError, match="pass --images"):
        run_synth(SynthConfig(out="unused", touch=0.3))


def test_cli_synth_touch(tmp_path: Path) -> None:
    from glomssl.cli import cli

    runner = CliRunner()
    pool = _pool(tmp_path / "pool")
    args = ["separator", "synth", "--n", "3", "--quiet", "--images", str(pool)]
    res = runner.invoke(cli, [*args, "--out", str(tmp_path / "t"), "--touch", "1"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["figures"] == 3
    res = runner.invoke(cli, [*args, "--out", str(tmp_path / "x"), "--touch", "-0.1"])
    assert res.exit_code == 2 and "Error: --touch must be >= 0 and <= 1" in res.output
    assert not (tmp_path / "x").exists()


def test_a_second_set_into_the_same_out_is_refused_and_the_first_kept(tmp_path: Path) -> None:
    out = tmp_path / "s"
    run_synth(SynthConfig(out=str(out), n=4, val_fraction=0.0, seed=1, quiet=True))
    before = sorted(p.name for p in (out / "images" / "train").iterdir())
    with pytest.raises(GlomsslError, match="already holds a data set"):
        run_synth(SynthConfig(out=str(out), n=2, val_fraction=0.0, seed=2, quiet=True))
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == before
    assert len((out / "boxes.jsonl").read_text().splitlines()) == 4
    (tmp_path / "empty").mkdir()  # an existing empty folder is fine
    assert run_synth(SynthConfig(out=str(tmp_path / "empty"), n=1, quiet=True))["figures"] == 1


def test_unreadable_images_leave_no_out_folder(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.png").write_bytes(b"junk")
    with pytest.raises(GlomsslError, match="no readable images"):
        run_synth(SynthConfig(out=str(tmp_path / "o"), n=1, images=[str(junk)], quiet=True))
    assert not (tmp_path / "o").exists()


def test_a_small_set_keeps_a_validation_figure(tmp_path: Path) -> None:
    """--n 4 at the default --val-fraction 0.1 rounded the validation share to nothing, and the set
    then validated on its training figures; a share asked for is now at least one figure."""
    res = run_synth(SynthConfig(out=str(tmp_path / "s"), n=4, seed=1, quiet=True))
    assert res["val"] == 1
    assert "val: images/val" in (tmp_path / "s" / "data.yaml").read_text()
    assert len(list((tmp_path / "s" / "images" / "val").glob("*.jpg"))) == 1
    res = run_synth(SynthConfig(out=str(tmp_path / "t"), n=4, val_fraction=0.0, quiet=True))
    assert res["val"] == 0  # asked for none: none
