"""The detector's weights: safe loading, refusals, prediction, and a tiny offline training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from glomssl.detect.model import (
    ARCHITECTURE,
    DEFAULT_WEIGHTS,
    MODEL_YAML,
    build_net,
    load_detector,
    read_meta,
)
from glomssl.errors import GlomsslError
from glomssl.runs import save_weights


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("det")
    yolo = build_net(MODEL_YAML)
    state = {k: v.float() for k, v in yolo.model.state_dict().items()}
    meta = {"architecture": ARCHITECTURE, "mpp": 2.0, "conf": 0.3}
    return save_weights(d / "glomerulus_detector.safetensors", state, meta)


def test_shipped_detector_loads_with_its_card() -> None:
    meta = read_meta()
    assert meta["architecture"] == ARCHITECTURE
    assert meta["mpp"] == 2.0 and 0 < meta["conf"] < 1
    assert DEFAULT_WEIGHTS.stat().st_size < 8 * 2**20  # a few MB inside the package
    det = load_detector(None, "cpu")
    assert det.mpp == 2.0 and det.conf == meta["conf"]
    assert (DEFAULT_WEIGHTS.parent / "GLOMERULUS_DETECTOR_CARD.md").is_file()


def test_prediction_shapes_and_padding(random_weights: Path) -> None:
    det = load_detector(random_weights, "cpu")
    tiles = [np.full((96, 96, 3), 230, np.uint8), np.zeros((100, 70, 3), np.uint8)]
    out = det.predict(tiles, conf=0.0001)
    assert len(out) == 2
    for (boxes, scores), t in zip(out, tiles):
        assert boxes.shape[1] == 4 and boxes.shape[0] == scores.shape[0]
        assert (boxes[:, [0, 2]] <= t.shape[1]).all() and (boxes[:, [1, 3]] <= t.shape[0]).all()
    assert det.predict([]) == []


def test_refuses_what_it_cannot_load_safely(tmp_path: Path, random_weights: Path) -> None:
    pt = tmp_path / "model.pt"
    torch.save({"x": torch.zeros(1)}, pt)
    with pytest.raises(GlomsslError, match="not a .safetensors"):
        load_detector(pt)
    with pytest.raises(GlomsslError, match="do not exist"):
        load_detector(tmp_path / "nope.safetensors")
    other = save_weights(
        tmp_path / "o.safetensors", {"w": torch.zeros(2)}, {"architecture": "glomssl-panel-yolo"}
    )
    with pytest.raises(GlomsslError, match="not a glomerulus detector"):
        load_detector(other)
    wrong = save_weights(
        tmp_path / "w.safetensors", {"w": torch.zeros(2)}, {"architecture": ARCHITECTURE}
    )
    with pytest.raises(GlomsslError, match="does not fit"):
        load_detector(wrong)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors at all")
    with pytest.raises(GlomsslError):
        load_detector(junk)
    with pytest.raises(GlomsslError, match="layout .yaml"):
        build_net(pt)


@pytest.mark.slow
def test_a_wrong_layout_is_named_in_glomerulus_terms(tmp_path: Path) -> None:
    """`detect train --model` with a layout of two classes or an unknown layer: the hint spoke of
    the "panel detector" and `names: {0: panel}` (the separator's); it is about glomeruli here."""
    from glomssl.mining.yolo import build_model

    two = tmp_path / "two.yaml"
    two.write_text("nc: 2\nnames: {0: a, 1: b}\nbackbone: [[-1, 1, Conv, [8, 3, 2]]]\nhead: []\n")
    odd = tmp_path / "odd.yaml"
    odd.write_text("nc: 1\nbackbone: [[-1, 1, NoSuchLayer, [8]]]\nhead: []\n")
    for layout, says in (
        (two, "the glomerulus detector has one class; set `names: {0: glomerulus}`"),
        (odd, "'NoSuchLayer' is not one glomssl builds glomerulus detectors from"),
    ):
        with pytest.raises(GlomsslError) as info:
            build_net(layout)  # what `detect train` builds its --model with
        assert says in str(info.value) and "panel" not in str(info.value)
        with pytest.raises(GlomsslError, match="panel detector"):  # `separator train` keeps its own
            build_model(layout)


def test_tiny_training_run_writes_loadable_weights(tmp_path: Path) -> None:
    """One epoch on a few mosaics: weights + sidecar (mpp, conf from validation), no pickles needed."""
    import csv

    import cv2
    from PIL import Image

    from glomssl.detect.build import DetectDataConfig, run_data
    from glomssl.detect.train import DetectTrainConfig, train_glomerulus_detector

    rng = np.random.default_rng(0)
    (tmp_path / "c").mkdir()
    rows = []
    for i in range(8):
        img = rng.integers(150, 230, (160, 160, 3), dtype=np.uint8)
        m = np.zeros((160, 160), np.uint8)
        cv2.circle(m, (80, 80), 70, 255, -1)
        img[m > 0] = (120, 40, 140)
        Image.fromarray(img).save(tmp_path / "c" / f"{i}.png")
        Image.fromarray(m).save(tmp_path / "c" / f"{i}_m.png")
        rows.append({"image": f"{i}.png", "mask": f"{i}_m.png", "slide": f"s{i % 4}"})
    with (tmp_path / "c" / "l.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "mask", "slide"])
        w.writeheader()
        w.writerows(rows)
    run_data(
        DetectDataConfig(
            out=str(tmp_path / "ds"),
            crops=str(tmp_path / "c" / "l.csv"),
            n=8,
            size=128,
            val_fraction=0.25,
            quiet=True,
        )
    )
    with pytest.raises(GlomsslError, match="layout .yaml"):
        DetectTrainConfig(data=str(tmp_path / "ds"), model=str(tmp_path / "x.pt")).validate()
    odd = tmp_path / "odd.yaml"
    odd.write_text("nc: 1\nbackbone: [[-1, 1, NoSuchLayer, [8]]]\nhead: []\n")
    with pytest.raises(GlomsslError, match="odd.yaml"):  # the user's file, not the run's copy
        train_glomerulus_detector(
            DetectTrainConfig(data=str(tmp_path / "ds"), out=str(tmp_path / "bad"), model=str(odd))
        )
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    with pytest.raises(GlomsslError):  # refused after its run folder exists: the folder goes
        train_glomerulus_detector(
            DetectTrainConfig(
                data=str(tmp_path / "ds"),
                out=str(tmp_path / "bad"),
                init=str(tmp_path / "no.safetensors"),
            )
        )
    assert not any((tmp_path / "bad").iterdir()), "a refused run leaves no run folder"
    r = train_glomerulus_detector(
        DetectTrainConfig(
            data=str(tmp_path / "ds"),
            out=str(tmp_path / "runs"),
            epochs=1,
            imgsz=128,
            batch=4,
            workers=0,
            cache=False,
            quiet=True,
        )
    )
    meta = json.loads(Path(r["weights"]).with_suffix(".json").read_text())
    assert meta["architecture"] == ARCHITECTURE and meta["mpp"] == 2.0 and 0 < meta["conf"] < 1
    det = load_detector(r["weights"], "cpu")
    assert det.conf == meta["conf"]
    with pytest.raises(GlomsslError, match="not a glomssl detector data set"):
        train_glomerulus_detector(
            DetectTrainConfig(data=str(tmp_path / "c"), out=str(tmp_path / "r2"))
        )
