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
from glomssl.mining.synth import SynthConfig, run_synth
from glomssl.mining.yolo import (
    ARCHITECTURE,
    DEFAULT_WEIGHTS,
    MODEL_YAML,
    build_model,
    load_detector,
    setup_offline,
    weights_meta,
)
from glomssl.mining.yolo_train import TrainConfig, train_detector


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


def test_training_prints_progress_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a terminal, a training run still says how far it is: one line per epoch (with the
    validation mAP50) to stderr; `quiet` silences them."""
    synth = run_synth(SynthConfig(out=str(tmp_path / "s"), n=4, val_fraction=0.25, quiet=True))
    kw = dict(data=synth["data_yaml"], out=str(tmp_path / "runs"), imgsz=64, batch=2, workers=0)
    train_detector(TrainConfig(**kw, epochs=2))  # type: ignore[arg-type]
    err = capsys.readouterr().err
    epochs = [x for x in err.splitlines() if x.startswith("separator train: epoch")]
    assert [x.split()[3] for x in epochs] == ["1/2", "2/2"] and all("mAP50=" in x for x in epochs)
    train_detector(TrainConfig(**kw, epochs=1, quiet=True))  # type: ignore[arg-type]
    assert "separator train" not in capsys.readouterr().err


def test_lr0_is_the_rate_training_uses(tmp_path: Path) -> None:
    """ultralytics' automatic optimizer ignores ``lr0``; glomssl asks for AdamW when one is given,
    so the rate logged for the (single, warm-up-free) epoch is the one asked for, and without it
    the automatic 0.002."""
    import csv

    synth = run_synth(SynthConfig(out=str(tmp_path / "s"), n=4, val_fraction=0.25, quiet=True))
    rates = {}
    for lr0 in (None, 0.0123):
        kw = dict(data=synth["data_yaml"], out=str(tmp_path / "runs"), imgsz=64, batch=2)
        cfg = TrainConfig(**kw, workers=0, epochs=1, warmup_epochs=0.0, lr0=lr0, quiet=True)  # type: ignore[arg-type]  # fmt: skip
        run = Path(train_detector(cfg)["run"])
        with (run / "ultralytics" / "results.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        rates[lr0] = float(rows[-1]["lr/pg0"])
        assert weights_meta(run / "panel_detector.safetensors")["lr0"] == (
            lr0 or "auto (ultralytics: AdamW at 0.002)"
        )
    assert rates[0.0123] == pytest.approx(0.0123, rel=1e-6)
    assert rates[None] == pytest.approx(0.002, rel=1e-6)
    from glomssl.cli import cli

    for bad in ("0", "nan", "2"):
        args = ["separator", "train", "--data", synth["data_yaml"], "--lr0", bad, "--dry-run"]
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2 and "Error: --lr0 " in res.output, res.output


def test_progress_lines_count_batches_over_all_epochs(capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from glomssl.mining.yolo import report_progress

    hooks: dict[str, list] = {}
    fake = SimpleNamespace(add_callback=lambda ev, fn: hooks.setdefault(ev, []).append(fn))
    report_progress(fake, "train", every_s=0.0)
    tr = SimpleNamespace(train_loader=[0] * 5, epoch=0, epochs=3, start_epoch=0, metrics={})
    hooks["on_train_start"][0](tr)
    for epoch in range(3):
        tr.epoch = epoch
        hooks["on_train_epoch_start"][0](tr)
        for _ in range(5):
            hooks["on_train_batch_end"][0](tr)
        tr.metrics = {"metrics/mAP50(B)": 0.5 + epoch / 10}
        hooks["on_fit_epoch_end"][0](tr)
    tr.epoch = 3  # ultralytics validates the best epoch once more after the last one
    hooks["on_fit_epoch_end"][0](tr)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("train: batches 1/15 (7%)") and "epoch=1" in lines[0]
    assert lines[5].startswith("train: epoch 1/3 (33%)") and "mAP50=0.5" in lines[5]
    assert lines[6].startswith("train: batches 6/15 (40%)") and "epoch=2" in lines[6]
    assert lines[-1].startswith("train: epoch 3/3 (100%)") and "mAP50=0.7" in lines[-1]
    assert len(lines) == 18


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
    good = tmp_path / "good.safetensors"
    good.write_bytes(DEFAULT_WEIGHTS.read_bytes())
    (tmp_path / "good.json").write_bytes(b"\x9f\xff binary")  # a damaged sidecar, named as such
    assert weights_meta(good) == {}
    with pytest.raises(GlomsslError, match=r"not a detector checkpoint \(.*good\.json is not"):
        load_detector(good)
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
    for size in ("100", "100000"):  # 100000 used to reach OpenCV: a 28-GB allocation, a traceback
        args = [
            "separator",
            "train",
            "--data",
            str(data),
            "--imgsz",
            size,
            "--out",
            str(tmp_path / "r"),
        ]
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2 and "--imgsz" in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


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


# ----------------------------------------------------------------------------- files a user hands us


class _Payload:
    """Unpickling this creates a marker file: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.marker, "pwned"))


