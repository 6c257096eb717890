"""The hybrid separator: classic whitespace cuts split and merged by detector boxes, tested with
hand-made detections on figures whose true boxes are known (no model involved)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from glomssl.mining.boxes import Box, iou
from glomssl.mining.classic import classic_boxes, clean_boxes, ink_mask
from glomssl.mining.hybrid import HybridParams, hybrid_boxes, refine


def _texture(rng: np.random.Generator, w: int, h: int, tone: int) -> Image.Image:
    arr = np.clip(rng.normal(tone, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _run(
    fig: Image.Image, dets: list[tuple[Box, float]], params: HybridParams = HybridParams()
) -> list[Box]:
    arr = np.asarray(fig)
    ink = ink_mask(arr)
    return [b for b, _ in clean_boxes(ink, hybrid_boxes(arr, ink, dets, 24, params), 24)]


def _touching(seed: int) -> tuple[Image.Image, list[Box]]:
    """Three pictures side by side with no gutter, then a gutter and a fourth."""
    rng = np.random.default_rng(seed)
    fig = Image.new("RGB", (560, 200), (255, 255, 255))
    truth = [(10, 20, 130, 180), (130, 20, 270, 180), (270, 20, 390, 180), (410, 20, 550, 180)]
    for b, tone in zip(truth, (60, 170, 90, 130)):
        fig.paste(_texture(rng, b[2] - b[0], b[3] - b[1], tone), b[:2])
    return fig, truth


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
