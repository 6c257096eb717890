"""The hybrid separator: classic whitespace cuts split and merged by detector boxes, tested with
hand-made detections on figures whose true boxes are known (no model involved)."""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw

from glomssl.mining.boxes import Box, iou
from glomssl.mining.classic import classic_boxes, clean_boxes, ink_mask
from glomssl.mining.hybrid import HybridParams, guided_boxes, hybrid_boxes, refine


def _texture(rng: np.random.Generator, w: int, h: int, tone: int) -> Image.Image:
    arr = np.clip(rng.normal(tone, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _run(
    fig: Image.Image, dets: list[tuple[Box, float]], params: HybridParams = HybridParams()
) -> list[Box]:
    arr = np.asarray(fig)
    ink = ink_mask(arr)
    return [b for b, _ in clean_boxes(ink, hybrid_boxes(arr, ink, dets, 24, params), 24)]


def _pictures(seed: int, truth: list[Box]) -> tuple[Image.Image, list[Box]]:
    """Four textured pictures of distinct tones at the ``truth`` boxes of a 560 x 200 figure."""
    rng = np.random.default_rng(seed)
    fig = Image.new("RGB", (560, 200), (255, 255, 255))
    for b, tone in zip(truth, (60, 170, 90, 130)):
        fig.paste(_texture(rng, b[2] - b[0], b[3] - b[1], tone), b[:2])
    return fig, truth


def _touching(seed: int) -> tuple[Image.Image, list[Box]]:
    """Three pictures side by side with no gutter, then a gutter and a fourth."""
    return _pictures(
        seed, [(10, 20, 130, 180), (130, 20, 270, 180), (270, 20, 390, 180), (410, 20, 550, 180)]
    )


def test_touching_panels_are_split_at_the_true_seam() -> None:
    for seed in range(3):
        fig, truth = _touching(seed)
        classic = [b for b, _ in classic_boxes(fig)]
        assert len(classic) == 2  # whitespace alone sees the touching three as one
        rng = np.random.default_rng(seed)
        dets = [((b[0] + int(rng.integers(-7, 8)), b[1] + 3, b[2] + int(rng.integers(-7, 8)), b[3] - 2), 0.8) for b in truth]  # fmt: skip
        pred = _run(fig, dets)
        assert len(pred) == 4, pred
        for t in truth:
            best = max(pred, key=lambda p: iou(p, t))
            assert iou(best, t) > 0.97, (best, t)


def test_refine_finds_the_seam_within_the_window() -> None:
    fig, truth = _touching(0)
    leaf = (10, 20, 390, 180)
    got, contrast = refine(np.asarray(fig), leaf, (140, 25, 262, 178), snap=0.06)
    assert got == (130, 20, 270, 180) and contrast > 5
    # inside one picture there is no seam: the best "edge" barely stands out
    _, flat = refine(np.asarray(fig), (10, 20, 130, 180), (40, 20, 100, 180), snap=0.06)
    assert flat < 3


def _chart(fig: Image.Image, x0: int, y0: int) -> Box:
    """A plot whose y label and legend are separated from its axes by whitespace; its true box."""
    dr = ImageDraw.Draw(fig)
    dr.rectangle([x0 + 232, y0 + 10, x0 + 270, y0 + 50], outline=(0, 0, 0), fill=(230, 230, 250))
    dr.rectangle([x0, y0 + 40, x0 + 8, y0 + 120], fill=(0, 0, 0))  # a (rotated) y label
    dr.line([(x0 + 30, y0), (x0 + 30, y0 + 150), (x0 + 220, y0 + 150)], fill=(0, 0, 0), width=2)
    pts = [(x0 + 32 + 6 * i, y0 + 140 - (i * 37 % 120)) for i in range(31)]
    dr.line(pts, fill=(200, 30, 30), width=2)
    return (x0, y0, x0 + 271, y0 + 152)


def test_chart_fragments_are_merged_by_a_confident_box() -> None:
    fig = Image.new("RGB", (560, 200), (255, 255, 255))
    truth = [_chart(fig, 10, 20), _chart(fig, 290, 20)]
    classic = [b for b, _ in classic_boxes(fig)]
    assert len(classic) == 4  # plot and legend come apart (the thin label is dropped)
    dets = [((t[0] - 4, t[1] - 3, t[2] + 5, t[3] + 2), 0.9) for t in truth]
    pred = _run(fig, dets)
    assert len(pred) == 2 and all(max(iou(p, t) for p in pred) > 0.97 for t in truth), pred
    weak = [(b, 0.3) for b, _ in dets]  # below merge_conf: the fragments stay apart
    assert len(_run(fig, weak)) > 2


def test_two_large_panels_need_a_very_confident_box_to_merge() -> None:
    rng = np.random.default_rng(0)
    fig = Image.new("RGB", (400, 200), (255, 255, 255))
    truth = [(10, 10, 190, 190), (210, 10, 390, 190)]
    for b in truth:
        fig.paste(_texture(rng, 180, 180, 100), b[:2])
    one_box = [((8, 8, 392, 192), 0.7)]
    assert sorted(_run(fig, one_box)) == truth
    assert len(_run(fig, [((8, 8, 392, 192), 0.95)])) == 1


def test_without_detections_it_is_the_classic_splitter() -> None:
    fig, _ = _touching(1)
    assert sorted(_run(fig, [])) == sorted(b for b, _ in classic_boxes(fig))


# ----------------------------------------------------------------------------- guided


def _guided(fig: Image.Image, dets: list[tuple[Box, float]], support: float = 0.5) -> list[Box]:
    arr = np.asarray(fig)
    ink = ink_mask(arr)
    params = HybridParams(conf=0.25, support=support, letters=0.0)
    return [b for b, _ in clean_boxes(ink, guided_boxes(arr, ink, dets, 24, params), 24)]


def _hairlines(seed: int) -> tuple[Image.Image, list[Box]]:
    """Three pictures a 1-px gutter apart (too thin for the classic splitter at 560 px), then a
    normal gutter and a fourth."""
    return _pictures(
        seed, [(10, 20, 130, 180), (131, 20, 270, 180), (271, 20, 390, 180), (410, 20, 550, 180)]
    )


def _matches(pred: list[Box], truth: list[Box], thr: float = 0.95) -> bool:
    return len(pred) == len(truth) and all(max(iou(p, t) for p in pred) >= thr for t in truth)


def test_guided_makes_hairline_cuts_the_detector_confirms() -> None:
    for seed in range(2):
        fig, truth = _hairlines(seed)
        assert len(_run(fig, [])) == 2  # whitespace alone: the three hairline-cut pictures are one
        rng = np.random.default_rng(seed)
        dets = [((b[0] + int(rng.integers(-6, 7)), b[1] + 4, b[2] + int(rng.integers(-6, 7)), b[3] - 3), 0.7) for b in truth]  # fmt: skip
        assert _matches(_guided(fig, dets), truth)
        # the cuts themselves come from the image: exact edges, not the detector's rough ones
        assert _matches(_guided(fig, dets), truth, 0.99)


def test_guided_is_classic_where_the_detector_disagrees_or_is_silent() -> None:
    fig, truth = _hairlines(0)
    classic = _run(fig, [])
    assert _guided(fig, []) == classic  # no detections: exactly classic
    # one confident box over the three pictures: the detector says one panel, so no cut
    whole = [((10, 20, 390, 180), 0.9), ((131, 20, 270, 180), 0.5), ((271, 20, 390, 180), 0.5)]
    assert _guided(fig, whole) == classic
    # only one part confirmed (support 0.5 of 3 parts needs two)
    assert _guided(fig, [((131, 22, 268, 178), 0.8)]) == classic
    # boxes below the confidence floor do not count
    weak = [((b[0], b[1], b[2], b[3]), 0.1) for b in truth]
    assert _guided(fig, weak) == classic
    # with support 1.0 a cut needs every part confirmed
    two = [((10, 20, 130, 180), 0.8), ((131, 20, 270, 180), 0.8)]
    assert _matches(_guided(fig, two, support=0.5), truth)
    assert _guided(fig, two, support=1.0) == classic


def test_guided_method_runs_through_separator() -> None:
    from glomssl.mining.separate import METHODS, Separator

    assert "guided" in METHODS
    fig, _ = _hairlines(1)
    sep = Separator("guided")
    assert sep.detector is not None and sep.conf == 0.25
    assert sep.hybrid.support == 0.5  # the setting chosen on the tuning set (section 9)
    assert sep.hybrid.letters == sep.hybrid.letter_one == 1.0  # letters respected (sections 12-13)
    assert sep.hybrid.fallback == 2.0  # the detector's own splits (sections 14-15)
    # section 24: nested splits, looser detector splits and merges
    assert (sep.hybrid.nested, sep.hybrid.split_conf, sep.hybrid.seam) == (1.0, 0.4, 1.0)
    assert sep.hybrid.merge == 1.0
    assert sep.hybrid.letter_conf == 0.7  # section 26: the guard gives way to a sure detector
    panels = sep.split([fig])[0]
    assert len(panels) >= 2  # the normal gutter is always cut


def test_guided_merge_joins_a_chart_split_by_whitespace_only_when_asked() -> None:
    """With ``merge`` (section 10 of the diary) regions that one confident detector box holds become
    one panel, as in the hybrid; guided's default leaves them to the classic splitter."""
    fig = Image.new("RGB", (560, 220), (255, 255, 255))
    rng = np.random.default_rng(0)
    fig.paste(_texture(rng, 200, 150, 80), (20, 20))  # a "plot" ...
    fig.paste(_texture(rng, 70, 150, 150), (236, 20))  # ... and its legend, 16 px apart
    fig.paste(_texture(rng, 220, 180, 110), (320, 20))  # another panel
    chart, other = (20, 20, 306, 170), (320, 20, 540, 200)
    dets = [(chart, 0.9), (other, 0.9)]
    assert len(_guided(fig, dets)) == 3  # classic: plot, legend, other panel
    arr = np.asarray(fig)
    ink = ink_mask(arr)
    merged = guided_boxes(arr, ink, dets, 24, HybridParams(conf=0.25, merge=1.0, merge_conf=0.6))
    got = [b for b, _ in clean_boxes(ink, merged, 24)]
    assert _matches(got, [chart, other], 0.95), got


def _labelled_chart(seed: int, dense: bool) -> tuple[Image.Image, list[tuple[Box, float]], Box]:
    """Two panels the detector finds, and below the first a 50 x 30 px leaf no box holds: a
    sparse, rotated-word-like label (``dense`` False) or a small solid picture (True)."""
    rng = np.random.default_rng(seed)
    fig = Image.new("RGB", (560, 220), (255, 255, 255))
    fig.paste(_texture(rng, 200, 130, 80), (20, 20))
    fig.paste(_texture(rng, 220, 180, 120), (320, 20))
    leaf = (60, 172, 110, 202)
    if dense:
        fig.paste(_texture(rng, 50, 30, 60), leaf[:2])
    else:
        draw = ImageDraw.Draw(fig)
        for k in range(3):  # three slanted strokes, like the glyphs of a 45-degree tick label
            x = leaf[0] + 14 * k
            draw.line((x, leaf[3] - 1, x + 22, leaf[1]), fill=(0, 0, 0), width=2)
    dets = [((20, 20, 220, 150), 0.9), ((320, 20, 540, 200), 0.9)]
    return fig, dets, leaf


def test_guided_fragments_drops_a_chart_label_but_not_a_small_picture() -> None:
    """Section 46 of the diary: with ``fragments`` a small, sparse leaf that no detector box holds
    is dropped as text; off (0, the default) it stays, and a small dense leaf stays either way."""

    def run(fig: Image.Image, dets: list[tuple[Box, float]], fragments: float) -> list[Box]:
        arr = np.asarray(fig)
        ink = ink_mask(arr)
        p = HybridParams(conf=0.25, merge=1.0, fragments=fragments)
        return [b for b, _ in clean_boxes(ink, guided_boxes(arr, ink, dets, 24, p), 24)]

    for seed in range(2):
        fig, dets, leaf = _labelled_chart(seed, dense=False)
        ink = ink_mask(np.asarray(fig))
        assert ink[leaf[1] : leaf[3], leaf[0] : leaf[2]].mean() < 0.3  # sparse, as text is
        off = run(fig, dets, 0.0)
        assert len(off) == 3 and max(iou(b, leaf) for b in off) > 0.8, off
        on = run(fig, dets, 3.0)
        assert _matches(on, [d for d, _ in dets]), on
        # a label 2 size limits (48 px) or wider is not under 1.5 of them: it stays
        assert len(run(fig, dets, 1.5)) == 3
        fig, dets, leaf = _labelled_chart(seed, dense=True)
        assert len(run(fig, dets, 3.0)) == 3  # a small picture is not text


def _letter(fig: Image.Image, x: int, y: int) -> None:
    """A bold glyph-sized mark (10 x 11 px, a panel letter at this figure's size: up to 6% of its
    200 px short side) with its top-left at (x, y)."""
    ImageDraw.Draw(fig).rectangle((x, y, x + 9, y + 10), outline=(0, 0, 0), width=3)


def _guided_letters(fig: Image.Image, dets: list[tuple[Box, float]], letters: float) -> list[Box]:
    arr = np.asarray(fig)
    ink = ink_mask(arr)
    params = HybridParams(conf=0.25, support=0.5, letters=letters)
    return [b for b, _ in clean_boxes(ink, guided_boxes(arr, ink, dets, 24, params), 24)]


def test_letter_tokens_join_a_line_and_keep_only_letter_sized_ones() -> None:
    from glomssl.mining.hybrid import carries_letter, letter_tokens

    shape = (400, 600)  # short side 400: a token may be 5 to 24 px high
    pieces = [(10, 10, 14, 22), (15, 10, 22, 22), (23, 10, 27, 22)]  # "(a)" in three pieces
    pieces += [(100, 10, 110, 22), (112, 10, 122, 22), (124, 10, 134, 22), (136, 10, 146, 22)]
    pieces += [(200, 10, 203, 13), (300, 10, 310, 60)]  # a dot; a tall bar
    tokens = letter_tokens(pieces, shape)
    # "(a)" becomes one token; the four-letter word is too wide; the dot too small; the bar too tall
    assert tokens == [(10, 10, 27, 22)]
    assert carries_letter((30, 26, 200, 200), tokens)  # just below and right of the letter
    assert not carries_letter((120, 26, 300, 200), tokens)  # far from its corner
    assert not carries_letter((0, 100, 200, 300), tokens)  # the letter is far above


def test_guided_letters_keep_one_lettered_panel_whole_and_cut_lettered_pictures() -> None:
    fig, truth = _hairlines(0)
    dets = [(b, 0.8) for b in truth]
    # no letters at all: exactly guided
    assert _guided_letters(fig, dets, 1.0) == _guided_letters(fig, dets, 0.0)
    assert _matches(_guided_letters(fig, dets, 1.0), truth)
    # one letter above the first of the three touching pictures (and one above the fourth): the
    # three are one lettered panel, so the region stays whole as classic leaves it
    one = fig.copy()
    _letter(one, 10, 4)
    _letter(one, 410, 4)
    kept = _guided_letters(one, dets, 1.0)
    assert len(kept) == 2 and _matches(kept, [(10, 20, 390, 180), truth[3]])
    assert _matches(_guided_letters(one, dets, 0.0), truth)  # the option off: cut as before
    # a letter above each picture: each is its own panel, cut as guided does
    each = fig.copy()
    for b in truth:
        _letter(each, b[0], 4)
    assert _matches(_guided_letters(each, dets, 1.0), truth)


def test_letter_guard_gives_way_to_a_sure_detector() -> None:
    """``letter_conf`` (section 26): the one-lettered-panel guard does not apply when every part has
    a detector box at least this confident; below it, the guard keeps the region whole."""
    fig, truth = _hairlines(0)
    one = fig.copy()
    _letter(one, 10, 4)  # one letter above the first of three touching pictures
    _letter(one, 410, 4)
    arr = np.asarray(one)
    ink = ink_mask(arr)

    def run(conf: float, letter_conf: float) -> list[Box]:
        dets = [(b, conf) for b in truth]
        p = HybridParams(conf=0.25, support=0.5, letters=1.0, letter_conf=letter_conf)
        return [b for b, _ in clean_boxes(ink, guided_boxes(arr, ink, dets, 24, p), 24)]

    whole = [(10, 20, 390, 180), truth[3]]
    assert _matches(run(0.8, 0.0), whole)  # off: the guard keeps the lettered panel whole
    assert _matches(run(0.8, 0.7), truth)  # every part detected at 0.8 >= 0.7: cut
    assert _matches(run(0.65, 0.7), whole)  # the detector is not sure enough: the guard holds


def test_stricter_letter_guard_switches() -> None:
    from glomssl.mining.hybrid import letter_tokens

    # letter_join: a tall thin piece (a picture's edge strip) no longer absorbs a letter beside it
    letter, strip = (100, 10, 108, 19), (150, 5, 156, 200)
    assert letter_tokens([letter, strip], (400, 600)) == []  # joined: too wide to be a letter
    assert letter_tokens([letter, strip], (400, 600), join_low=True) == [letter]
    # letter_one: two of three touching pictures lettered (the third's letter not apart) are three
    # panels; section 12's guard kept them whole, the stricter one cuts them
    fig, truth = _hairlines(0)
    dets = [(b, 0.8) for b in truth]
    two = fig.copy()
    for b in (truth[0], truth[1], truth[3]):
        _letter(two, b[0], 4)
    arr = np.asarray(two)
    ink = ink_mask(arr)

    def run(**kw: float) -> list[Box]:
        p = HybridParams(conf=0.25, support=0.5, letters=1.0, **kw)
        return [b for b, _ in clean_boxes(ink, guided_boxes(arr, ink, dets, 24, p), 24)]

    assert len(run(letter_one=0.0)) == 2  # section 12: some lettered, one not: kept whole
    assert _matches(run(letter_one=1.0), truth)
    # ... while one lettered picture among unlettered ones still marks one panel
    one = fig.copy()
    _letter(one, 10, 4)
    _letter(one, 410, 4)
    arr = np.asarray(one)
    ink = ink_mask(arr)
    assert len(run(letter_one=1.0)) == 2


def test_letter_corner_ignores_a_mark_beside_a_later_part() -> None:
    """``letter_corner`` (section 30): a letter-sized mark at the corner of a part other than the
    region's top-left one (a row label, a chart's tick label) does not make the region one
    lettered panel; a letter at the region's top-left still does."""
    fig, truth = _hairlines(0)
    dets = [(b, 0.6) for b in truth]  # under letter_conf: only the guard decides

    def run(marked: Image.Image, corner: float) -> list[Box]:
        arr = np.asarray(marked)
        ink = ink_mask(arr)
        p = HybridParams(conf=0.25, support=0.5, letters=1.0, letter_conf=0.7, letter_corner=corner)
        return [b for b, _ in clean_boxes(ink, guided_boxes(arr, ink, dets, 24, p), 24)]

    whole = [(10, 20, 390, 180), truth[3]]
    later = fig.copy()
    _letter(later, truth[1][0], 4)  # above the second of the three touching pictures
    _letter(later, 410, 4)
    assert _matches(run(later, 0.0), whole)  # the old guard: one part lettered, kept whole
    assert _matches(run(later, 1.0), truth)  # not the region's corner: cut
    first = fig.copy()
    _letter(first, 10, 4)  # above the first: the region's own letter
    _letter(first, 410, 4)
    assert _matches(run(first, 1.0), whole)


def _no_hairline(flat: bool = False, band: int = 20) -> tuple[Image.Image, list[Box]]:
    """Two pictures touching with no gutter and no full-length seam (a thin textured band on top of
    a shared grey, so the fine cut finds nothing), then a gutter and a third; ``flat``: the first
    two are one grey block (no seam at all)."""
    rng = np.random.default_rng(0)
    fig = Image.new("RGB", (560, 200), (255, 255, 255))
    truth = [(20, 20, 220, 180), (220, 20, 400, 180), (420, 20, 540, 180)]
    for b, tone in zip(truth, (60, 150, 100)):
        x = np.full((b[3] - b[1], b[2] - b[0], 3), 200, np.uint8)
        x[:band] = np.clip(rng.normal(tone, 25, (band, b[2] - b[0], 3)), 0, 255).astype(np.uint8)
        fig.paste(Image.fromarray(x), b[:2])
    if flat:
        fig.paste(Image.new("RGB", (380, 160), (200, 200, 200)), (20, 20))
    return fig, truth


def test_guided_fallback_splits_at_detector_boxes_only_with_a_colour_seam() -> None:
    fig, truth = _no_hairline()
    dets = [((24, 22, 214, 178), 0.8), ((226, 18, 396, 182), 0.7), ((420, 20, 540, 180), 0.9)]

    def run(f: Image.Image, d: list[tuple[Box, float]], fallback: float) -> list[Box]:
        arr = np.asarray(f)
        ink = ink_mask(arr)
        p = HybridParams(conf=0.25, support=0.5, fallback=fallback, split_conf=0.6, seam=1.5)
        return [b for b, _ in clean_boxes(ink, guided_boxes(arr, ink, d, 24, p), 24)]

    merged = [(20, 20, 400, 180), truth[2]]
    assert run(fig, dets, 0.0) == merged  # no hairline: guided alone cannot cut
    assert run(fig, dets, 1.0) == truth  # the detector's boxes, edges moved to the colour seam
    # a more confident box over the whole region, boxes under split_conf, or no seam: no cut
    assert run(fig, dets + [((20, 20, 400, 180), 0.95)], 1.0) == merged
    assert run(fig, [(b, 0.5) for b, _ in dets], 1.0) == merged
    flat, _ = _no_hairline(flat=True)
    assert run(flat, dets, 1.0) == merged


def test_guided_fallback_2_also_splits_where_unconfirmed_hairline_cuts_exist() -> None:
    """A band tall enough to be a part of its own: the fine cut finds parts (two band halves and the
    grey below) that no detector box confirms, so fallback 1 keeps the region whole and 2 splits it
    at the detector's boxes."""
    fig, truth = _no_hairline(band=64)
    dets = [((24, 22, 214, 178), 0.8), ((226, 18, 396, 182), 0.7), ((420, 20, 540, 180), 0.9)]
    arr = np.asarray(fig)
    ink = ink_mask(arr)

    def run(fallback: float) -> list[Box]:
        p = HybridParams(conf=0.25, support=0.5, fallback=fallback, split_conf=0.6, seam=1.5)
        return [b for b, _ in clean_boxes(ink, guided_boxes(arr, ink, dets, 24, p), 24)]

    assert run(1.0) == [(20, 20, 400, 180), truth[2]]
    assert run(2.0) == truth


def test_guided_distinct_ignores_a_parts_own_box_as_the_whole_region() -> None:
    """A large picture and a small one a 1-px gutter apart: the large one's box also matches the
    pair as a region (IoU 0.84), so without ``distinct`` the check reads it as "one panel" and keeps
    the pair whole; with it, only a box that fits the region better than every part vetoes."""
    fig, truth = _pictures(3, [(10, 20, 330, 180), (331, 20, 390, 180), (410, 20, 550, 180)])
    arr = np.asarray(fig)
    ink = ink_mask(arr)
    dets = [((12, 22, 328, 178), 0.9), ((332, 21, 389, 179), 0.7), ((411, 21, 549, 179), 0.9)]

    def run(d: list[tuple[Box, float]], distinct: float) -> list[Box]:
        p = HybridParams(conf=0.25, support=0.5, letters=0.0, distinct=distinct)
        return [b for b, _ in clean_boxes(ink, guided_boxes(arr, ink, d, 24, p), 24)]

    merged = [(10, 20, 390, 180), truth[2]]
    assert run(dets, 0.0) == merged
    assert _matches(run(dets, 1.0), truth, 0.99)
    # a box over the whole pair, more confident than the small part's, still keeps it whole
    assert run(dets + [((10, 20, 390, 180), 0.95)], 1.0) == merged


def _nested_figure() -> tuple[Image.Image, list[Box]]:
    """Two pictures touching with no seam, then two more behind 1-px gutters (one whitespace
    region), and the four panel boxes."""
    rng = np.random.default_rng(1)
    fig = Image.new("RGB", (720, 200), (255, 255, 255))
    truth = [(20, 20, 180, 180), (180, 20, 340, 180), (341, 20, 520, 180), (521, 20, 700, 180)]
    for b, tone in zip(truth[:2], (60, 150)):
        x = np.full((b[3] - b[1], b[2] - b[0], 3), 200, np.uint8)  # shared grey: no seam below
        x[:20] = np.clip(rng.normal(tone, 25, (20, b[2] - b[0], 3)), 0, 255).astype(np.uint8)
        fig.paste(Image.fromarray(x), b[:2])
    for b, tone in zip(truth[2:], (90, 130)):
        fig.paste(_texture(rng, b[2] - b[0], b[3] - b[1], tone), b[:2])
    return fig, truth


def test_guided_nested_splits_an_unconfirmed_part_of_a_confirmed_cut() -> None:
    """Two pictures touching with no seam, then two more behind 1-px gutters, all one whitespace
    region. The fine cut finds three parts; the two single pictures are confirmed, so the cut is
    taken, but the touching pair stays one unconfirmed part. With ``nested`` it is split at its
    detector boxes (section 17), under the same whole-region check."""
    fig, truth = _nested_figure()
    arr = np.asarray(fig)
    ink = ink_mask(arr)
    assert [b for b, _ in classic_boxes(fig)] == [(20, 20, 700, 180)]  # one region to whitespace
    dets = [((b[0] + 2, b[1] + 2, b[2] - 2, b[3] - 2), 0.8) for b in truth]

    def run(d: list[tuple[Box, float]], nested: float) -> list[Box]:
        p = HybridParams(
            conf=0.25, support=0.5, fallback=2, split_conf=0.6, seam=1.5, nested=nested
        )
        return sorted(b for b, _ in clean_boxes(ink, guided_boxes(arr, ink, d, 24, p), 24))

    pair = (20, 20, 340, 180)
    assert run(dets, 0.0) == [pair, truth[2], truth[3]]  # the confirmed cut keeps the pair whole
    assert _matches(run(dets, 1.0), truth, 0.97)
    # a more confident box over the pair itself keeps it whole, as for a whole region
    assert run(dets + [(pair, 0.95)], 1.0) == [pair, truth[2], truth[3]]
    # detector boxes under split_conf do not split it either
    weak = dets[2:] + [(b, 0.5) for b, _ in dets[:2]]
    assert run(weak, 1.0) == [pair, truth[2], truth[3]]


def test_shipped_guided_settings_split_a_touching_pair_at_moderately_confident_boxes() -> None:
    """The shipped sidecar's guided settings (section 24) split the unconfirmed touching pair of
    :func:`_nested_figure` at detector boxes of confidence 0.5; section 15's settings (``nested``
    0, ``split_conf`` 0.6) kept it whole."""
    from glomssl.mining.separate import Separator

    fig, truth = _nested_figure()
    arr = np.asarray(fig)
    ink = ink_mask(arr)
    dets = [
        ((b[0] + 2, b[1] + 2, b[2] - 2, b[3] - 2), s) for b, s in zip(truth, (0.5, 0.5, 0.8, 0.8))
    ]
    shipped = Separator("guided").hybrid
    got = [b for b, _ in clean_boxes(ink, guided_boxes(arr, ink, dets, 24, shipped), 24)]
    assert _matches(got, truth, 0.97), got
    old = dataclasses.replace(shipped, nested=0.0, split_conf=0.6, seam=1.5, merge=0.0)
    kept = sorted(b for b, _ in clean_boxes(ink, guided_boxes(arr, ink, dets, 24, old), 24))
    assert kept == [(20, 20, 340, 180), truth[2], truth[3]]
