"""Split compound figures into panels: a YOLO detector (shipped weights) or classic XY cuts.

``yolo`` runs the panel detector of :mod:`glomssl.mining.yolo` (trained on synthetic compound figures,
the SimCFS / Glo-In-One recipe). ``classic`` needs no model: it finds the figure's background colour
from its border, marks "ink" pixels that differ from it, and cuts the figure recursively along rows or
columns that hold no ink (the recursive XY-cut of Nagy & Seth, 1984, on projection profiles). Regions
too small to be panels (letters, stray text) are dropped. Either way a figure with no panel found
yields one panel: the figure trimmed of its empty margins.

:func:`run_separate` reads a FOLDER or MANIFEST and writes ``DIR/panels/*.png``,
``DIR/manifest.jsonl`` (one row per panel with ``parent``, ``bbox``, ``score``, ``method`` and the
parent's provenance), ``DIR/failures.jsonl`` (unreadable inputs) and optional ``DIR/previews``. Progress
lives in ``DIR/separate.sqlite``: a rerun skips figures already done, and a crash loses at most the
figure in flight.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from glomssl.errors import GlomsslError
from glomssl.fsutil import atomic_write_bytes, ensure_writable_dir, sha256_bytes
from glomssl.manifest import Row, load_image_list, write_jsonl, write_manifest

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive ends), parent pixels
Scored = tuple[Box, float]
METHODS = ("yolo", "classic")
_OWN_FIELDS = {"path", "sha256", "width", "height", "parent", "bbox", "score", "method", "mask"}


@dataclasses.dataclass
class SeparateConfig:
    """Options of ``glomssl separate``."""

    input: str = ""  # FOLDER of figures or a MANIFEST (jsonl)
    out: str = "panels_out"
    method: str = "yolo"
    weights: str | None = None  # None: the weights shipped with glomssl
    conf: float = 0.25
    iou: float = 0.5  # non-maximum suppression overlap
    imgsz: int = 0  # 0: the size the weights were trained at
    min_side: int = 24  # panels narrower or lower than this (px) are dropped
    batch: int = 8
    preview: int = 0  # draw the boxes of this many figures into DIR/previews
    device: str = "cpu"
    quiet: bool = False

    def validate(self) -> None:
        if self.method not in METHODS:
            raise GlomsslError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not self.input or not Path(self.input).exists():
            raise GlomsslError(f"--input {self.input!r} does not exist; pass a folder or manifest")
        if not 0.0 < self.conf < 1.0:
            raise GlomsslError(f"--conf must be between 0 and 1, got {self.conf}")
        if not 0.0 < self.iou <= 1.0:
            raise GlomsslError(f"--iou must be in (0, 1], got {self.iou}")
        if self.imgsz and (self.imgsz < 64 or self.imgsz % 32):
            raise GlomsslError(f"--imgsz must be a multiple of 32 and >= 64, got {self.imgsz}")
        if self.min_side < 1 or self.batch < 1 or self.preview < 0:
            raise GlomsslError("--min-side and --batch must be >= 1 and --preview >= 0")


# ----------------------------------------------------------------------------- pixels


def ink_mask(arr: np.ndarray, tol: int = 30) -> np.ndarray:
    """Boolean (H, W) mask of pixels that differ from the background (median of the border)."""
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]]).astype(np.int16)  # (N, 3)
    bg = np.median(border, axis=0)
    return np.abs(arr.astype(np.int16) - bg).max(axis=2) > tol  # type: ignore[no-any-return]


def trim_box(ink: np.ndarray, box: Box) -> Box | None:
    """Shrink ``box`` to the ink inside it; None when it holds no ink."""
    x0, y0, x1, y1 = box
    sub = ink[y0:y1, x0:x1]
    rows = np.flatnonzero(sub.any(axis=1))
    cols = np.flatnonzero(sub.any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return None
    return (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)


def _gaps(profile: np.ndarray, min_gap: int) -> list[tuple[int, int]]:
    """Runs of empty entries (start, end) at least ``min_gap`` long, excluding the two ends."""
    empty = profile == 0
    runs, start = [], None
    for i, e in enumerate(empty.tolist() + [False]):
        if e and start is None:
            start = i
        elif not e and start is not None:
            if start > 0 and i < len(profile) and i - start >= min_gap:
                runs.append((start, i))
            start = None
    return runs


def xy_cut(ink: np.ndarray, box: Box, min_gap: int, depth: int = 0) -> list[Box]:
    """Recursive XY cut of ``box``: split at blank rows or columns until none is left."""
    trimmed = trim_box(ink, box)
    if trimmed is None:
        return []
    x0, y0, x1, y1 = trimmed
    sub = ink[y0:y1, x0:x1]
    row_gaps = _gaps(sub.sum(axis=1), min_gap)
    col_gaps = _gaps(sub.sum(axis=0), min_gap)
    if depth > 12 or (not row_gaps and not col_gaps):
        return [trimmed]
    widest_row = max((b - a for a, b in row_gaps), default=0)
    widest_col = max((b - a for a, b in col_gaps), default=0)
    out: list[Box] = []
    if widest_row >= widest_col:
        edges = [0] + [c for g in row_gaps for c in g] + [y1 - y0]
        for a, b in zip(edges[::2], edges[1::2]):
            out += xy_cut(ink, (x0, y0 + a, x1, y0 + b), min_gap, depth + 1)
    else:
        edges = [0] + [c for g in col_gaps for c in g] + [x1 - x0]
        for a, b in zip(edges[::2], edges[1::2]):
            out += xy_cut(ink, (x0 + a, y0, x0 + b, y1), min_gap, depth + 1)
    return out


def _area(b: Box) -> int:
    return max(0, b[2] - b[0]) * max(0, b[3] - b[1])


def _inter(a: Box, b: Box) -> int:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    inter = _inter(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union else 0.0


def classic_boxes(img: Image.Image, min_side: int = 24, tol: int = 30) -> list[Scored]:
    """Panels by recursive XY cuts on the figure's whitespace; score = share of ink in the box."""
    arr = np.asarray(img.convert("RGB"))  # (H, W, 3)
    ink = ink_mask(arr, tol)
    h, w = ink.shape
    min_gap = max(2, round(max(h, w) / 256))
    limit = max(min_side, round(0.06 * min(h, w)))
    out = []
    for b in xy_cut(ink, (0, 0, w, h), min_gap):
        if b[2] - b[0] >= limit and b[3] - b[1] >= limit:
            out.append((b, float(ink[b[1] : b[3], b[0] : b[2]].mean())))
    return out


