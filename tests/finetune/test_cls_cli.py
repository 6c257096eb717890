"""``glomssl finetune cls`` and ``glomssl classify`` through click's CliRunner and a real subprocess."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from _proc import check, run_cli
from click.testing import CliRunner
from cls_testdata import make_backbone, make_crops, read_rows, write_rows

from glomssl.cli import cli


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cls-cli")
    return {"csv": make_crops(d / "crops"), "backbone": make_backbone(d / "ssl"), "dir": d}


def _train_args(setup: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "finetune",
        "cls",
        "--data",
        str(setup["csv"]),
        "--out",
        str(out),
        "--backbone",
        str(setup["backbone"]),
        "--group",
        "slide",
        "--epochs",
        "20",
        "--workers",
        "1",
        "--quiet",
        *extra,
    ]


def test_train_then_classify_with_evaluation(setup: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    run = tmp_path / "run"
    r = runner.invoke(cli, _train_args(setup, run, "--folds", "3", "--label-fraction", "0.5"))
    assert r.exit_code == 0, r.output
    assert "48 images, 6 groups (slide), mode linear, 50% of the labels" in r.output
    assert "3 folds" in r.output and "chance" in r.output and "model.safetensors" in r.output
    preds = tmp_path / "preds.jsonl"
    r = runner.invoke(
        cli,
        [
            "classify",
            "--model",
            str(run),
            "--input",
            str(setup["csv"]),
            "--out",
            str(preds),
            "--evaluate",
            str(setup["csv"]),
            "--device",
            "cpu",
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    assert r.output.startswith("classified 48 images (GS ") and "evaluated" in r.output
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    assert len(rows) == 48
    first = rows[0]
    assert {"image", "label", "slide", "patient", "prediction", "confidence"} <= set(first)
    assert set(first["probabilities"]) == {"GS", "nonGS"}
    assert sum(first["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    m = json.loads((tmp_path / "preds.metrics.json").read_text())
    assert m["n"] == 48 and m["balanced_accuracy"] > 0.8 and m["chance_balanced_accuracy"] == 0.5
    assert (tmp_path / "preds.confusion.png").is_file()


def test_classify_a_folder_skips_unreadable_images(setup: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    run = tmp_path / "run"
    assert runner.invoke(cli, _train_args(setup, run, "--folds", "1")).exit_code == 0
    folder = tmp_path / "new"
    folder.mkdir()
    for name in ("s0_0.png", "s2_5.png"):
        (folder / name).write_bytes((setup["csv"].parent / "images" / name).read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    r = runner.invoke(
        cli,
        [
            "classify",
            "--model",
            str(run / "model.safetensors"),
            "--input",
            str(folder),
            "--out",
            str(tmp_path / "p.jsonl"),
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "classified 2 images" in r.output and "1 unreadable skipped" in r.output
    assert "broken.png" in (tmp_path / "p.skipped.jsonl").read_text()
    # the output is a manifest: each path resolves from the output file's folder
    from glomssl.manifest import resolve

    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == ["new/s0_0.png", "new/s2_5.png"]
    assert all(resolve(tmp_path / "p.jsonl", r).is_file() for r in rows)


def _one_line_error(res) -> str:  # type: ignore[no-untyped-def]
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert "Traceback" not in res.output
    return str(lines[0])


def test_bad_input_is_one_line(setup: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    no_label = write_rows(
        tmp_path / "nolabel.csv",
        [{"image": r["image"], "slide": r["slide"]} for r in read_rows(setup["csv"])],
    )
    (tmp_path / "images").symlink_to(setup["csv"].parent / "images")
    line = _one_line_error(
        runner.invoke(
            cli,
            [
                "finetune",
                "cls",
                "--data",
                str(no_label),
                "--out",
                str(tmp_path / "r"),
                "--backbone",
                str(setup["backbone"]),
            ],
        )
    )
    assert "no 'label' column" in line
    line = _one_line_error(
        runner.invoke(cli, _train_args(setup, tmp_path / "r", "--classes", "GS,normal"))
    )
    assert "'nonGS', which is not in --classes GS,normal" in line
    line = _one_line_error(
        runner.invoke(cli, _train_args(setup, tmp_path / "r", "--group", "centre"))
    )
    assert "no 'centre' column" in line
    line = _one_line_error(runner.invoke(cli, _train_args(setup, tmp_path / "r", "--folds", "7")))
    assert "--folds 7 needs at least 7 groups" in line
    line = _one_line_error(
        runner.invoke(cli, _train_args(setup, tmp_path / "r", "--label-fraction", "0"))
    )
    assert "--label-fraction" in line
    line = _one_line_error(
        runner.invoke(cli, _train_args(setup, tmp_path / "r", "--focal-gamma", "nan"))
    )
    assert "--focal-gamma" in line
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(os.urandom(100))
    args = _train_args(setup, tmp_path / "r")
    args[args.index("--backbone") + 1] = str(fake)
    assert "is not a glomssl encoder" in _one_line_error(runner.invoke(cli, args))
    assert not (tmp_path / "r" / "config.yaml").exists()  # refused before any file is written
    # classify: a backbone is not a classifier; labels the model does not know
    line = _one_line_error(
        runner.invoke(
            cli,
            [
                "classify",
                "--model",
                str(setup["backbone"]),
                "--input",
                str(setup["csv"].parent / "images"),
                "--out",
                str(tmp_path / "p.jsonl"),
            ],
        )
    )
    assert "holds no model.safetensors" in line
    run = tmp_path / "run"
    assert runner.invoke(cli, _train_args(setup, run, "--folds", "1")).exit_code == 0
    line = _one_line_error(
        runner.invoke(
            cli,
            [
                "classify",
                "--model",
                str(setup["backbone"] / "backbone.safetensors"),
                "--input",
                str(setup["csv"]),
                "--out",
                str(tmp_path / "p.jsonl"),
            ],
        )
    )
    assert "is not a glomssl classifier" in line
    renamed = write_rows(
        tmp_path / "renamed.csv",
        [
            {**r, "label": "sclerosed" if r["label"] == "GS" else r["label"]}
            for r in read_rows(setup["csv"])
        ],
    )
    line = _one_line_error(
        runner.invoke(
            cli,
            [
                "classify",
                "--model",
                str(run),
                "--input",
                str(setup["csv"]),
                "--out",
                str(tmp_path / "p.jsonl"),
                "--evaluate",
                str(renamed),
            ],
        )
    )
    assert "label 'sclerosed', which the model does not know" in line
    classify = ["classify", "--model", str(run), "--input", str(setup["csv"])]
    unlabelled = write_rows(
        tmp_path / "unlabelled.csv", [{"image": r["image"]} for r in read_rows(setup["csv"])]
    )
    line = _one_line_error(
        runner.invoke(
            cli, [*classify, "--out", str(tmp_path / "p.jsonl"), "--evaluate", str(unlabelled)]
        )  # fmt: skip
    )
    assert "--evaluate" in line and "no 'label' column" in line
    line = _one_line_error(
        runner.invoke(
            cli, [*classify, "--out", str(tmp_path / "p.jsonl"), "--evaluate", str(tmp_path)]
        )  # fmt: skip
    )
    assert "--evaluate needs a labels CSV" in line
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    line = _one_line_error(runner.invoke(cli, [*classify, "--out", str(blocker / "p.jsonl")]))
    assert "--out" in line and "not a writable folder" in line
    one = next((setup["csv"].parent / "images").rglob("*.png"))
    q = str(tmp_path / "q.jsonl")
    line = _one_line_error(runner.invoke(cli, [*classify[:-1], str(one), "--out", q]))
    assert "is one image; pass the folder that holds it" in line


def test_dry_run_prints_the_merged_config(setup: dict[str, Path], tmp_path: Path) -> None:
    r = CliRunner().invoke(
        cli,
        _train_args(
            setup,
            tmp_path / "r",
            "--mode",
            "finetune",
            "--set",
            "backbone_lr_scale=0.2",
            "--dry-run",
        ),
    )
    assert r.exit_code == 0, r.output
    assert "mode: finetune" in r.output and "backbone_lr_scale: 0.2" in r.output
    assert not (tmp_path / "r").exists()


def test_subprocess_train_and_classify(setup: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    p = check(run_cli(_train_args(setup, run, "--folds", "2"), timeout=600))
    assert "2 folds" in p.stdout
    images = str(setup["csv"].parent / "images")
    args = ["classify", "--model", str(run), "--input", images, "--out", str(tmp_path / "p.jsonl")]
    p = check(run_cli(args, timeout=600))
    assert "classified 48 images" in p.stdout
    assert "classify 48/48" in p.stderr  # progress lines when stderr is not a terminal


@pytest.mark.slow
def test_two_process_ddp_finetune_on_cpu(setup: dict[str, Path], tmp_path: Path) -> None:
    """Real DDP (gloo, 2 processes) through several Trainers (one per fold): rank zero alone writes,
    validation is gathered over both ranks, and the folds stay in step."""
    run = tmp_path / "run"
    args = _train_args(
        setup,
        run,
        "--mode",
        "finetune",
        "--folds",
        "2",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
    )
    p = check(run_cli(args, timeout=900))
    assert not p.left_behind  # no rank outlives the command
    assert p.stdout.count("2 folds") == 1  # rank zero alone reports
    res = json.loads((run / "results.json").read_text())
    assert len(res["per_fold"]) == 2 and sum(f["n"] for f in res["per_fold"]) == 48
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r.get("event") == "validation"]
    assert len(val) == 3 * 2  # 2 folds + the final model, 2 epochs each, written once
    assert (run / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("classes", ["a", "b", "c"], "names 3 classes but the weights have 2 outputs"),
        ("classes", "ab", "lists no classes"),
        ("arch", None, "names no known arch"),
        ("mean", "x", "`mean` is not 3 numbers"),
        ("image_size", "big", "`image_size` is 'big'"),
    ],
)
def test_a_model_json_that_does_not_fit_is_one_line(
    tmp_path: Path, key: str, value: object, message: str
) -> None:
    """`wsi --classifier RUN` / `classify --model RUN` whose model.json names other classes (or lacks
    arch, mean) raised a size-mismatch RuntimeError or a KeyError; image_size failed per slide."""
    from glomssl.errors import GlomsslError
    from glomssl.finetune.classifier.model import (
        Classifier,
        export_classifier,
        load_classifier_file,
    )
    from glomssl.models.backbones import ResNetTrunk

    run = tmp_path / "cls"
    meta = {"classes": ["normal", "sclerotic"], "arch": "resnet18", "image_size": 64}
    export_classifier(Classifier(ResNetTrunk("resnet18"), 2), run / "model.safetensors", meta)
    load_classifier_file(run)  # as exported: loads
    side = json.loads((run / "model.json").read_text())
    if value is None:
        side.pop(key)
    else:
        side[key] = value
    (run / "model.json").write_text(json.dumps(side))
    with pytest.raises(GlomsslError, match=message) as err:
        load_classifier_file(run)
    assert "\n" not in str(err.value) and str(run) in str(err.value)
