"""The three protocols end to end on tiny real PNGs: outputs, export, resume, frozen backbone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cls_testdata import make_backbone, make_crops

from glomssl.errors import GlomsslError
from glomssl.finetune.classifier.infer import classify_images, load_classifier
from glomssl.finetune.classifier.protocol import FinetuneClsConfig, run_finetune_cls
from glomssl.runs import load_weights, read_metrics


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cls")
    return {"csv": make_crops(d / "crops"), "backbone": make_backbone(d / "ssl"), "dir": d}


def _cfg(setup: dict[str, Path], out: Path, **kw) -> FinetuneClsConfig:
    base = dict(
        data=str(setup["csv"]),
        out=str(out),
        backbone=str(setup["backbone"]),
        group="slide",
        folds=3,
        epochs=30,
        workers=1,
        quiet=True,
    )
    base.update(kw)
    return FinetuneClsConfig(**base)


def test_linear_protocol_writes_everything_and_learns(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    res = run_finetune_cls(_cfg(setup, out))
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "results.json",
        "confusion.png",
        "predictions.jsonl",
        "model.safetensors",
        "model.json",
        "features.npz",
    ):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "folds").iterdir()) == [
        "final.json",
        "fold-0.json",
        "fold-1.json",
        "fold-2.json",
    ]
    saved = json.loads((out / "results.json").read_text())
    assert saved["folds"] == 3 and len(saved["per_fold"]) == 3
    # the synthetic classes differ in colour and texture: far above chance (0.5)
    assert saved["mean"]["balanced_accuracy"] > 0.85, saved["mean"]
    assert saved["mean"]["balanced_accuracy_std"] is not None
    assert np.asarray(saved["confusion"]).sum() == 48  # every image tested exactly once
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 48 and {p["fold"] for p in preds} == {0, 1, 2}
    # one metrics line per epoch and fold (and the final model)
    rows = read_metrics(out / "metrics.jsonl")
    assert {r["fold"] for r in rows} == {0, 1, 2, "final"} and len(rows) == 4 * 30
    assert res["classes"] == ["GS", "nonGS"] and res["chance_balanced_accuracy"] == 0.5


def test_linear_mode_leaves_the_backbone_unchanged(setup: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_finetune_cls(_cfg(setup, out, folds=1))
    backbone, _ = load_weights(setup["backbone"] / "backbone.safetensors")
    model, meta = load_classifier(out)
    assert meta["mode"] == "linear" and meta["image_size"] == 32
    trunk = model.trunk.trunk_state_dict()
    assert set(trunk) == set(backbone)
    for k, v in backbone.items():
        assert torch.equal(trunk[k], v), k  # BN statistics included: the trunk ran in eval mode
    assert model.head.weight.abs().sum() > 0


def test_export_then_classify_gives_the_training_probabilities(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    """The run's own validation probabilities (cached features, numpy head) == the exported file
    run through classify_images on the image files."""
    from PIL import Image

    out = tmp_path / "run"
    run_finetune_cls(_cfg(setup, out, folds=1))
    final = json.loads((out / "folds" / "final.json").read_text())
    rows = [ln.split(",") for ln in setup["csv"].read_text().splitlines()[1:]]
    paths = [setup["csv"].parent / rows[i][0] for i in final["val_index"]]
    model, meta = load_classifier(out / "model.safetensors")
    prob = classify_images(model, meta, paths, batch_size=5)
    assert prob.shape == (len(paths), 2)
    np.testing.assert_allclose(prob, np.asarray(final["val_prob"]), atol=1e-4)
    pil = [Image.open(p).convert("RGB") for p in paths[:4]]
    np.testing.assert_allclose(classify_images(model, meta, pil), prob[:4], atol=1e-6)


def test_resume_keeps_finished_folds(setup: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = run_finetune_cls(_cfg(setup, out, export=False))
    f0 = (out / "folds" / "fold-0.json").stat().st_mtime_ns
    (out / "folds" / "fold-2.json").unlink()  # as if killed during fold 3
    with open(out / "metrics.jsonl", "a") as fh:  # ... which had logged a few epochs
        fh.write(json.dumps({"fold": 2, "epoch": 1, "val_bal": 0.1}) + "\n")
    again = run_finetune_cls(_cfg(setup, out, export=False, resume=True))
    assert (out / "folds" / "fold-0.json").stat().st_mtime_ns == f0  # not redone
    assert (out / "folds" / "fold-2.json").is_file()
    assert again["mean"]["balanced_accuracy"] == pytest.approx(first["mean"]["balanced_accuracy"])
    rows = read_metrics(out / "metrics.jsonl")
    assert sum(r["fold"] == 2 for r in rows) == 30  # the cut fold's old lines were dropped
    with pytest.raises(GlomsslError, match="other options \\(label_fraction differ\\)"):
        run_finetune_cls(_cfg(setup, out, export=False, resume=True, label_fraction=0.5))
    # without --resume the run starts over
    run_finetune_cls(_cfg(setup, out, export=False))
    assert (out / "folds" / "fold-0.json").stat().st_mtime_ns != f0


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 cut short", b"\x9f\xff\x00", b"[1, 2]\n"])
def test_resume_with_a_damaged_run_folder(
    setup: dict[str, Path], tmp_path: Path, damage: bytes
) -> None:
    """A broken fold record is trained again; a broken config.yaml is a one-line error."""
    out = tmp_path / "run"
    run_finetune_cls(_cfg(setup, out, folds=2, epochs=2, export=False))
    (out / "folds" / "fold-1.json").write_bytes(damage)
    run_finetune_cls(_cfg(setup, out, folds=2, epochs=2, export=False, resume=True))
    assert json.loads((out / "folds" / "fold-1.json").read_text())["fold"] == 1  # redone
    (out / "config.yaml").write_bytes(damage)
    if damage:  # an empty config.yaml reads as no options at all: "other options"
        with pytest.raises(GlomsslError, match=r"config.yaml is not a readable run config"):
            run_finetune_cls(_cfg(setup, out, folds=2, epochs=2, export=False, resume=True))


def test_finetune_trains_the_trunk_and_scratch_needs_no_backbone(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "ft"
    res = run_finetune_cls(_cfg(setup, out, mode="finetune", folds=2, epochs=2, batch_size=16))
    assert len(res["per_fold"]) == 2 and res["final"]["best_epoch"] in (1, 2)
    backbone, _ = load_weights(setup["backbone"] / "backbone.safetensors")
    model, meta = load_classifier(out)
    trunk = model.trunk.trunk_state_dict()
    assert not torch.equal(trunk["conv1.weight"], backbone["conv1.weight"])
    assert meta["mode"] == "finetune" and meta["backbone"]["steps"] == 0
    assert not list(out.rglob("*.ckpt"))  # no pickled Lightning checkpoints left behind
    rows = read_metrics(out / "metrics.jsonl")
    val = [r for r in rows if r.get("event") == "validation"]
    assert len(val) == 3 * 2 and all("val_balanced_accuracy" in r for r in val)  # 2 folds + final
    sc = run_finetune_cls(
        _cfg(
            setup,
            tmp_path / "sc",
            mode="scratch",
            backbone=None,
            folds=1,
            epochs=1,
            arch="resnet18",
            image_size=32,
        )
    )
    assert sc["backbone"]["source"] is None and (tmp_path / "sc" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"mode": "scratch"}, "--mode scratch starts from random weights; drop --backbone"),
        ({"backbone": None}, "--mode linear needs --backbone"),
        ({"folds": 9}, "--folds 9 needs at least 9 groups, but the data has 6"),
    ],
)
def test_bad_options_are_one_line_errors(setup, tmp_path: Path, kw, needle) -> None:
    with pytest.raises(GlomsslError) as exc:
        run_finetune_cls(_cfg(setup, tmp_path / "r", **kw))
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_a_backbone_that_is_not_a_glomssl_encoder_is_refused(setup, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))  # a real safetensors file, but no sidecar
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    (tmp_path / "other.json").write_text(json.dumps({"arch": "resnet18"}))  # wrong tensors
    for path in (junk, bare, other, tmp_path):
        with pytest.raises(GlomsslError) as exc:
            run_finetune_cls(_cfg(setup, tmp_path / "r", backbone=str(path)))
        msg = str(exc.value)
        assert "is not a glomssl encoder" in msg and "\n" not in msg, msg


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_does_not_redo_finished_folds(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from _proc import check, run_proc

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    args = [sys.executable, "-m", "glomssl", "finetune", "cls", "--data", str(setup["csv"]),
            "--out", str(run), "--backbone", str(setup["backbone"]), "--group", "slide",
            "--folds", "3", "--epochs", "800", "--workers", "1"]  # fmt: skip
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fold0 = run / "folds" / "fold-0.json"
    t0 = time.time()
    while not fold0.is_file() and proc.poll() is None and time.time() - t0 < 300:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert fold0.is_file() and not (run / "results.json").exists(), "killed too late"
    stamp = fold0.stat().st_mtime_ns
    p = check(run_proc([*args, "--resume", "--no-export"], timeout=600))
    assert "fold 1/3: finished earlier, not redone" in p.stderr
    assert fold0.stat().st_mtime_ns == stamp
    res = json.loads((run / "results.json").read_text())
    assert [f["fold"] for f in res["per_fold"]] == [0, 1, 2]


def test_three_classes_end_to_end(setup: dict[str, Path], tmp_path: Path) -> None:
    """Any number of classes: a third label gives a 3 x 3 confusion and three probabilities."""
    from cls_testdata import read_rows, write_rows

    rows = read_rows(setup["csv"])
    for i, r in enumerate(rows):
        if r["label"] == "nonGS" and i % 2:
            r["label"] = "obsolescent"
    csv3 = write_rows(setup["csv"].parent / "labels3.csv", rows)
    out = tmp_path / "run3"
    run_finetune_cls(_cfg(setup, out, data=str(csv3), folds=2, epochs=5))
    saved = json.loads((out / "results.json").read_text())
    assert sorted(saved["classes"]) == ["GS", "nonGS", "obsolescent"]
    conf = np.asarray(saved["confusion"])
    assert conf.shape == (3, 3) and conf.sum() == len(rows)
    model, meta = load_classifier(out)
    images = [setup["csv"].parent / rows[0]["image"], setup["csv"].parent / rows[5]["image"]]
    probs = classify_images(model, meta, images, 2, "cpu")
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_cached_features_reuse_only_a_readable_file_for_the_same_key(tmp_path: Path) -> None:
    from glomssl.finetune.classifier.linear import cached_features

    calls: list[int] = []

    def compute() -> np.ndarray:
        calls.append(1)
        return np.full((3, 4), float(len(calls)), np.float32)

    path = tmp_path / "features.npz"
    feats, hit = cached_features(path, "a", compute)
    assert not hit and len(calls) == 1 and path.is_file()
    again, hit = cached_features(path, "a", compute)
    assert hit and len(calls) == 1 and np.array_equal(again, feats)
    _, hit = cached_features(path, "b", compute)  # another trunk or image list: recomputed
    assert not hit and len(calls) == 2
    path.write_bytes(b"PK\x03\x04 truncated")  # a broken file: recomputed, not a traceback
    fresh, hit = cached_features(path, "b", compute)
    assert not hit and len(calls) == 3 and float(fresh[0, 0]) == 3.0