def clean_boxes(ink: np.ndarray, boxes: Sequence[Scored], min_side: int) -> list[Scored]:
    """Trim each box to its ink, drop tiny ones and ones mostly inside a better-scoring box."""
    h, w = ink.shape
    kept: list[Scored] = []
    for box, score in sorted(boxes, key=lambda s: -s[1]):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        clipped = (max(0, x0), max(0, y0), min(w, x1), min(h, y1))
        if _area(clipped) == 0:
            continue
        t = trim_box(ink, clipped)
        if t is None or t[2] - t[0] < min_side or t[3] - t[1] < min_side:
            continue
        if any(_inter(t, k) > 0.8 * _area(t) for k, _ in kept):
            continue
        kept.append((t, score))
    return sorted(kept, key=lambda s: (s[0][1] // 16, s[0][0]))  # reading order


def whole_figure(ink: np.ndarray) -> Scored:
    """The figure trimmed of empty margins, as the single panel of a non-compound figure."""
    h, w = ink.shape
    return (trim_box(ink, (0, 0, w, h)) or (0, 0, w, h), 1.0)


def prf1(preds: Sequence[Sequence[Box]], truths: Sequence[Sequence[Box]], thr: float = 0.5) -> dict:
    """Precision, recall and F1 at IoU >= ``thr`` with greedy one-to-one matching per figure."""
    tp = fp = fn = 0
    for pred, gt in zip(preds, truths):
        pairs = sorted(
            ((iou(p, g), i, j) for i, p in enumerate(pred) for j, g in enumerate(gt)), reverse=True
        )
        used_p: set[int] = set()
        used_g: set[int] = set()
        for v, i, j in pairs:
            if v < thr:
                break
            if i not in used_p and j not in used_g:
                used_p.add(i)
                used_g.add(j)
        tp += len(used_p)
        fp += len(pred) - len(used_p)
        fn += len(gt) - len(used_g)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


# ----------------------------------------------------------------------------- splitters


class Separator:
    """Find panel boxes in figures with one method; ``split(images)`` -> scored boxes per figure."""

    def __init__(
        self,
        method: str = "yolo",
        weights: str | None = None,
        conf: float = 0.25,
        iou: float = 0.5,
        imgsz: int = 0,
        min_side: int = 24,
        device: str = "cpu",
    ) -> None:
        if method not in METHODS:
            raise GlomsslError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self.method, self.conf, self.iou, self.min_side, self.device = (
            method,
            conf,
            iou,
            min_side,
            device,
        )
        self.detector: Any = None
        self.imgsz = imgsz or 512
        if method == "yolo":
            from glomssl.mining.yolo import load_detector, weights_meta

            self.detector = load_detector(weights)
            self.imgsz = imgsz or int(weights_meta(weights).get("imgsz", 512))

    def split(self, images: Sequence[Image.Image]) -> list[list[Scored]]:
        """Panels of each figure (reading order); never empty: falls back to the whole figure."""
        arrs = [np.asarray(im.convert("RGB")) for im in images]  # (H, W, 3) each
        inks = [ink_mask(a) for a in arrs]
        if self.method == "classic":
            raw = [classic_boxes(im, self.min_side) for im in images]
        else:
            results = self.detector.predict(
                [a[:, :, ::-1] for a in arrs],  # ultralytics expects BGR arrays
                imgsz=self.imgsz,
                conf=self.conf,
                iou=self.iou,
                device=self.device,
                verbose=False,
            )
            raw = []
            for res in results:
                xyxy = res.boxes.xyxy.cpu().numpy()  # (N, 4)
                scores = res.boxes.conf.cpu().numpy()  # (N,)
                raw.append([(tuple(b.tolist()), float(s)) for b, s in zip(xyxy, scores)])
        out = []
        for ink, boxes in zip(inks, raw):
            kept = clean_boxes(ink, boxes, self.min_side)
            if len(kept) <= 1:  # not compound (or one panel found): the whole figure, trimmed
                whole, _ = whole_figure(ink)
                kept = [(whole, kept[0][1] if kept else 1.0)]
            out.append(kept)
        return out


# ----------------------------------------------------------------------------- the run


def _open_state(path: Path, fingerprint: str) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS parents (key TEXT PRIMARY KEY, status TEXT NOT NULL,"
        " rows TEXT, error TEXT)"
    )
    old = db.execute("SELECT value FROM meta WHERE key='config'").fetchone()
    if old is None:
        with db:
            db.execute("INSERT INTO meta VALUES ('config', ?)", (fingerprint,))
    elif old[0] != fingerprint:
        db.close()
        raise GlomsslError(
            f"{path.parent} holds panels made with other settings ({old[0]}); "
            "use a new --out folder or delete that one"
        )
    return db


def _load(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I", "F"):
                a = np.asarray(im, dtype=np.float32)
                a = (a - a.min()) / max(float(a.max() - a.min()), 1e-6) * 255
                return Image.fromarray(a.astype(np.uint8)).convert("RGB")
            return im.convert("RGB")
    except (OSError, ValueError, ImportError, Image.DecompressionBombError) as exc:
        # ImportError: once ultralytics is imported, PIL's open tries an optional HEIF plug-in for
        # files it cannot identify; a missing plug-in means "not an image we can read".
        raise GlomsslError(f"{path} is not a readable image ({exc})".splitlines()[0]) from exc


def _preview(img: Image.Image, panels: Sequence[Scored], target: Path) -> None:
    canvas = img.copy()
    dr = ImageDraw.Draw(canvas)
    for k, (b, s) in enumerate(panels):
        dr.rectangle([b[0], b[1], b[2] - 1, b[3] - 1], outline=(255, 0, 0), width=2)
        dr.text((b[0] + 3, b[1] + 2), f"{k} {s:.2f}", fill=(255, 0, 0))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    atomic_write_bytes(target, buf.getvalue(), fsync=False)


def run_separate(cfg: SeparateConfig) -> dict[str, Any]:
    """Separate every figure of ``cfg.input`` into panel crops under ``cfg.out``; resumable.

    Returns a summary: figures, done now, skipped (done before), failed, panels, paths written.
    """
    cfg.validate()
    out = ensure_writable_dir(cfg.out)
    items = load_image_list(cfg.input)
    from_folder = Path(cfg.input).is_dir()
    fingerprint = json.dumps(
        {"method": cfg.method, "weights": cfg.weights, "conf": cfg.conf, "imgsz": cfg.imgsz},
        sort_keys=True,
    )
    db = _open_state(out / "separate.sqlite", fingerprint)
    try:
        done = {k for (k,) in db.execute("SELECT key FROM parents")}
        keyed = []
        for file, row in items:
            key = os.path.join(cfg.input, row["path"]) if from_folder else row["path"]
            keyed.append((key, file, row))
        todo = [t for t in keyed if t[0] not in done]
        sep = (  # nothing to do: do not load the detector at all
            Separator(
                cfg.method, cfg.weights, cfg.conf, cfg.iou, cfg.imgsz, cfg.min_side, cfg.device
            )
            if todo
            else None
        )
        from tqdm import tqdm

        bar = tqdm(
            total=len(todo), disable=True if cfg.quiet else None, unit="fig", desc="separate"
        )
        n_prev = len(list((out / "previews").glob("*.png"))) if cfg.preview else 0
        for start in range(0, len(todo), cfg.batch):
            chunk, imgs = [], []
            for key, file, row in todo[start : start + cfg.batch]:
                try:
                    imgs.append(_load(file))
                    chunk.append((key, file, row))
                except GlomsslError as exc:
                    with db:
                        db.execute(
                            "INSERT OR REPLACE INTO parents VALUES (?, 'failed', NULL, ?)",
                            (key, str(exc)),
                        )
                    bar.update(1)
            split = sep.split(imgs) if imgs and sep is not None else []
            for (key, file, row), img, panels in zip(chunk, imgs, split):
                stem = Path(file).stem[:60]
                tag = hashlib.sha1(key.encode("utf-8")).hexdigest()[:8]
                prov = {k: v for k, v in row.items() if k not in _OWN_FIELDS}
                rows = []
                for k, (b, score) in enumerate(panels):
                    buf = io.BytesIO()
                    img.crop(b).save(buf, format="PNG")
                    data = buf.getvalue()
                    rel = f"panels/{stem}-{tag}-p{k:02d}.png"
                    atomic_write_bytes(out / rel, data, fsync=False)
                    rows.append(
                        {
                            "path": rel,
                            "sha256": sha256_bytes(data),
                            "width": b[2] - b[0],
                            "height": b[3] - b[1],
                            "parent": key,
                            "bbox": list(b),
                            "score": round(score, 4),
                            "method": cfg.method,
                            **prov,
                        }
                    )
                if n_prev < cfg.preview:
                    _preview(img, panels, out / "previews" / f"{stem}-{tag}.png")
                    n_prev += 1
                with db:
                    db.execute(
                        "INSERT OR REPLACE INTO parents VALUES (?, 'done', ?, NULL)",
                        (key, json.dumps(rows)),
                    )
                bar.update(1)
        bar.close()
        status = {
            k: (s, r, e)
            for k, s, r, e in db.execute("SELECT key, status, rows, error FROM parents")
        }
    finally:
        db.close()
    panel_rows: list[Row] = []
    failures = []
    for key, _file, _row in keyed:
        s, r, e = status.get(key, ("missing", None, None))
        if s == "done":
            panel_rows.extend(json.loads(r))
        elif s == "failed":
            failures.append({"parent": key, "error": e})
    write_manifest(out / "manifest.jsonl", panel_rows)
    write_jsonl(out / "failures.jsonl", failures)
    return {
        "figures": len(keyed),
        "processed": len(todo),
        "skipped": len(keyed) - len(todo),
        "failed": len(failures),
        "panels": len(panel_rows),
        "manifest": str(out / "manifest.jsonl"),
        "failures": str(out / "failures.jsonl"),
        "method": cfg.method,
    }
