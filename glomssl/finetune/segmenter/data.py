"""Partially labelled segmentation data: tables of (image, mask, task), filters, checks, splits.

A training table is a CSV or JSONL manifest (paths relative to it) with one row per annotated image:

- ``path`` (or ``image``): the image; ``mask``: its mask PNG, the size of the image;
- ``task``: the class the mask annotates (partially labelled data: one class per image), or ``all``
  for a class-id label map (0 = background, i = the i-th class, 255 = not annotated); with a single
  class in the run the column may be left out;
- optional ``species``, ``stain``, ``scale``, ``slide``, ``patient``, ``split`` (train/val/test).

A folder holding ``images/`` and ``masks/`` (masks matched by file stem) is read as a one-class table.

Masks of one task (Glo-In-One v2's partial labels, ../shared/papers/000) come in two kinds, told apart
per file: values within {0, 1, 255} that include 1 are class ids (1 = the class, 0 = not it, 255 = not
annotated, ignored by losses and metrics); anything else (0/255 black-and-white, anti-aliased edges,
colour) is a painted mask as painting tools and QuPath export it, thresholded at ``threshold``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.data.masks import IGNORE, binarize
from glomssl.errors import GlomsslError

#: Glo-In-One v2's 14 classes, in the paper's order (regions, cells, lesions).
GIO2_CLASSES = (
    "Cap", "Tuft", "Mes", "Pod", "Mec", "AH", "CD", "GS", "HS", "ME", "ML", "MA", "NS", "SS",
)  # fmt: skip
ALL_TASKS = "all"
META_KEYS = ("species", "stain", "scale", "slide", "patient", "split", "source", "label")


@dataclass
class SegItem:
    """One annotated image: files, the task its mask annotates (None = a label map of all classes)."""

    image: Path
    mask: Path
    task: str | None
    meta: dict[str, Any] = field(default_factory=dict)
    synthetic: bool = False
    size: tuple[int, int] | None = None  # (width, height), filled by check_items

    def as_row(self) -> dict[str, Any]:
        return {"image": str(self.image), "mask": str(self.mask), "task": self.task, **self.meta}


def _read_table(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV or JSONL file (one-line errors for unreadable or malformed files)."""
    from glomssl.data.tables import read_table

    return read_table(path, "segmentation table")


def _folder_rows(folder: Path) -> list[dict[str, Any]]:
    from glomssl.manifest import list_images

    imgs, masks = folder / "images", folder / "masks"
    if not (imgs.is_dir() and masks.is_dir()):
        raise GlomsslError(
            f"{folder} is a folder without images/ and masks/ subfolders; pass a CSV/JSONL table "
            "of path,mask,task or a folder with images/ and masks/ (same file names)"
        )
    by_stem = {p.stem: p for p in list_images(masks)}
    rows = []
    for p in list_images(imgs):
        m = by_stem.get(p.stem)
        if m is None:
            raise GlomsslError(f"image {p} has no mask of the same name in {masks}; add it")
        rows.append({"path": str(p.relative_to(folder)), "mask": str(m.relative_to(folder))})
    if not rows:
        raise GlomsslError(f"{imgs} holds no images")
    return rows


def read_table(source: str | os.PathLike[str]) -> list[tuple[Path, Path, dict[str, Any]]]:
    """(image, mask, row) triples of a table or images/+masks/ folder, paths resolved.

    Rows without a mask are refused: a segmentation table lists annotated images only.
    """
    src = Path(source)
    if src.is_dir():
        rows, root = _folder_rows(src), src
    elif src.is_file():
        rows, root = _read_table(src), src.resolve().parent
    else:
        raise GlomsslError(
            f"{src} does not exist; pass a CSV/JSONL table or an images/+masks/ folder"
        )
    if not rows:
        raise GlomsslError(f"{src} has no rows")
    out = []
    for i, row in enumerate(rows, 1):
        img = row.get("path") or row.get("image")
        mask = row.get("mask")
        if not img or not mask:
            raise GlomsslError(
                f"{src} row {i} lacks {'path' if not img else 'mask'}; every row needs an image "
                "(path) and its mask"
            )
        out.append((root / str(img), root / str(mask), row))
    return out


