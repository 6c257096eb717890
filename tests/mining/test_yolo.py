"""Panel detector: offline set-up, model from the packaged yaml, a 1-epoch offline training run,
safe loading of its weights, and refusal of files that are not detector checkpoints."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from glomssl.errors import GlomsslError
from glomssl.mining.synth_figures import SynthConfig, run_synth
from glomssl.mining.yolo import (
    ARCHITECTURE,
    DEFAULT_WEIGHTS,
    MODEL_YAML,
    TrainConfig,
    build_model,
    load_detector,
    setup_offline,
    train_detector,
    weights_meta,
)


def test_offline_environment() -> None:
    cfg_dir = setup_offline()
    assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["YOLO_AUTOINSTALL"] == "False"
    assert (cfg_dir / "Arial.ttf").is_file() and (cfg_dir / "Arial.ttf").stat().st_size > 100_000
    from ultralytics import settings

    assert settings["sync"] is False


def test_model_from_packaged_yaml_is_single_class() -> None:
    yolo = build_model(MODEL_YAML)
    model = yolo.model
    assert model.yaml["nc"] == 1 and model.yaml["names"] == {0: "panel"}
    n_params = sum(p.numel() for p in model.parameters())
    assert 200_000 < n_params < 3_000_000
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 128, 128))  # (1, 4 + nc, anchors) at eval
    pred = out[0] if isinstance(out, tuple | list) else out
    assert pred.shape[:2] == (1, 5)


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection (other than a local socket pair) fails the test."""

    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"network access attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def test_train_one_epoch_offline_then_load(tmp_path: Path, no_network: None) -> None:
    synth = run_synth(SynthConfig(out=str(tmp_path / "s"), n=4, val_fraction=0.25, quiet=True))
    summary = train_detector(
        TrainConfig(
            data=synth["data_yaml"],
            out=str(tmp_path / "runs"),
            epochs=1,
            imgsz=64,
            batch=2,
            workers=0,
            quiet=True,
        )
    )
    run = Path(summary["run"])
    assert run.name.endswith("-separator") and (run / "config.yaml").is_file()
    weights = Path(summary["weights"])
    assert weights.suffix == ".safetensors" and weights.is_file()
    meta = weights_meta(weights)
    assert meta["architecture"] == ARCHITECTURE and meta["imgsz"] == 64 and meta["epochs"] == 1
    yolo = load_detector(weights)
    trained = yolo.model.state_dict()
    fresh = build_model().model.state_dict()
    assert any(not torch.equal(trained[k], fresh[k]) for k in trained if "weight" in k)
    res = yolo.predict(
        np.zeros((100, 160, 3), np.uint8), imgsz=64, conf=0.01, verbose=False, device="cpu"
    )
    assert res[0].boxes.xyxy.shape[1] == 4


def test_shipped_weights_load() -> None:
    assert DEFAULT_WEIGHTS.is_file(), "the package must ship trained panel-detector weights"
    yolo = load_detector()
    assert yolo.model.yaml["nc"] == 1
    meta = weights_meta()
    assert meta["architecture"] == ARCHITECTURE and meta["imgsz"] >= 256


def test_loader_refuses_non_checkpoints(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    with pytest.raises(GlomsslError, match="not a detector checkpoint"):
        load_detector(text)
    other = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(3, 3)}, str(other))
    with pytest.raises(GlomsslError, match="not a checkpoint of the panel detector"):
        load_detector(other)
    wrong_arch = tmp_path / "gan.safetensors"
    save_file({"w": torch.zeros(1)}, str(wrong_arch))
    wrong_arch.with_suffix(".json").write_text(json.dumps({"architecture": "stylegan2"}))
    with pytest.raises(GlomsslError, match="stylegan2"):
        load_detector(wrong_arch)
    pickled = tmp_path / "model.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, pickled)  # needs unpickling: refused
    with pytest.raises(GlomsslError, match="safely"):
        load_detector(pickled)
    with pytest.raises(GlomsslError, match="do not exist"):
        load_detector(tmp_path / "missing.safetensors")


def test_cli_train_dry_run_and_bad_data(tmp_path: Path) -> None:
    from glomssl.cli import cli

    data = tmp_path / "data.yaml"
    data.write_text("train: images/train\n")
    res = CliRunner().invoke(
        cli, ["separator", "train", "--data", str(data), "--epochs", "3", "--dry-run"]
    )
    assert res.exit_code == 0 and "epochs: 3" in res.output
    res = CliRunner().invoke(cli, ["separator", "train", "--data", str(tmp_path / "none.yaml")])
    assert res.exit_code == 2 and "Error: --data" in res.output
    res = CliRunner().invoke(cli, ["separator", "train", "--data", str(data), "--imgsz", "100"])
    assert res.exit_code == 2 and "multiple of 32" in res.output


def test_corrupt_images_still_raise_pillow_errors_after_ultralytics_loads(tmp_path: Path) -> None:
    """ultralytics patches Image.open to fetch a HEIF plug-in; offline that must not leak out."""
    from PIL import Image, UnidentifiedImageError

    from glomssl.mining.yolo import setup_offline

    setup_offline()
    import ultralytics  # noqa: F401

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(UnidentifiedImageError):
        Image.open(bad)
