"""The manifest contract: validation with line numbers, atomic writes, folder/manifest resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from glomssl.errors import GlomsslError
from glomssl.manifest import (
    image_row,
    iter_manifest,
    load_image_list,
    read_manifest,
    resolve,
    validate_row,
    write_manifest,
)

SHA = "a" * 64


def _row(**kw: object) -> dict:
    row = {"path": "x.png", "sha256": SHA, "width": 4, "height": 3}
    row.update(kw)
    return row


def test_round_trip_keeps_optional_fields(tmp_path: Path) -> None:
    rows = [
        _row(label="GS", slide="s1", source={"name": "openi", "uid": "PMC1"}),
        _row(path="b/y.png"),
    ]
    m = tmp_path / "m.jsonl"
    assert write_manifest(m, rows) == 2
    assert read_manifest(m) == rows
    assert list(iter_manifest(m)) == rows


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"sha256": "xyz"}, "sha256"),
        ({"width": 0}, "width"),
        ({"height": "3"}, "height"),
        ({"split": "holdout"}, "split"),
        ({"bbox": [1, 2, 3]}, "bbox"),
    ],
)
def test_bad_row_reports_line_and_field(tmp_path: Path, bad: dict, field: str) -> None:
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps(_row()) + "\n\n" + json.dumps(_row(**bad)) + "\n")
    with pytest.raises(GlomsslError) as exc:
        read_manifest(m)
    msg = str(exc.value)
    assert f"{m}:3" in msg and field in msg


def test_missing_required_field_and_bad_json(tmp_path: Path) -> None:
    m = tmp_path / "m.jsonl"
    row = _row()
    del row["sha256"]
    m.write_text(json.dumps(row) + "\n")
    with pytest.raises(GlomsslError, match=r"m.jsonl:1.*sha256"):
        read_manifest(m)
    m.write_text(json.dumps(_row()) + "\n{not json\n")
    with pytest.raises(GlomsslError, match=r"m.jsonl:2: not valid JSON"):
        read_manifest(m)


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.png", "a/../../b.png"])
def test_paths_must_stay_inside_manifest_folder(path: str) -> None:
    with pytest.raises(GlomsslError, match="relative"):
        validate_row(_row(path=path))


def test_missing_manifest_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(GlomsslError, match="does not exist"):
        read_manifest(tmp_path / "nope.jsonl")


def test_write_is_atomic_on_failure(tmp_path: Path) -> None:
    m = tmp_path / "m.jsonl"
    write_manifest(m, [_row()])
    before = m.read_bytes()
    with pytest.raises(GlomsslError):
        write_manifest(m, [_row(path="ok.png"), _row(width=-1)])
    assert m.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]


def test_image_row_and_resolution(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    f = tmp_path / "imgs" / "a.png"
    Image.new("RGB", (7, 5), (200, 10, 10)).save(f)
    row = image_row(f, tmp_path, label="GS")
    assert row["path"] == "imgs/a.png" and (row["width"], row["height"]) == (7, 5)
    assert len(row["sha256"]) == 64 and row["label"] == "GS"
    m = tmp_path / "m.jsonl"
    write_manifest(m, [row])
    assert resolve(m, row) == f.resolve()
    pairs = load_image_list(m)
    assert pairs[0][0] == f.resolve()
    pairs = load_image_list(tmp_path / "imgs")
    assert pairs == [(f.absolute(), {"path": "a.png"})]


def test_image_row_rejects_corrupt_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.png"
    f.write_bytes(b"\x89PNG not really")
    with pytest.raises(GlomsslError, match="not a readable image"):
        image_row(f, tmp_path)


def test_load_image_list_errors(tmp_path: Path) -> None:
    with pytest.raises(GlomsslError, match="neither a folder"):
        load_image_list(tmp_path / "missing")
    with pytest.raises(GlomsslError, match="holds no images"):
        load_image_list(tmp_path)


def test_schema_file_is_shared_with_data_manifests() -> None:
    root = Path(__file__).resolve().parents[1]
    a = root / "data_manifests" / "manifest_row.schema.json"
    b = root / "glomssl" / "schemas" / "manifest_row.schema.json"
    assert json.loads(a.read_text()) == json.loads(b.read_text())


@pytest.mark.parametrize(
    "row",
    [
        _row(label=True),
        _row(width=True),
        _row(sha256="A" * 64),
        _row(bbox=[0, 0, 1, "2"]),
        _row(source=3),
        _row(path=""),
    ],
)
def test_fast_path_never_accepts_what_the_schema_rejects(row: dict) -> None:
    import jsonschema

    schema = json.loads(
        (
            Path(__file__).resolve().parents[1] / "data_manifests" / "manifest_row.schema.json"
        ).read_text()
    )
    schema_ok = not list(jsonschema.Draft202012Validator(schema).iter_errors(row))
    if schema_ok:
        validate_row(row)
    else:
        with pytest.raises(GlomsslError):
            validate_row(row)


def test_folder_listing_keeps_symlink_names(tmp_path: Path) -> None:
    real = tmp_path / "store"
    real.mkdir()
    Image.new("RGB", (2, 2)).save(real / "x.png")
    folder = tmp_path / "links"
    folder.mkdir()
    (folder / "y.png").symlink_to(real / "x.png")
    assert load_image_list(folder) == [((folder / "y.png").absolute(), {"path": "y.png"})]