def parse_filters(items: Sequence[str], what: str) -> dict[str, set[str]]:
    """``["species=rodent,human", "stain=PAS"]`` -> {species: {rodent, human}, stain: {PAS}}."""
    out: dict[str, set[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise GlomsslError(f"{what} {item!r} must look like key=value (e.g. species=rodent)")
        out.setdefault(key.strip(), set()).update(v.strip() for v in value.split(",") if v.strip())
    return out


def keep_row(item: SegItem, filters: dict[str, set[str]]) -> bool:
    row = {**item.meta, "task": item.task if item.task is not None else ALL_TASKS}
    return all(str(row.get(k, "")) in vals for k, vals in filters.items())


def load_items(
    sources: Sequence[str],
    classes: Sequence[str] | None,
    synthetic: bool = False,
    what: str = "--train",
    filters: dict[str, set[str]] | None = None,
) -> list[SegItem]:
    """Read tables into :class:`SegItem` s; ``classes`` None accepts any task (the caller resolves).

    Rows failing ``filters`` (column -> allowed values; ``task`` included) are dropped before the
    task checks, so ``--train-filter task=Tuft`` with ``--classes Tuft`` is a valid run.
    """
    items: list[SegItem] = []
    for src in sources:
        for img, mask, row in read_table(src):
            task = row.get("task")
            task = str(task).strip() if task not in (None, "") else None
            if task is None and classes is not None and len(classes) == 1:
                task = classes[0]
            if filters and not _passes({**row, "task": task or ""}, filters):
                continue
            if task is None:
                if classes is not None and len(classes) > 1:
                    raise GlomsslError(
                        f"{what} {src}: row {img.name} has no task; add a task column naming the "
                        f"class its mask annotates (one of {','.join(classes)}) or task=all"
                    )
            if task == ALL_TASKS:
                task_v: str | None = None
            else:
                task_v = task
            if task_v is not None and classes is not None and task_v not in classes:
                raise GlomsslError(
                    f"{what} {src}: task {task_v!r} (row {img.name}) is not in --classes "
                    f"{','.join(classes)}; add it to --classes or drop those rows with "
                    f"--train-filter task=..."
                )
            meta = {k: row[k] for k in META_KEYS if row.get(k) not in (None, "")}
            items.append(SegItem(img, mask, task_v, meta, synthetic))
    return items


def _passes(row: dict[str, Any], filters: dict[str, set[str]]) -> bool:
    return all(
        str(row.get(k, "") if row.get(k) is not None else "") in v for k, v in filters.items()
    )


def tasks_in(sources: Sequence[str], filters: dict[str, set[str]] | None = None) -> list[str]:
    """The classes a set of tables annotates, in GIO2 order for known names, then sorted."""
    found: set[str] = set()
    for src in sources:
        for _img, _mask, row in read_table(src):
            if filters and not _passes(row, filters):
                continue
            t = row.get("task")
            if t not in (None, "", ALL_TASKS):
                found.add(str(t).strip())
    known = [c for c in GIO2_CLASSES if c in found]
    return known + sorted(found - set(known))


def mask_kind(arr: np.ndarray) -> str:
    """``ids`` for 0/1(/255) class-id masks, ``painted`` for anything a painting tool exports."""
    if arr.ndim == 2:
        vals = set(np.unique(arr).tolist())
        if 1 in vals and vals <= {0, 1, IGNORE}:
            return "ids"
        if vals <= {0}:
            return "ids"
    return "painted"


def task_mask(path: Path, threshold: int = 127) -> np.ndarray:
    """(H, W) uint8 in {0, 1, 255} for a one-task mask (see the module docstring)."""
    from glomssl.data.masks import _load_array

    arr = _load_array(path)
    if mask_kind(arr) == "ids":
        return arr.astype(np.uint8)
    return binarize(arr, threshold)


def label_map(path: Path, num_classes: int) -> np.ndarray:
    """(H, W) uint8 class ids 0..K (0 = background) or 255, checked against the class count."""
    from glomssl.data.masks import read_mask

    return read_mask(path, num_classes=num_classes + 1)


def read_target(item: SegItem, classes: Sequence[str], threshold: int = 127) -> np.ndarray:
    """The item's mask as (H, W) uint8: task masks in {0, 1, 255}, label maps in {0..K, 255}."""
    if item.task is None:
        return label_map(item.mask, len(classes))
    return task_mask(item.mask, threshold)


def check_items(
    items: list[SegItem], classes: Sequence[str], threshold: int, progress: bool = False
) -> tuple[list[SegItem], list[dict[str, str]]]:
    """Check every pair before training: unreadable images are skipped (and listed); a missing or
    wrongly sized mask, or class ids outside the list, is a one-line error naming the file."""
    from glomssl.data.images import _open_checked, image_ok

    ok: list[SegItem] = []
    skipped: list[dict[str, str]] = []
    for i, it in enumerate(items):
        reason = image_ok(it.image) if it.image.is_file() else "file does not exist"
        if reason is not None:
            skipped.append({"path": str(it.image), "reason": reason})
            continue
        if not it.mask.is_file():
            raise GlomsslError(
                f"mask {it.mask} of image {it.image} does not exist; check the table"
            )
        with _open_checked(it.image) as im:
            size = im.size
        m = read_target(it, classes, threshold)  # decodes and checks the ids
        if (m.shape[1], m.shape[0]) != size:
            raise GlomsslError(
                f"mask {it.mask} is {m.shape[1]}x{m.shape[0]} but its image {it.image.name} is "
                f"{size[0]}x{size[1]}; masks must have their image's size"
            )
        it.size = (int(size[0]), int(size[1]))
        ok.append(it)
        if progress and (i + 1) % 500 == 0:
            print(f"checked {i + 1}/{len(items)} image/mask pairs", flush=True)
    return ok, skipped


def task_index(item: SegItem, classes: Sequence[str]) -> int:
    """Index of the item's class in ``classes``; -1 for a label map of all classes."""
    return -1 if item.task is None else list(classes).index(item.task)


def split_items(
    items: list[SegItem], val_fraction: float, seed: int
) -> tuple[list[SegItem], list[SegItem], str]:
    """Train/val by the rows' ``split`` column when present, else a grouped holdout.

    Groups are ``patient``, else ``slide``, else the image (never on both sides); the holdout is
    stratified by task and fixed by ``seed``. Rows marked ``split: test`` are never used here.
    Returns (train, val, how).
    """
    from glomssl.data.splits import group_of, grouped_holdout

    marked = [it for it in items if it.meta.get("split") in ("train", "val", "test")]
    if marked:
        tr = [it for it in items if it.meta.get("split", "train") == "train"]
        va = [it for it in items if it.meta.get("split") == "val"]
        if tr and va:
            return tr, va, "split column"
        items = [it for it in items if it.meta.get("split") != "test"]
    if len(items) < 2:
        raise GlomsslError(
            f"only {len(items)} annotated image(s) to train on; a validation image must be held "
            "out: add images or pass --val"
        )
    groups = [group_of(it.meta, fallback=str(it.image)) for it in items]
    y = [it.task or ALL_TASKS for it in items]
    try:
        tr_a, va_a = grouped_holdout(y, groups, val_fraction, seed)
        tr_idx, va_idx = tr_a.tolist(), va_a.tolist()
    except ValueError:  # a task with fewer images than folds: split groups without stratifying
        tr_idx, va_idx = _group_shuffle(groups, val_fraction, seed)
    return [items[i] for i in tr_idx], [items[i] for i in va_idx], "grouped holdout"


def _group_shuffle(groups: list[str], share: float, seed: int) -> tuple[list[int], list[int]]:
    """Whole groups, in a seeded random order, go to validation until ~``share`` of the images."""
    rng = np.random.default_rng(seed)
    names = sorted(set(groups))
    if len(names) < 2:
        names, groups = [str(i) for i in range(len(groups))], [str(i) for i in range(len(groups))]
    order = [names[i] for i in rng.permutation(len(names))]
    val: set[str] = set()
    for g in order[:-1]:  # at least one group stays for training
        if sum(x in val for x in groups) >= share * len(groups):
            break
        val.add(g)
    va = [i for i, g in enumerate(groups) if g in val]
    return [i for i, g in enumerate(groups) if g not in val], va


def summarise(items: Sequence[SegItem], classes: Sequence[str]) -> dict[str, Any]:
    """Counts per class and in all (for model.json and the run log)."""
    per = {c: sum(it.task == c for it in items) for c in classes}
    return {
        "images": len(items),
        "per_class": per,
        "label_maps": sum(it.task is None for it in items),
        "synthetic": sum(it.synthetic for it in items),
    }
