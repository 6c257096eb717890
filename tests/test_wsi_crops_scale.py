"""What the models of ``glomssl wsi`` see: crops white beyond the slide, views at the model's scale.

- A crop that reaches past a slide's edge is padded with white (glass), not with the black that
  tiffslide returns outside a slide, in the saved crop and in the views given to the classifier.
- The segmenter gets each view as ``glomssl segment`` gets an image: resized by its run's
  ``input_scale`` and tiled at its ``image_size``, its mask brought back to the view's size.

Slides are real pyramidal TIFFs written here; the detector is conftest's stand-in (``blue``), and the
segmenter a stand-in network (blue pixels are glomerulus) behind the real loading and tiling code.
"""

from __future__ import annotations

import csv
import sys
import types
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from glomssl.slidechain.chain import WsiConfig, run_wsi
from glomssl.slidechain.process import read_crop
from glomssl.slidechain.pyramid import write_pyramid
from glomssl.wsi import open_any

PINK = (205, 120, 170)
BLUE = (40, 50, 200)


def _write(
    path: Path, w0: int, h0: int, discs: list[tuple[int, int, int]], margin: int = 0
) -> Path:
    """A 0.5 um/px pyramidal TIFF of pink tissue (up to its edges unless ``margin``), blue discs."""
    img = np.full((h0, w0, 3), (243, 241, 245), np.uint8)
    img[margin : h0 - margin, margin : w0 - margin] = PINK
    for cx, cy, r in discs:
        cv2.circle(img, (cx, cy), r, BLUE, -1)

    def region(x: int, y: int, w: int, h: int) -> np.ndarray:
        out = np.full((h, w, 3), 243, np.uint8)
        sub = img[y : y + h, x : x + w]
        out[: sub.shape[0], : sub.shape[1]] = sub
        return out

    return write_pyramid(path, region, w0, h0, 0.5, min_side=512)


@pytest.fixture(scope="module")
def pink_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("crops") / "pink.tif", 1200, 1000, [])


# ---- crops beyond the slide's edge


def test_read_crop_off_the_slide_is_white(pink_slide: Path) -> None:
    slide = open_any(pink_slide)
    try:
        assert slide.level_count == 2
        # 400 level-0 px at 200 px: read from level 1; its top-left quarter lies off the slide
        a = np.asarray(read_crop(slide, -200, -200, 400, 200))
        assert a.shape == (200, 200, 3)
        assert (a[:100, :100] == 255).all()  # glass white, not black
        assert (a[:100] == 255).all() and (a[:, :100] == 255).all()
        assert np.abs(a[102:, 102:].reshape(-1, 3).mean(0) - PINK).max() < 12  # the slide itself
        # the bottom-right corner, at level 0
        w0, h0 = slide.dimensions
        b = np.asarray(read_crop(slide, w0 - 100, h0 - 60, 200, 200))
        assert (b[:, 100:] == 255).all() and (b[60:] == 255).all()
        assert np.abs(b[:58, :98].reshape(-1, 3).mean(0) - PINK).max() < 12
        # wholly off the slide: white
        assert (np.asarray(read_crop(slide, -900, 50, 300, 100)) == 255).all()
        # a crop inside the slide is read as before: exactly the reader's pixels
        c = np.asarray(read_crop(slide, 301, 203, 256, 256))
        want = np.asarray(slide.read_region((301, 203), 0, (256, 256)).convert("RGB"))
        assert np.array_equal(c, want)
    finally:
        slide.close()


def _recording_classifier(monkeypatch: pytest.MonkeyPatch, seen: list[np.ndarray]) -> None:
    mod = types.ModuleType("glomssl.finetune.classifier.infer")

    def load_classifier(path: str, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
        return object(), {"classes": ["normal", "sclerosed"], "image_size": 64}

    def classify_images(
        model: Any, meta: dict, images: list, batch_size: int = 64, device: str = "cpu"
    ) -> np.ndarray:
        seen.extend(np.asarray(im.convert("RGB")) for im in images)
        out = np.zeros((len(images), 2), np.float32)
        out[:, 0] = 1.0
        return out

    mod.load_classifier = load_classifier  # type: ignore[attr-defined]
    mod.classify_images = classify_images  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "glomssl.finetune.classifier.infer", mod)


