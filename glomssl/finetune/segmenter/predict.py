"""``glomssl segment`` on images: folders, manifests and tables, every class from one pass per tile.

For each readable input image (unreadable ones are skipped and listed in ``skipped.jsonl``) the output
folder receives ``masks/<class>/<name>.png`` (0/255, what QuPath and painting tools import) or, with
``label_map``, ``labels/<name>.png`` (pixel = 1 + class index, 0 = none; the most probable class wins),
``probabilities/<name>.npz`` (float16 (K, H, W) + class names, with ``probabilities``), and an overlay
``overlays/<name>.png``. A record per image (``records/<name>.json``, written last and atomically) makes
a rerun skip finished images; ``outputs.jsonl`` lists every image's outputs at the end.

When the input is a table whose rows carry a ``mask`` (and ``task``), every image is also scored
against it at full resolution (Dice, boundary F1, the all-foreground prior): ``scores.json``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from glomssl.config import opt
from glomssl.errors import GlomsslError


@dataclass
class SegmentConfig:
    """Options of ``glomssl segment``."""

    model: str = ""
    input: list[str] = field(default_factory=list)
    out: str = ""
    classes: list[str] = field(default_factory=list)  # empty: all of the model's classes
    tile: int | None = opt(None, ge=16, le=8192)  # default: the model's working size
    overlap: int | None = opt(None, ge=0)  # default: tile / 8
    scale: float | None = opt(None, gt=0, le=64)  # image resize before segmenting; None: model's
    level: int | None = opt(None, ge=0)  # slides: pyramid level
    mpp: float | None = opt(None, gt=0, le=64)  # slides: microns per pixel to read at
    slide_mpp: float | None = opt(
        None, gt=0, le=64
    )  # slides: the slide's own mpp, when not recorded
    as_slides: bool = False  # read PNG/JPEG inputs as one-level slides (polygons, level-0 output)
    threshold: float = opt(0.5, gt=0, lt=1)
    probabilities: bool = False
    label_map: bool = False
    stitch: Literal["blend", "centre"] = "blend"
    batch_size: int = opt(4, ge=1)
    device: str = "auto"
    min_area_um2: float = opt(0.0, ge=0)  # slides: drop smaller objects
    quiet: bool = False

    def validate(self) -> None:
        from glomssl.engine import resolve_device

        if not self.model:
            raise GlomsslError("--model is required: a `glomssl finetune seg` run folder")
        if not self.input:
            raise GlomsslError("--input is required: a folder, a table/manifest or slide files")
        if not self.out:
            raise GlomsslError("--out is required: the folder to write")
        if self.level is not None and self.mpp is not None:
            raise GlomsslError("give --level or --mpp, not both")
        if self.tile is not None and self.overlap is not None and self.overlap >= self.tile // 2:
            raise GlomsslError(
                f"--overlap {self.overlap} must be less than half of --tile {self.tile}"
            )
        resolve_device(self.device)


def unique_names(paths: list[Path]) -> list[str]:
    """File stems, made unique with a short hash of the full path where two stems collide."""
    stems = [p.stem for p in paths]
    dup = {s for s in stems if stems.count(s) > 1}
    return [
        f"{p.stem}-{hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:8]}" if p.stem in dup
        else p.stem
        for p in paths
    ]  # fmt: skip


def _inputs(cfg: SegmentConfig) -> tuple[list[tuple[Path, dict[str, Any]]], list[dict[str, str]]]:
    """(image, row) pairs from folders, glomssl manifests and CSV/JSONL tables; skipped files."""
    from glomssl.data.images import image_ok
    from glomssl.data.sources import resolve_sources
    from glomssl.finetune.segmenter.data import read_table

    pairs: list[tuple[Path, dict[str, Any]]] = []
    skipped: list[dict[str, str]] = []
    plain = []
    for src in cfg.input:
        p = Path(src)
        is_table = (p.suffix.lower() == ".csv" and _csv_has_masks(p)) or (
            p.suffix.lower() in (".jsonl", ".json") and _has_masks(p)
        )
        if p.is_file() and p.suffix.lower() == ".csv" and not is_table:
            from glomssl.finetune.classifier.data import read_label_rows

            for img, row in read_label_rows(p):  # a table of images only: nothing to score
                reason = image_ok(img) if img.is_file() else "file does not exist"
                if reason is None:
                    pairs.append((img, row))
                else:
                    skipped.append({"path": str(img), "reason": reason})
        elif p.is_file() and is_table:
            for img, mask, row in read_table(p):
                reason = image_ok(img) if img.is_file() else "file does not exist"
                if reason is None:
                    pairs.append((img, {**row, "_mask": mask}))
                else:
                    skipped.append({"path": str(img), "reason": reason})
        else:
            plain.append(src)
    if plain:
        s = resolve_sources(  # never its own masks/overlays, with --out inside an input folder
            plain, what="--input", allow_slides=False, exclude=[cfg.out], command="segment"
        )
        pairs += s.items
        skipped += s.skipped
        skipped += _slides_in_folders(plain)
    if not pairs:
        raise GlomsslError("--input holds no readable image; see the paths given")
    return pairs, skipped


def _slides_in_folders(sources: list[str]) -> list[dict[str, str]]:
    """Whole-slide files (.svs, .ndpi ...) inside input folders, which a folder of images does not
    read: listed as skipped, with the way to segment them, rather than left out unsaid."""
    from glomssl.data.images import IMAGE_EXTENSIONS
    from glomssl.wsi import SLIDE_EXTENSIONS

    kinds = {e for e in SLIDE_EXTENSIONS if e not in IMAGE_EXTENSIONS}
    out = []
    for src in sources:
        if Path(src).is_dir():
            for f in sorted(Path(src).rglob("*")):
                if f.suffix.lower() in kinds and f.is_file():
                    why = "a whole-slide image: give it to --input on its own to segment it"
                    out.append({"path": str(f), "reason": why})
    return out


def _csv_has_masks(path: Path) -> bool:
    """True when a CSV's header names a ``mask`` column (or cannot be read: the table reader
    then gives its own one-line error)."""
    import csv

    if not path.is_file():
        return True
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
    except (UnicodeDecodeError, csv.Error):
        return True
    return "mask" in [h.strip() for h in header]


def _has_masks(path: Path) -> bool:
    with open(path, encoding="utf-8") as fh:
        first = fh.readline()
    try:
        return "mask" in json.loads(first)
    except json.JSONDecodeError:
        return False


def write_outputs(
    out: Path,
    name: str,
    img: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    cfg: SegmentConfig,
) -> dict[str, Any]:
    """Masks (or a label map), probabilities and the overlay of one image; returns its record."""
    from glomssl.data.images import save_png
    from glomssl.finetune.segmenter.report import colour, overlay

    rec: dict[str, Any] = {"masks": {}, "foreground_px": {}}
    fg = probs >= cfg.threshold  # (K, H, W)
    if cfg.label_map:
        lab = np.where(fg.any(0), probs.argmax(0) + 1, 0).astype(np.uint8)
        save_png(out / "labels" / f"{name}.png", lab)
        rec["label_map"] = f"labels/{name}.png"
    else:
        for k, c in enumerate(classes):
            save_png(out / "masks" / c / f"{name}.png", (fg[k] * 255).astype(np.uint8))
            rec["masks"][c] = f"masks/{c}/{name}.png"
    for k, c in enumerate(classes):
        rec["foreground_px"][c] = int(fg[k].sum())
    if cfg.probabilities:
        from glomssl.fsutil import atomic_open

        with atomic_open(out / "probabilities" / f"{name}.npz", "wb", fsync=False) as fh:
            np.savez_compressed(
                fh, probabilities=probs.astype(np.float16), classes=np.array(classes)
            )
        rec["probabilities"] = f"probabilities/{name}.npz"
    ov = img
    for k in range(len(classes)):
        ov = overlay(ov, fg[k], colour(k))
    save_png(out / "overlays" / f"{name}.png", ov)
    rec["overlay"] = f"overlays/{name}.png"
    return rec


def run_segment(cfg: SegmentConfig) -> dict[str, Any]:
    """Segment every input (images here; slides in :mod:`glomssl.finetune.segmenter.slide`)."""
    from glomssl.data.sources import _is_slide
    from glomssl.fsutil import refuse_out_is_input

    cfg.validate()
    refuse_out_is_input(cfg.out, cfg.input, "segment")  # a rerun would segment its own masks
    if cfg.as_slides or any(_is_slide(s) for s in cfg.input):
        from glomssl.finetune.segmenter.slide import run_segment_slides

        return run_segment_slides(cfg)
    return run_segment_images(cfg)


def run_segment_images(cfg: SegmentConfig) -> dict[str, Any]:
    import time

    from glomssl.data.images import load_rgb
    from glomssl.data.sources import write_skipped
    from glomssl.engine import progress_line
    from glomssl.finetune.segmenter.infer import predict_image, prepare_model
    from glomssl.fsutil import atomic_write_text, ensure_writable_dir
    from glomssl.manifest import write_jsonl

    model, meta, idx, tile, overlap, device = prepare_model(
        cfg.model, cfg.device, cfg.classes, cfg.tile, cfg.overlap
    )
    classes = [meta["classes"][i] for i in idx]
    scale = cfg.scale if cfg.scale is not None else float(meta.get("input_scale", 1.0))
    pairs, skipped = _inputs(cfg)
    out = ensure_writable_dir(cfg.out)
    names = unique_names([p for p, _ in pairs])
    records, scores = [], []
    t0 = time.perf_counter()
    done = 0
    for (path, row), name in zip(pairs, names):
        rpath = out / "records" / f"{name}.json"
        rec = _read_record(rpath)  # finished before a crash or an earlier run
        if rec is None:  # not yet, or damaged (written without fsync): segmented anew
            try:
                img = np.asarray(load_rgb(path))
            except GlomsslError as exc:
                skipped.append({"path": str(path), "reason": str(exc)[:200]})
                continue
            probs = predict_image(
                model, img, idx, scale, tile, overlap, cfg.batch_size, device, cfg.stitch
            )
            rec = {"image": str(path), "width": img.shape[1], "height": img.shape[0]}
            rec.update(write_outputs(out, name, img, probs, classes, cfg))
            if "_mask" in row:
                rec["scores"] = _score_row(row, probs, classes, cfg.threshold, int(meta.get(
                    "mask_threshold", 127)))  # fmt: skip
            atomic_write_text(rpath, json.dumps(rec) + "\n", fsync=False)
        records.append(rec)
        scores += rec.get("scores", [])
        done += 1
        if not cfg.quiet:
            print(progress_line("segmented", done, len(pairs), t0), flush=True)
    write_jsonl(out / "outputs.jsonl", records)
    write_skipped(out, skipped)
    result: dict[str, Any] = {
        "out": str(out), "images": len(records), "classes": classes, "scale": scale,
        "tile": tile, "overlap": overlap, "skipped": len(skipped),
    }  # fmt: skip
    if scores:
        from glomssl.finetune.segmenter.metrics import aggregate

        summary = aggregate(scores, classes)
        atomic_write_text(out / "scores.json", json.dumps(summary, indent=2) + "\n")
        result["mean_dice"] = summary.get("mean_dice")
        result["scores"] = str(out / "scores.json")
    return result


def _read_record(path: Path) -> dict[str, Any] | None:
    """An image's ``records/NAME.json``, or None when it is missing or damaged."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
        return None
    return rec if isinstance(rec, dict) and "image" in rec else None