def _synth(tmp_path: Path) -> Path:
    return Path(
        run_synth(SynthConfig(out=str(tmp_path / "s"), n=2, val_fraction=0.5, quiet=True))["out"]
    )


def test_data_yaml_download_key_never_runs(tmp_path: Path) -> None:
    """ultralytics exec()s a data YAML's `download:` when its val images are missing."""
    synth = _synth(tmp_path)
    marker = tmp_path / "ran.txt"
    evil = tmp_path / "evil.yaml"
    evil.write_text(
        f"path: {synth}\ntrain: images/train\nval: images/missing\nnames: {{0: panel}}\n"
        f"download: |\n  open({str(marker)!r}, 'w').write('pwned')\n"
    )
    cfg = TrainConfig(data=str(evil), out=str(tmp_path / "runs"), epochs=1, imgsz=64, batch=2,
                      workers=0, quiet=True)  # fmt: skip
    with pytest.raises(GlomsslError, match="'download' is not allowed"):
        train_detector(cfg)
    assert not marker.exists()
    assert not any((tmp_path / "runs").iterdir()), "a refused run leaves no run folder"


def test_data_yaml_paths_must_exist_and_be_local(tmp_path: Path) -> None:
    from glomssl.mining.yolo_files import safe_data_yaml

    synth = _synth(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"path: {synth}\ntrain: images/train\nval: images/nope\nnames: {{0: panel}}\n")
    with pytest.raises(GlomsslError, match="does not exist"):
        safe_data_yaml(bad, run)
    bad.write_text("train: https://example.org/x.zip\nval: images\nnames: {0: panel}\n")
    with pytest.raises(GlomsslError, match="not a local path"):
        safe_data_yaml(bad, run)
    bad.write_text(f"path: {synth}\ntrain: images/train\nval: images/val\nnames: {{0: a, 1: b}}\n")
    with pytest.raises(GlomsslError, match="one class"):
        safe_data_yaml(bad, run)
    clean = safe_data_yaml(synth / "data.yaml", run)
    text = clean.read_text()
    assert str((synth / "images" / "train").resolve()) in text and "download" not in text


