"""What a weights file is travels in its safetensors header, not only in its .json sidecar.

A panel detector and a glomerulus detector have the same layout, so copied without its sidecar one
loaded as the other and gave silently wrong boxes. Every writer now tags its file (``glomssl_kind``)
and every loader refuses another kind with a one-line error that names the file and where it goes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from glomssl.detect import model as det_model
from glomssl.errors import GlomsslError
from glomssl.mining import yolo
from glomssl.runs import WEIGHTS_KINDS, load_weights, save_weights, weights_kind

PANEL = yolo.DEFAULT_WEIGHTS
GLOM = det_model.DEFAULT_WEIGHTS


def _bare_copy(src: Path, dst: Path) -> Path:
    """``src`` copied without its .json sidecar, as a user might."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    assert not dst.with_suffix(".json").exists()
    return dst


def _untagged_copy(src: Path, dst: Path, with_sidecar: bool) -> Path:
    """The same tensors written without a kind tag (a file from before the tags), sidecar or not."""
    from safetensors.torch import load_file, save_file

    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(load_file(str(src)), str(dst), metadata={"format": "pt", "glomssl": "0.1.0"})
    if with_sidecar:
        shutil.copyfile(src.with_suffix(".json"), dst.with_suffix(".json"))
    assert weights_kind(dst) is None
    return dst


def _one_line_error(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), output
    return lines[0]


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("figs")
    img = np.full((120, 200, 3), 255, np.uint8)
    img[10:110, 10:95] = (200, 80, 120)
    img[10:110, 105:190] = (60, 120, 200)
    Image.fromarray(img).save(folder / "fig.png")
    return folder


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from glomssl.slidechain.pyramid import write_pyramid

    def region(x: int, y: int, w: int, h: int) -> np.ndarray:
        return np.full((h, w, 3), (205, 120, 170), np.uint8)

    return write_pyramid(tmp_path_factory.mktemp("slide") / "s.tif", region, 1024, 1024, 0.5)


def test_shipped_detectors_carry_their_kind() -> None:
    assert weights_kind(PANEL) == "panel-detector"
    assert weights_kind(GLOM) == "glomerulus-detector"
    # and the tag agrees with the sidecars shipped beside them
    assert load_weights(PANEL, expect="panel-detector")[1]["architecture"] == yolo.ARCHITECTURE
    assert load_weights(GLOM, expect="glomerulus-detector")[1]["architecture"] == (
        det_model.ARCHITECTURE
    )


def test_separate_refuses_glomerulus_weights(figures: Path, tmp_path: Path) -> None:
    from glomssl.cli import cli

    weights = _bare_copy(GLOM, tmp_path / "w" / "copied.safetensors")
    out = tmp_path / "out"
    res = CliRunner().invoke(
        cli, ["separate", "--input", str(figures), "--out", str(out), "--weights", str(weights)]
    )
    assert res.exit_code == 2, res.output
    line = _one_line_error(res.output)
    assert f"--weights {weights} is not a panel detector's weights but a glomerulus" in line
    assert "glomssl detect --weights or glomssl wsi --detector" in line
    assert not out.exists(), "refused before any output"


def test_separate_refuses_glomerulus_weights_in_a_real_process(
    figures: Path, tmp_path: Path
) -> None:
    from _proc import run_cli

    weights = _bare_copy(GLOM, tmp_path / "copied.safetensors")
    args = ["separate", "--input", str(figures), "--out", str(tmp_path / "o")]
    proc = run_cli([*args, "--weights", str(weights)], 300)
    assert proc.returncode == 2, proc.stderr
    line = _one_line_error(proc.stderr)
    assert "is not a panel detector's weights but a glomerulus detector's" in line


@pytest.mark.parametrize("command", ["detect", "wsi"])
def test_detect_and_wsi_refuse_panel_weights(command: str, slide: Path, tmp_path: Path) -> None:
    from glomssl.cli import cli

    weights = _bare_copy(PANEL, tmp_path / "w" / "copied.safetensors")
    out = tmp_path / "out"
    if command == "detect":
        args = ["detect", "--slide", str(slide), "--out", str(out), "--weights", str(weights)]
        flag = "--weights"
    else:
        args = ["wsi", str(slide), "--out", str(out), "--detector", str(weights)]
        flag = "--detector"
    res = CliRunner().invoke(cli, [*args, "--quiet"])
    assert res.exit_code == 2, res.output
    line = _one_line_error(res.output)
    assert f"{flag} {weights} is not a glomerulus detector's weights but a panel" in line
    assert "pass it to glomssl separate --weights" in line
    assert not list(out.glob("*/summary.json")), "no slide was processed with the wrong detector"


