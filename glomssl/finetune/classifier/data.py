"""Labelled crops for the classifier: a CSV or a manifest -> paths, class ids, groups.

A labels file is either a CSV (``image`` or ``path`` column, ``label``, and optionally ``patient`` /
``slide``; paths relative to the CSV's folder, like ../shared/data/glomeruli/labels.csv) or a JSONL
manifest (``path``, ``label``, ``patient``/``slide``; paths relative to the manifest's folder). Crops of
one patient (or slide) share stain, scanner and disease, so every split groups by one of those columns.

Every problem with the file is a one-line :class:`GlomsslError` naming the file, the row and the fix;
images that cannot be decoded are skipped and listed (the same policy as every other command).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.errors import GlomsslError

Row = dict[str, Any]


@dataclass
class LabelledSet:
    """Readable labelled images: ``labels[i]`` indexes ``classes``; ``groups[i]`` is the split unit."""

    paths: list[Path]
    labels: np.ndarray  # (N,) int64 class ids
    groups: np.ndarray  # (N,) str
    classes: list[str]
    rows: list[Row]
    group_key: str | None  # the column that grouped the rows (None: each image on its own)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}


def _read_csv(path: Path) -> list[Row]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = [dict(r) for r in reader]
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise GlomsslError(f"cannot read labels CSV {path} ({exc}); is it a UTF-8 CSV?") from exc
    if "image" not in header and "path" not in header:
        raise GlomsslError(
            f"{path} has no 'image' or 'path' column (columns: {', '.join(header) or 'none'}); "
            "add one with each image's path relative to the CSV"
        )
    return rows


def _read_jsonl(path: Path) -> list[Row]:
    from glomssl.data.tables import read_table

    rows = read_table(path, "manifest")
    for lineno, row in enumerate(rows, start=1):
        if not isinstance(row.get("path"), str):
            raise GlomsslError(f"{path}: row {lineno} needs a 'path' string; fix that row")
    return rows


def read_label_rows(path: str | os.PathLike[str], what: str = "--data") -> list[tuple[Path, Row]]:
    """(absolute image path, row) for every row of a labels CSV or a JSONL manifest, in file order.

    The row's ``path`` is set to the path as written in the file (relative to the file's folder).
    """
    p = Path(path)
    if p.is_dir():
        raise GlomsslError(
            f"{p} is a folder; {what} needs a labels CSV or a manifest (a folder has no labels)"
        )
    if not p.is_file():
        raise GlomsslError(f"labels file {p} does not exist; pass a CSV or a JSONL manifest")
    rows = _read_csv(p) if p.suffix.lower() == ".csv" else _read_jsonl(p)
    if not rows:
        raise GlomsslError(f"{p} has no rows; add one row per labelled image")
    root = p.resolve().parent
    out: list[tuple[Path, Row]] = []
    for i, row in enumerate(rows, start=2 if p.suffix.lower() == ".csv" else 1):
        rel = row.get("path") or row.get("image")
        if not rel:
            raise GlomsslError(f"{p} row {i} has no image path; fill in its 'image'/'path' value")
        rel = str(rel)
        full = Path(rel) if os.path.isabs(rel) else root / rel
        out.append((full, {**row, "path": rel}))
    return out


def class_list(labels: Sequence[str], classes: Sequence[str] | None, where: str) -> list[str]:
    """The class names in order: ``classes`` as given (checked against the data) or sorted labels."""
    present = sorted(set(labels))
    if classes:
        names = [str(c) for c in classes]
        if len(set(names)) != len(names):
            raise GlomsslError(f"--classes {','.join(names)} names a class twice; list each once")
        unknown = [c for c in present if c not in names]
        if unknown:
            raise GlomsslError(
                f"{where} has label {unknown[0]!r}, which is not in --classes {','.join(names)}; "
                "add it to --classes or fix the label"
            )
        missing = [c for c in names if c not in present]
        if missing:
            raise GlomsslError(
                f"--classes names {missing[0]!r} but {where} has no image of that class; "
                "drop it from --classes or add labelled images"
            )
    else:
        names = present
    if len(names) < 2:
        raise GlomsslError(
            f"{where} has only one class ({names[0] if names else 'none'}); a classifier needs at "
            "least two"
        )
    return names


def load_labelled(
    path: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
    group: str | None = None,
    check_images: bool = True,
) -> LabelledSet:
    """Read a labels CSV/manifest, check labels and groups, skip (and list) unreadable images.

    ``group`` names the grouping column (``patient``, ``slide``, or any column); None takes
    ``patient`` when every row has one, else ``slide``, else each image is its own group.
    """
    from glomssl.data.images import image_ok

    where = str(path)
    items = read_label_rows(path)
    if not any("label" in row for _, row in items):
        raise GlomsslError(f"{where} has no 'label' column; add one with each image's class")
    empty = next((row for _, row in items if row.get("label") in (None, "")), None)
    if empty is not None:
        raise GlomsslError(
            f"{where}: the row for {empty['path']!r} has no label; give every image its class"
        )
    key = group
    if key is None:
        for cand in ("patient", "slide"):
            if all(row.get(cand) not in (None, "") for _, row in items):
                key = cand
                break
    elif any(key not in row for _, row in items):
        raise GlomsslError(
            f"{where} has no {key!r} column to group by; add it or choose --group "
            "patient|slide (a column every row has)"
        )
    else:
        empty = next((row for _, row in items if row.get(key) in (None, "")), None)
        if empty is not None:
            raise GlomsslError(
                f"{where}: row for {empty['path']} has an empty {key!r}; fill it in so no "
                f"{key} is split between training and test"
            )
    names = class_list([str(r["label"]) for _, r in items], classes, where)
    index = {c: i for i, c in enumerate(names)}
    paths: list[Path] = []
    ys: list[int] = []
    gs: list[str] = []
    rows: list[Row] = []
    skipped: list[dict[str, str]] = []
    for full, row in items:
        reason = None
        if check_images:
            reason = "missing file" if not full.is_file() else image_ok(full)
        if reason is not None:
            skipped.append({"path": str(full), "reason": reason})
            continue
        paths.append(full)
        ys.append(index[str(row["label"])])
        gs.append(str(row[key]) if key else str(full))
        rows.append(row)
    if not paths:
        first = skipped[0] if skipped else {"path": where, "reason": "no rows"}
        raise GlomsslError(
            f"none of the {len(items)} images in {where} could be read (e.g. {first['path']}: "
            f"{first['reason']}); check the paths are relative to the labels file"
        )
    labels = np.asarray(ys, dtype=np.int64)
    for i, c in enumerate(names):
        if not (labels == i).any():
            raise GlomsslError(
                f"every image of class {c!r} in {where} was unreadable (see skipped.jsonl); "
                "fix those files or drop the class"
            )
    return LabelledSet(paths, labels, np.asarray(gs), names, rows, key, skipped)