def test_an_empty_image_folder_says_how_to_make_data(tmp_path: Path) -> None:
    """`separator train` on a data set whose image folder is empty failed deep in ultralytics
    ("training failed on ...: Error loading data from ...") with no hint, and left a run folder."""
    from glomssl.cli import cli

    synth = _synth(tmp_path)
    for f in (synth / "images" / "train").iterdir():
        f.unlink()
    runs = tmp_path / "runs"
    args = ["separator", "train", "--data", str(synth / "data.yaml"), "--out", str(runs)]
    res = CliRunner().invoke(cli, [*args, "--epochs", "1", "--imgsz", "64", "--workers", "0"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    folder = (synth / "images" / "train").resolve()
    assert f"the `train` folder {folder} holds no images" in res.output
    assert "`glomssl separator synth --out DIR`" in res.output
    assert not runs.exists() or not any(runs.iterdir()), "a refused run leaves no run folder"


def test_model_pt_is_never_unpickled(tmp_path: Path) -> None:
    import pickle

    synth = _synth(tmp_path)
    marker = tmp_path / "ran.txt"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    for field in ("model", "init"):
        cfg = TrainConfig(
            data=str(synth / "data.yaml"), out=str(tmp_path / "runs"), **{field: str(evil)}
        )
        with pytest.raises(GlomsslError, match="safetensors"):
            train_detector(cfg)
    with pytest.raises(GlomsslError, match="safely"):
        load_detector(evil)
    assert not marker.exists()
    from glomssl.cli import cli

    res = CliRunner().invoke(
        cli, ["separator", "train", "--data", str(synth / "data.yaml"), "--model", str(evil)]
    )
    assert res.exit_code == 2 and res.output.count("\n") == 1 and not marker.exists()


def test_model_yaml_activation_is_never_evaluated(tmp_path: Path) -> None:
    """ultralytics eval()s a model YAML's `activation:`; glomssl refuses the key and unknown layers."""
    marker = tmp_path / "ran.txt"
    text = MODEL_YAML.read_text()
    evil = tmp_path / "evil.yaml"
    evil.write_text(
        text + f"activation: __import__('pathlib').Path({str(marker)!r}).write_text('x')\n"
    )
    with pytest.raises(GlomsslError, match="'activation' is not allowed"):
        build_model(evil)
    odd = tmp_path / "odd.yaml"
    odd.write_text(text.replace("SPPF", "TorchVision"))
    with pytest.raises(GlomsslError, match="TorchVision"):
        build_model(odd)
    assert not marker.exists()


def test_train_from_safetensors_model(tmp_path: Path) -> None:
    """--model may name glomssl weights: training starts from them (here 1 tiny epoch)."""
    synth = _synth(tmp_path)
    summary = train_detector(
        TrainConfig(
            data=str(synth / "data.yaml"),
            out=str(tmp_path / "runs"),
            model=str(DEFAULT_WEIGHTS),
            epochs=1,
            imgsz=64,
            batch=2,
            workers=0,
            quiet=True,
        )  # fmt: skip
    )
    meta = weights_meta(summary["weights"])
    assert meta["init"] == str(DEFAULT_WEIGHTS) and meta["fliplr"] == 0.0
    assert (Path(summary["run"]) / "dataset.yaml").is_file()


def test_train_device_is_checked_first(tmp_path: Path) -> None:
    synth = _synth(tmp_path)
    with pytest.raises(GlomsslError, match="--device"):
        TrainConfig(data=str(synth / "data.yaml"), device="banana").validate()
    assert not (tmp_path / "runs").exists()


def test_train_init_is_checked_before_any_folder_and_named_as_init(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from glomssl.cli import cli

    data = tmp_path / "data.yaml"
    data.write_text("train: images/train\n")
    out = tmp_path / "runs"
    (tmp_path / "w.safetensors").mkdir()
    for init, words in (
        (tmp_path / "nope.safetensors", "check --init"),
        (tmp_path / "w.safetensors", "is a folder"),
    ):
        args = ["separator", "train", "--data", str(data), "--out", str(out)]
        res = CliRunner().invoke(cli, [*args, "--init", str(init)])
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
        assert words in res.output, res.output
    assert not out.exists()


def test_training_refuses_a_set_that_validates_on_its_training_images(tmp_path: Path) -> None:
    """A set made with --val-fraction 0 names images/train as `val:`: its "validation" scores
    would be training scores, recorded in the weights' sidecar as if they were not."""
    from glomssl.mining.yolo_files import safe_data_yaml

    s = Path(
        run_synth(SynthConfig(out=str(tmp_path / "s"), n=2, val_fraction=0.0, quiet=True))["out"]
    )
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(GlomsslError, match="names training images") as exc:
        safe_data_yaml(s / "data.yaml", run)
    assert "\n" not in str(exc.value)
    assert not (run / "dataset.yaml").exists()
    (tmp_path / "ok").mkdir()
    assert safe_data_yaml(_synth(tmp_path / "ok") / "data.yaml", run).is_file()  # val figures