def test_load_weights_refuses_every_other_kind(tmp_path: Path) -> None:
    kinds = list(WEIGHTS_KINDS)
    for i, kind in enumerate(kinds):
        path = save_weights(tmp_path / f"{kind}.safetensors", {"w": torch.zeros(2)}, {}, kind=kind)  # type: ignore[arg-type]
        path.with_suffix(".json").unlink()  # the header alone says what it is
        assert weights_kind(path) == kind
        assert load_weights(path, expect=kind)[1] == {}  # type: ignore[arg-type]
        other = kinds[(i + 1) % len(kinds)]
        with pytest.raises(GlomsslError) as info:
            load_weights(path, expect=other, flag="--opt")  # type: ignore[arg-type]
        msg = str(info.value)
        assert "\n" not in msg
        assert msg == (
            f"--opt {path} is not {WEIGHTS_KINDS[other][0]}'s weights but "
            f"{WEIGHTS_KINDS[kind][0]}'s; pass it to {WEIGHTS_KINDS[kind][1]}"
        )


def test_detector_loaders_refuse_the_other_detector(tmp_path: Path) -> None:
    glom = _bare_copy(GLOM, tmp_path / "g.safetensors")
    panel = _bare_copy(PANEL, tmp_path / "p.safetensors")
    with pytest.raises(GlomsslError, match="is not a panel detector's weights but a glomerulus"):
        yolo.load_detector(glom)
    with pytest.raises(GlomsslError, match="is not a glomerulus detector's weights but a panel"):
        det_model.load_detector(panel)
    with pytest.raises(GlomsslError, match="--init .* is not a glomerulus detector's weights"):
        det_model.load_yolo(panel, flag="--init")  # detect train --init


def test_untagged_legacy_file_with_its_sidecar_still_loads(tmp_path: Path) -> None:
    panel = _untagged_copy(PANEL, tmp_path / "p" / "panel.safetensors", with_sidecar=True)
    glom = _untagged_copy(GLOM, tmp_path / "g" / "glom.safetensors", with_sidecar=True)
    assert yolo.load_detector(panel).model.yaml["nc"] == 1
    det = det_model.load_detector(glom, "cpu")
    assert det.conf == det_model.read_meta()["conf"]
    # its sidecar still says what it is: the other detector's loader refuses it in the new words
    with pytest.raises(GlomsslError, match="is not a glomerulus detector's weights but a panel"):
        det_model.load_detector(panel)
    with pytest.raises(GlomsslError, match="is not a panel detector's weights but a glomerulus"):
        yolo.check_weights(glom)


def test_untagged_detector_without_sidecar(tmp_path: Path) -> None:
    """A copy of a detector shipped before the tags, without its .json: known by its tensors. Any
    other untagged detector without a sidecar cannot be told apart (both have the same layout) and
    keeps loading in either command as before."""
    from safetensors.torch import save_file

    old_glom = _untagged_copy(GLOM, tmp_path / "old_glom.safetensors", with_sidecar=False)
    old_panel = _untagged_copy(PANEL, tmp_path / "old_panel.safetensors", with_sidecar=False)
    with pytest.raises(GlomsslError, match="is not a panel detector's weights but a glomerulus"):
        yolo.check_weights(old_glom)
    with pytest.raises(GlomsslError, match="is not a glomerulus detector's weights but a panel"):
        det_model.load_detector(old_panel)
    yolo.check_weights(old_panel)  # each still loads where it belongs
    det_model.load_detector(old_glom)
    net = det_model.build_net(det_model.MODEL_YAML)
    mine = tmp_path / "mine.safetensors"
    save_file({k: v.float().contiguous() for k, v in net.model.state_dict().items()}, str(mine))
    yolo.load_detector(mine)
    det_model.load_detector(mine)


def test_tag_and_sidecar_that_disagree_are_refused(tmp_path: Path) -> None:
    weights = _bare_copy(PANEL, tmp_path / "w.safetensors")
    shutil.copyfile(GLOM.with_suffix(".json"), weights.with_suffix(".json"))  # another file's .json
    for load in (
        lambda: yolo.check_weights(weights),
        lambda: det_model.load_detector(weights),
        lambda: load_weights(weights),
    ):
        with pytest.raises(GlomsslError) as info:
            load()
        msg = str(info.value)
        assert "is a panel detector's weights but its sidecar w.json describes a glomerulus" in msg
        assert "belongs to another file" in msg and "\n" not in msg


