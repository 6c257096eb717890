"""The detector's training-set folder: YOLO images/labels written and read by glomssl only.

Layout of a dataset folder (written by ``glomssl detect data``)::

    DIR/dataset.json            what glomssl wrote: names, working mpp, tile size, counts, sources
    DIR/images/{train,val}/*.jpg
    DIR/labels/{train,val}/*.txt   one line per glomerulus: ``0 cx cy w h`` (fractions of the side)

``glomssl detect train --data DIR`` checks this folder (``dataset.json`` parsed as plain JSON, every
label line numeric and inside the image) and writes the ultralytics data file itself, into the run
folder, with nothing but paths and the class name: a user's own ``.yaml`` is never handed to ultralytics
(its data files may name download scripts that ultralytics would execute).

Inputs are read from a manifest of (image, mask[, slide]) pairs: a CSV with a header or a JSONL file;
``image`` may also be called ``path``; paths are relative to the manifest's folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.errors import GlomsslError

DATASET_FILE = "dataset.json"
FORMAT = "glomssl-detect-dataset/1"
CLASS_NAME = "glomerulus"


@dataclass
class Pair:
    """One annotated image: image path, mask path, group (slide or patient; for splits)."""

    image: Path
    mask: Path
    group: str


def read_pairs(manifest: str | os.PathLike[str], what: str = "--crops") -> list[Pair]:
    """(image, mask, group) rows of a CSV or JSONL manifest; one-line errors for bad files."""
    from glomssl.data.tables import read_table

    src = Path(manifest)
    if not src.is_file():
        raise GlomsslError(
            f"{what} {src} is not a file; pass a CSV or JSONL manifest of image,mask"
        )
    rows = read_table(src, what)
    out = []
    for i, row in enumerate(rows, 1):
        img = row.get("image") or row.get("path")
        mask = row.get("mask")
        if not img or not mask:
            raise GlomsslError(
                f"{what} {src} row {i} lacks an image (or path) and a mask column; "
                "the manifest needs image,mask[,slide]"
            )
        group = str(row.get("slide") or row.get("patient") or row.get("group") or f"row{i}")
        out.append(Pair((src.parent / str(img)), (src.parent / str(mask)), group))
    if not out:
        raise GlomsslError(f"{what} {src} has no rows")
    return out


def yolo_lines(boxes: np.ndarray, width: int, height: int) -> str:
    """YOLO label text (class 0) of (N, 4) pixel boxes in an image of ``width`` x ``height``."""
    lines = []
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
        w, h = (x1 - x0) / width, (y1 - y0) / height
        lines.append(f"0 {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def write_sample(root: Path, split: str, name: str, image: np.ndarray, boxes: np.ndarray) -> None:
    """Write one training tile (JPEG, quality 95) and its label file, each atomically."""
    import cv2

    from glomssl.fsutil import atomic_write_bytes, atomic_write_text

    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:  # pragma: no cover - cv2 fails only on empty arrays
        raise GlomsslError(f"could not encode training tile {name}")
    h, w = image.shape[:2]
    atomic_write_bytes(root / "images" / split / f"{name}.jpg", buf.tobytes(), fsync=False)
    atomic_write_text(root / "labels" / split / f"{name}.txt", yolo_lines(boxes, w, h), fsync=False)


def write_descriptor(root: Path, info: dict[str, Any]) -> Path:
    from glomssl.fsutil import atomic_write_text

    doc = {"format": FORMAT, "names": [CLASS_NAME], **info}
    path = root / DATASET_FILE
    atomic_write_text(path, json.dumps(doc, indent=2, default=str) + "\n")
    return path


def read_labels(path: Path) -> np.ndarray:
    """(N, 5) label rows of a YOLO label file; a one-line error for anything else."""
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GlomsslError(
            f"label file {path} is not a readable text file ({exc}); rebuild the data set with "
            "`glomssl detect data`".splitlines()[0]
        ) from exc
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            vals = [float(v) for v in parts]
        except ValueError:
            vals = []
        if len(vals) != 5 or vals[0] != 0 or not all(0 <= v <= 1 for v in vals[1:]):
            raise GlomsslError(
                f"label file {path} line {i} is not '0 cx cy w h' with values in [0, 1]; rebuild "
                "the data set with `glomssl detect data`"
            )
        rows.append(vals)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def check_dataset(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Validate a dataset folder; return its descriptor plus per-split image counts."""
    d = Path(root)
    desc = d / DATASET_FILE
    if not desc.is_file():
        raise GlomsslError(
            f"--data {d} is not a glomssl detector data set (no {DATASET_FILE}); build one with "
            "`glomssl detect data --crops MANIFEST --out DIR`"
        )
    try:
        info = json.loads(desc.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GlomsslError(f"{desc} is not valid JSON ({exc}); rebuild the data set") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise GlomsslError(f"{desc} was not written by `glomssl detect data`; rebuild the data set")
    if info.get("complete") is not True:
        raise GlomsslError(
            f"--data {d} is an unfinished training set; rerun the same `glomssl detect data` command"
        )
    mpp = info.get("mpp")
    if isinstance(mpp, bool) or not isinstance(mpp, int | float) or not 0 < mpp < float("inf"):
        raise GlomsslError(
            f"{desc} gives no working resolution (`mpp`: {mpp!r}); rebuild the data set with "
            "`glomssl detect data`"
        )
    counts = {}
    for split in ("train", "val"):
        imgs = sorted((d / "images" / split).glob("*.jpg"))
        for img in imgs:
            lab = d / "labels" / split / f"{img.stem}.txt"
            if lab.exists():  # a folder in its place is an error too
                read_labels(lab)
        counts[split] = len(imgs)
    if counts["train"] == 0 or counts["val"] == 0:
        raise GlomsslError(
            f"--data {d} needs training and validation tiles (found {counts['train']} train, "
            f"{counts['val']} val); rebuild it with a --val-fraction above 0"
        )
    info["counts"] = counts
    return info


def ultralytics_data_file(root: str | os.PathLike[str], run_dir: Path) -> Path:
    """The ultralytics data file for a checked dataset, written by glomssl into ``run_dir``."""
    import yaml

    from glomssl.fsutil import atomic_write_text

    d = Path(root).resolve()
    doc = {"path": str(d), "train": "images/train", "val": "images/val", "names": {0: CLASS_NAME}}
    out = run_dir / "data.yaml"
    atomic_write_text(out, yaml.safe_dump(doc, sort_keys=False))
    return out
