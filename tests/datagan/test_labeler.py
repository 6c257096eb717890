"""Labeler ensemble: JS uncertainty, annotation-folder errors, training on a tiny real generator."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glomssl.datagan import labeler as lb
from glomssl.datagan.factory import SampleConfig, run_datagan_sample
from glomssl.datagan.features import load_latent, synthesize_latent
from glomssl.datagan.networks import create_discriminator, create_generator
from glomssl.datagan.snapshot import save_snapshot
from glomssl.errors import GlomsslError

RES = 32


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `gan train`-style run folder holding one snapshot of the tiny "small" generator."""
    torch.manual_seed(0)
    G = create_generator("small", RES)
    D = create_discriminator("small", RES)
    run = tmp_path_factory.mktemp("run")
    save_snapshot(run / "snapshot-000000.safetensors", G, D, copy.deepcopy(G), 0.0, 0)
    return run


def _mask_from_image(png: Path) -> np.ndarray:
    """A learnable 3-class "annotation": thresholds of the image's own brightness."""
    grey = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    lo, hi = np.percentile(grey, [33, 66])
    return (grey > lo).astype(np.uint8) + (grey > hi).astype(np.uint8)


@pytest.fixture(scope="module")
def ann_dir(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ann")
    res = run_datagan_sample(SampleConfig(network=str(run_dir), out=str(out), n=4))
    assert res["images"] == 4 and res["resolution"] == RES
    for png in sorted(out.glob("sample_*.png")):
        Image.fromarray(_mask_from_image(png)).save(out / f"{png.stem}_mask.png")
    return out


def test_js_divergence_zero_when_members_agree() -> None:
    p = torch.softmax(torch.randn(1, 50, 4), -1).repeat(5, 1, 1)
    assert float(lb.js_divergence(p).abs().max()) < 1e-5
    k4 = torch.eye(4).unsqueeze(1)  # (K=4, N=1, C=4): each member certain of a different class
    assert abs(float(lb.js_divergence(k4)[0]) - np.log(4)) < 1e-4


def test_top_decile_mean() -> None:
    js = torch.zeros(10, 10)
    js[0, :] = 1.0  # 10 of 100 pixels
    assert lb.top_decile_mean(js) == pytest.approx(1.0)
    js[0, :5] = 0.0
    assert lb.top_decile_mean(js) == pytest.approx(0.5)


def test_sample_writes_image_and_latent(ann_dir: Path, run_dir: Path) -> None:
    from glomssl.datagan.snapshot import load_generator

    G, _ = load_generator(run_dir)
    lat = load_latent(ann_dir / "sample_000000.npz", G)
    assert lat["seed"] == 0
    img, _ = synthesize_latent(G, lat)
    saved = np.asarray(Image.open(ann_dir / "sample_000000.png"), dtype=np.float32)
    again = (img[0].clamp(-1, 1) * 127.5 + 127.5).permute(1, 2, 0).numpy()
    assert np.abs(saved - again).max() <= 1.0  # the latent reproduces the image


def test_train_save_load_predict(ann_dir: Path, run_dir: Path, tmp_path: Path) -> None:
    cfg = lb.LabelerConfig(
        network=str(run_dir),
        annotations=str(ann_dir),
        num_classes=3,
        out=str(tmp_path / "lab"),
        k=3,
        rounds=2,
        epochs=3,
        max_pixels_per_image=400,
        batch_size=128,
        quiet=True,
    )
    res = lb.train_labeler(cfg)
    assert res["images"] == 4 and res["pixels_seen"] == 2 * 4 * 400
    assert res["train_accuracy"] > 0.5  # 3 balanced classes: chance is 1/3
    model, meta = lb.load_labeler(tmp_path / "lab")
    assert model.k == 3 and meta["resolution"] == RES and sum(meta["channels"]) == model.in_dim
    x = torch.randn(7, model.in_dim)
    mean, js = model.predict(x)
    assert mean.shape == (7, 3) and js.shape == (7,)
    torch.testing.assert_close(mean.sum(-1), torch.ones(7))
    with torch.no_grad():  # the fused first-layer path equals running each member on its own
        torch.testing.assert_close(mean, model(x).softmax(-1).mean(0), atol=1e-6, rtol=1e-5)
    assert (tmp_path / "lab" / "config.yaml").is_file()


def _copy_ann(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_annotation_errors_are_one_line(ann_dir: Path, tmp_path: Path) -> None:
    bad = _copy_ann(ann_dir, tmp_path / "a")
    (bad / "sample_000001.npz").unlink()
    with pytest.raises(GlomsslError, match="has no latent sample_000001.npz") as e:
        lb.scan_annotations(bad, 3, RES)
    assert "\n" not in str(e.value)

    bad = _copy_ann(ann_dir, tmp_path / "b")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(bad / "sample_000002_mask.png")
    with pytest.raises(GlomsslError, match="is 16x16 but the generator makes 32x32"):
        lb.scan_annotations(bad, 3, RES)

    bad = _copy_ann(ann_dir, tmp_path / "c")
    Image.fromarray(np.full((RES, RES), 3, np.uint8)).save(bad / "sample_000003_mask.png")
    with pytest.raises(GlomsslError, match="class id 3 but --num-classes is 3"):
        lb.scan_annotations(bad, 3, RES)

    empty = tmp_path / "d"
    empty.mkdir()
    with pytest.raises(GlomsslError, match="holds no X_mask.png"):
        lb.scan_annotations(empty, 3, RES)


def test_masks_from_painting_tools(tmp_path: Path) -> None:
    ids = np.zeros((RES, RES), np.uint8)
    ids[5:9, 5:9] = 2
    ids[0, :] = 255  # unlabelled
    rgb = np.repeat(ids[..., None], 3, axis=2)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    pal = Image.fromarray(ids, mode="L").convert("P")
    pal.save(tmp_path / "pal.png")
    assert np.array_equal(lb.read_mask(tmp_path / "rgb.png", RES, 3), ids)
    assert np.array_equal(lb.read_mask(tmp_path / "pal.png", RES, 3), ids)
    colour = rgb.copy()
    colour[0, 0] = [255, 0, 0]
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(GlomsslError, match="colour image"):
        lb.read_mask(tmp_path / "colour.png", RES, 3)