@dataclass
class _SSLConfig:
    arch: str = "resnet18"
    method: str = "regcon"
    image_size: int = 32
    extra: dict[str, Any] = field(default_factory=dict)


def test_every_writer_tags_its_file(tmp_path: Path) -> None:
    """Each writer tags its file; each loader refuses the others' files without their sidecars;
    runs.py names each kind's sidecar marker without importing the writers, and they agree."""
    from glomssl.datagan.labeler import load_labeler, make_labeler, save_labeler
    from glomssl.datagan.networks import create_discriminator, create_generator
    from glomssl.datagan.snapshot import FORMAT, load_snapshot, save_snapshot
    from glomssl.finetune.classifier.model import (
        KIND,
        Classifier,
        export_classifier,
        load_classifier_file,
    )
    from glomssl.finetune.segmenter.infer import SEGMENTER_FORMAT, export_segmenter, load_segmenter
    from glomssl.models import create_model
    from glomssl.models.backbones import ResNetTrunk
    from glomssl.models.encoder import load_backbone
    from glomssl.runs import sidecar_kind
    from glomssl.ssl.module import export_backbone

    torch.manual_seed(0)
    cls = export_classifier(
        Classifier(ResNetTrunk("resnet18"), 2), tmp_path / "cls" / "model.safetensors",
        {"classes": ["a", "b"], "arch": "resnet18", "image_size": 32},
    )  # fmt: skip
    seg = export_segmenter(
        create_model("unet", classes=["Tuft", "GS"], base=8), tmp_path / "seg",
        {"image_size": 32, "input_scale": 1.0},
    )  # fmt: skip
    lab = save_labeler(make_labeler(8, 2, k=1, hidden=[4]), tmp_path / "lab", {})
    G, G_ema = (create_generator("small", 32, channel_max=8) for _ in range(2))
    D = create_discriminator("small", 32, channel_max=8)
    snap = save_snapshot(tmp_path / "gan" / "snapshot-000001.safetensors", G, D, G_ema, 0.0, 1)

    class _Method(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = ResNetTrunk("resnet18")
            self.decoder = torch.nn.Conv2d(2, 2, 1)

    module: Any = type("M", (), {"method": _Method()})()  # what export_backbone reads of a module
    ssl = export_backbone(module, _SSLConfig(), tmp_path / "ssl", 1)
    written = {
        "classifier": cls,
        "segmenter": seg,
        "datagan-labeler": lab,
        "gan-snapshot": snap,
        "ssl-backbone": ssl,
        "ssl-decoder": tmp_path / "ssl" / "decoder.safetensors",
    }
    for kind, path in written.items():
        assert weights_kind(path) == kind, path
        assert sidecar_kind(json.loads(path.with_suffix(".json").read_text())) == kind, path
    # each loader refuses the others' files, even without their sidecars
    loaders = {
        "classifier": load_classifier_file,
        "segmenter": load_segmenter,
        "datagan-labeler": load_labeler,
        "gan-snapshot": load_snapshot,
        "ssl-backbone": load_backbone,
    }
    bare = {k: _bare_copy(p, tmp_path / "bare" / k / p.name) for k, p in written.items()}
    for kind, loader in loaders.items():
        wrong = bare["ssl-backbone" if kind != "ssl-backbone" else "classifier"]
        with pytest.raises(GlomsslError) as info:
            loader(wrong)
        what = "a glomssl pretrain encoder" if kind != "ssl-backbone" else "a glomssl classifier"
        assert f"is not {WEIGHTS_KINDS[kind][0]}'s weights but {what}'s" in str(info.value), kind
    # the sidecar markers runs.py knows are the writers' constants
    assert sidecar_kind({"architecture": yolo.ARCHITECTURE}) == "panel-detector"
    assert sidecar_kind({"architecture": det_model.ARCHITECTURE}) == "glomerulus-detector"
    assert sidecar_kind({"format": SEGMENTER_FORMAT}) == "segmenter"
    assert sidecar_kind({"kind": KIND, "arch": "resnet18"}) == "classifier"
    assert sidecar_kind({"format": FORMAT}) == "gan-snapshot"
    assert sidecar_kind({"kind": "datagan-labeler"}) == "datagan-labeler"
    assert sidecar_kind({"arch": "resnet18", "method": "simclr"}) == "ssl-backbone"
    decoder = {"arch": "resnet18", "method": "regcon", "part": "decoder"}
    assert sidecar_kind(decoder) == "ssl-decoder"