def _score_row(
    row: dict[str, Any], probs: np.ndarray, classes: list[str], thr: float, mask_thr: int
) -> list[dict[str, Any]]:
    """Score one prediction against the row's mask (its task, or every class of a label map)."""
    from glomssl.finetune.segmenter.data import ALL_TASKS, label_map, task_mask
    from glomssl.finetune.segmenter.metrics import score

    task = row.get("task") or (classes[0] if len(classes) == 1 else None)
    if task in (None, "", ALL_TASKS):
        lab = label_map(row["_mask"], len(classes))
        truths = [(c, np.where(lab == 255, 255, (lab == k + 1).astype(np.uint8)))
                  for k, c in enumerate(classes)]  # fmt: skip
    elif task in classes:
        truths = [(task, task_mask(row["_mask"], mask_thr))]
    else:
        return []
    out = []
    for c, truth in truths:
        if truth.shape != probs.shape[1:]:
            raise GlomsslError(
                f"mask {row['_mask']} is {truth.shape[1]}x{truth.shape[0]} but its image is "
                f"{probs.shape[2]}x{probs.shape[1]}; masks must have their image's size"
            )
        rec: dict[str, Any] = {"class": c, "image": str(row.get("path") or row.get("image"))}
        rec.update(score(probs[classes.index(c)] >= thr, truth))
        out.append(rec)
    return out