def test_crops_and_classifier_views_at_the_edge_are_white(
    tmp_path: Path, blue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A glomerulus in the slide's corner: its 320 um crop and its view reach past the slide."""
    seen: list[np.ndarray] = []
    _recording_classifier(monkeypatch, seen)
    slide = _write(tmp_path / "corner.tif", 1200, 1000, [(160, 160, 100)])
    run_wsi(
        WsiConfig(
            slides=[str(slide)],
            out=str(tmp_path / "out"),
            detector=blue,
            classifier=str(tmp_path),
            view_context=2.0,
            quiet=True,
        )
    )
    rows = list(csv.DictReader((tmp_path / "out" / "corner" / "glomeruli.csv").open()))
    assert len(rows) == 1
    crop = np.asarray(Image.open(tmp_path / "out" / "corner" / rows[0]["crop"]).convert("RGB"))
    # crop: 640 level-0 px from -160 at 320 px, so its first 80 rows and columns lie off the slide
    assert crop.shape == (320, 320, 3)
    assert crop[:76, :].min() >= 250 and crop[:, :76].min() >= 250
    assert np.abs(crop[90:100, 90:100].reshape(-1, 3).mean(0) - PINK).max() < 15
    # the classifier's view: 2 diameters (400 level-0 px) from -40, 20 px of it off the slide
    assert len(seen) == 1
    view = seen[0]
    assert 190 <= view.shape[0] <= 210
    assert view[:18, :].min() >= 250 and view[:, :18].min() >= 250


# ---- the segmenter's scale


class ScaleRecorder:
    """A stand-in segmentation network: records the size of every input, calls blue pixels
    glomerulus. Runs behind the real ``predict_image`` (resize, tiling, stitching)."""

    stride = 16

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def probabilities(self, x: torch.Tensor, idx: list[int]) -> torch.Tensor:
        self.sizes += [tuple(x.shape[-2:])] * x.shape[0]  # type: ignore[list-item]
        blue = torch.sigmoid((x[:, 2] - x[:, 0] - 0.3) * 40)[:, None]
        return blue.repeat(1, len(idx), 1, 1)


META = {"classes": ["glomerulus"], "image_size": 64, "input_scale": 0.25, "stride": 16}


@pytest.fixture()
def recorder(monkeypatch: pytest.MonkeyPatch) -> ScaleRecorder:
    """The stand-in behind ``load_segmenter`` (used by ``glomssl wsi`` and ``glomssl segment``)."""
    net = ScaleRecorder()

    def load_segmenter(
        path: Any, device: str = "cpu", flag: str = "--model"
    ) -> tuple[Any, dict[str, Any]]:
        return net, dict(META)

    monkeypatch.setattr("glomssl.finetune.segmenter.infer.load_segmenter", load_segmenter)
    return net


def _view(side: int, r: int) -> np.ndarray:
    v = np.full((side, side, 3), PINK, np.uint8)
    cv2.circle(v, (side // 2, side // 2), r, BLUE, -1)
    return v


def test_segmenter_step_feeds_views_at_the_models_scale(recorder: ScaleRecorder) -> None:
    from glomssl.slidechain.steps import load_segmenter_step

    step = load_segmenter_step("seg-run", "cpu")
    view = _view(256, 100)
    (mask,) = step.segment([view])
    # 256 px x input_scale 0.25 = 64 px: the model's working size, in one pass
    assert recorder.sizes == [(64, 64)]
    assert mask.shape == (256, 256) and mask.dtype == bool
    truth = (view[..., 2].astype(int) - view[..., 0]) > 80
    assert (mask & truth).sum() / (mask | truth).sum() > 0.95  # back at the view's size
    # a larger view (100 px at the model's scale) is tiled at the model's image_size
    recorder.sizes.clear()
    (big,) = step.segment([_view(400, 150)])
    assert (
        big.shape == (400, 400) and set(recorder.sizes) == {(64, 64)} and len(recorder.sizes) == 4
    )


def test_segmenter_step_gives_the_mask_glomssl_segment_gives(
    recorder: ScaleRecorder, tmp_path: Path
) -> None:
    from glomssl.finetune.segmenter.predict import SegmentConfig, run_segment_images
    from glomssl.slidechain.steps import load_segmenter_step

    views = {"a": _view(240, 90), "b": _view(333, 120), "c": _view(150, 40)}
    (tmp_path / "views").mkdir()
    for name, v in views.items():
        Image.fromarray(v).save(tmp_path / "views" / f"{name}.png")
    run_segment_images(
        SegmentConfig(
            model="seg-run", input=[str(tmp_path / "views")], out=str(tmp_path / "seg"), quiet=True
        )
    )
    segment_sizes = list(recorder.sizes)
    recorder.sizes.clear()
    masks = load_segmenter_step("seg-run", "cpu").segment(list(views.values()))
    assert sorted(recorder.sizes) == sorted(segment_sizes)  # the same passes of the network
    for (name, v), m in zip(views.items(), masks):
        want = np.asarray(Image.open(tmp_path / "seg" / "masks" / "glomerulus" / f"{name}.png"))
        assert m.shape == v.shape[:2]
        assert np.array_equal(m, want > 127), name


def test_wsi_segments_at_the_models_scale(
    tmp_path: Path, blue: str, recorder: ScaleRecorder
) -> None:
    """The chain's views (one diameter, 110-140 px here) reach the network at about a quarter."""
    discs = [(500, 420, 110), (1100, 700, 140), (640, 1180, 120)]
    slide = _write(tmp_path / "k.tif", 1600, 1600, discs, margin=100)
    run_wsi(
        WsiConfig(slides=[str(slide)], out=str(tmp_path / "out"), detector=blue,
                  segmenter=str(tmp_path), quiet=True)
    )  # fmt: skip
    assert len(recorder.sizes) == 3
    assert all(h <= 48 and w <= 48 for h, w in recorder.sizes), recorder.sizes
    rows = list(csv.DictReader((tmp_path / "out" / "k" / "glomeruli.csv").open()))
    assert {r["area_source"] for r in rows} == {"mask"}
    got = sorted(float(r["area_um2"]) for r in rows)
    want = sorted(np.pi * (r * 0.5) ** 2 for _, _, r in discs)
    assert np.allclose(got, want, rtol=0.08), (got, want)
