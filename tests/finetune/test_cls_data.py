"""Labels, groups and splits of the classifier: bad input is one line, groups never leak."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cls_testdata import make_crops, read_rows, write_rows

from glomssl.data.splits import grouped_kfold
from glomssl.errors import GlomsslError
from glomssl.finetune.classifier.data import load_labelled
from glomssl.finetune.classifier.protocol import FinetuneClsConfig, _split


@pytest.fixture()
def crops(tmp_path: Path) -> Path:
    return make_crops(tmp_path / "crops")


def test_csv_and_manifest_give_the_same_set(crops: Path) -> None:
    rows = read_rows(crops)
    man = crops.parent / "labels.jsonl"
    man.write_text(
        "".join(
            json.dumps({"path": r["image"], "label": r["label"], "slide": r["slide"]}) + "\n"
            for r in rows
        )
    )
    a = load_labelled(crops, group="slide")
    b = load_labelled(man)  # no patient column: the slide groups
    assert a.classes == b.classes == ["GS", "nonGS"]
    assert (a.labels == b.labels).all() and (a.groups == b.groups).all()
    assert b.group_key == "slide" and load_labelled(crops).group_key == "patient"
    assert a.counts() == {"GS": 18, "nonGS": 30}
    ordered = load_labelled(crops, classes=["nonGS", "GS"])
    assert (ordered.labels == 1 - a.labels).all()


def test_unreadable_images_are_skipped_and_listed(crops: Path) -> None:
    (crops.parent / "images" / "s0_0.png").write_bytes(b"not a png")
    (crops.parent / "images" / "s1_4.png").unlink()
    data = load_labelled(crops)
    assert len(data) == 46
    assert sorted(Path(s["path"]).name for s in data.skipped) == ["s0_0.png", "s1_4.png"]
    assert {s["reason"] for s in data.skipped} >= {"missing file"}


@pytest.mark.parametrize(
    ("edit", "kw", "needle"),
    [
        (
            lambda r: [{k: v for k, v in x.items() if k != "label"} for x in r],
            {},
            "no 'label' column",
        ),
        (
            lambda r: [{**x, "label": ""} if i == 3 else x for i, x in enumerate(r)],
            {},
            "has no label",
        ),
        (lambda r: r, {"group": "patient_id"}, "no 'patient_id' column"),
        (
            lambda r: [{**x, "slide": ""} if i == 5 else x for i, x in enumerate(r)],
            {"group": "slide"},
            "empty 'slide'",
        ),
        (lambda r: r, {"classes": ["GS", "normal"]}, "label 'nonGS', which is not in --classes"),
        (lambda r: r, {"classes": ["GS", "nonGS", "obsolescent"]}, "'obsolescent' but"),
        (lambda r: [{**x, "label": "GS"} for x in r], {}, "only one class"),
    ],
    ids=[
        "no-label-column",
        "empty-label",
        "no-group-column",
        "empty-group",
        "unknown-class",
        "absent-class",
        "one-class",
    ],
)
def test_bad_labels_are_one_line_errors(crops: Path, edit, kw, needle) -> None:
    rows = edit(read_rows(crops))
    fields = list(dict.fromkeys(k for r in rows for k in r))
    bad = write_rows(crops.parent / "bad.csv", rows, fields)
    with pytest.raises(GlomsslError) as exc:
        load_labelled(bad, **kw)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_a_csv_without_an_image_column_and_a_folder_are_refused(crops: Path) -> None:
    bad = write_rows(crops.parent / "bad.csv", [{"file": "a.png", "label": "GS"}])
    with pytest.raises(GlomsslError, match="no 'image' or 'path' column"):
        load_labelled(bad)
    with pytest.raises(GlomsslError, match="is a folder"):
        load_labelled(crops.parent / "images")


def test_grouped_folds_and_inner_splits_never_share_a_group(crops: Path) -> None:
    data = load_labelled(crops, group="slide")
    y, g = data.labels, data.groups
    cfg = FinetuneClsConfig(data="x", out="y", backbone="b", group="slide", label_fraction=0.5)
    splits = grouped_kfold(y, g, 3, seed=0)
    assert sorted(np.concatenate([te for _, te in splits]).tolist()) == list(range(len(y)))
    for k, (trval, te) in enumerate(splits):
        sub, va = _split(cfg, y, g, trval, k, data.classes)
        tr_groups, va_groups, te_groups = set(g[sub]), set(g[va]), set(g[te])
        assert not tr_groups & te_groups and not va_groups & te_groups and not tr_groups & va_groups
        assert set(sub) <= set(trval) and set(va) <= set(trval)
    # the same seed gives the same folds (every row of a study shares them)
    again = grouped_kfold(y, g, 3, seed=0)
    assert all((a[1] == b[1]).all() for a, b in zip(splits, again))


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.1, 0.25, 1.0])
def test_label_fractions_keep_every_class(crops: Path, fraction: float) -> None:
    data = load_labelled(crops, group="slide")
    cfg = FinetuneClsConfig(data="x", out="y", backbone="b", label_fraction=fraction, seed=3)
    trval = np.arange(len(data))
    sub, va = _split(cfg, data.labels, data.groups, trval, 0, data.classes)
    assert set(data.labels[sub]) == {0, 1}
    if fraction == 1.0:
        assert len(sub) == len(trval) - len(va)
    else:
        assert len(sub) < len(trval) - len(va)


def test_a_split_that_leaves_a_class_out_of_training_is_an_error(crops: Path) -> None:
    rows = read_rows(crops)
    # every GS crop on one slide: a fold whose training part lacks GS must say so
    rows = [r for r in rows if r["label"] == "nonGS" or r["slide"] == "slide0"]
    data = load_labelled(write_rows(crops.parent / "one.csv", rows), group="slide")
    cfg = FinetuneClsConfig(data="x", out="y", backbone="b", group="slide")
    trval = np.flatnonzero(data.groups != "slide0")
    with pytest.raises(GlomsslError, match="no image of class 'GS'.*lower --folds"):
        _split(cfg, data.labels, data.groups, trval, 0, data.classes)


def test_fewer_groups_than_folds_is_an_error(crops: Path) -> None:
    data = load_labelled(crops, group="slide")
    with pytest.raises(GlomsslError, match="--folds 8 needs at least 8 groups, but the data has 6"):
        grouped_kfold(data.labels, data.groups, 8)
