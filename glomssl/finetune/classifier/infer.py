"""Using an exported classifier: a stable Python API and ``glomssl classify``.

The API (the whole-slide chain calls it; keep the signatures stable):

- :func:`load_classifier` ``(path, device="cpu") -> (model, meta)``: a ``finetune cls`` run folder or its
  ``model.safetensors``; ``meta`` holds ``classes``, ``image_size``, ``mean``/``std``, how it was trained;
- :func:`classify_images` ``(model, meta, images, batch_size=64, device="cpu") -> (N, C) numpy``:
  class probabilities (columns in ``meta["classes"]`` order) of image paths or PIL images, prepared
  exactly as in training (whole image resized to the model's size).

``glomssl classify`` runs it on a folder, a manifest or a labels CSV and writes one JSON line per image
(the input row's fields, ``prediction``, ``confidence``, ``probabilities``); ``--evaluate LABELS`` also
scores the predictions (balanced accuracy, macro F1, AUC, confusion matrix PNG): Glo-In-One's external
validation.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.config import opt
from glomssl.errors import GlomsslError

__all__ = ["ClassifyConfig", "classify_images", "load_classifier", "run_classify"]


def load_classifier(
    path: str | os.PathLike[str], device: str = "cpu"
) -> tuple[Any, dict[str, Any]]:
    """Load an exported classifier (run folder or model.safetensors) in eval mode on ``device``."""
    from glomssl.finetune.classifier.model import load_classifier_file

    return load_classifier_file(path, device)


def classify_images(
    model: Any,
    meta: dict[str, Any],
    images: Sequence[Any],
    batch_size: int = 64,
    device: str = "cpu",
) -> np.ndarray:
    """Class probabilities (N, C) float32 of image paths or PIL images, in input order."""
    import torch

    from glomssl.finetune.classifier.model import prepare

    size = int(meta["image_size"])
    model = model.to(device).eval()
    out = np.zeros((len(images), len(meta["classes"])), dtype=np.float32)
    with torch.no_grad():
        for i in range(0, len(images), max(1, batch_size)):
            chunk = images[i : i + batch_size]
            x = torch.stack([prepare(im, size) for im in chunk]).to(device).float().div_(255)
            out[i : i + len(chunk)] = torch.softmax(model(x).float(), dim=1).cpu().numpy()
    return out


@dataclass
class ClassifyConfig:
    """Options of ``glomssl classify``."""

    model: str = ""
    input: str = ""
    out: str = ""
    evaluate: str | None = None  # labels CSV/manifest to score the predictions against
    batch_size: int = opt(64, ge=1)
    device: str = "auto"
    quiet: bool = False

    def validate(self) -> None:
        from glomssl.engine import resolve_device

        if not self.model or not self.input or not self.out:
            raise GlomsslError("--model, --input and --out are required")
        if not self.out.endswith(".jsonl"):
            raise GlomsslError(f"--out {self.out!r} must end with .jsonl (one line per image)")
        resolve_device(self.device)


def _inputs(
    source: str, own: Sequence[str | os.PathLike[str]] = ()
) -> tuple[list[tuple[Path, dict[str, Any]]], list[dict[str, str]]]:
    """(path, row) pairs of a folder, manifest or labels CSV, and the unreadable files skipped.

    ``own``: image files this command writes (its confusion matrix), left out of a folder's listing.
    """
    from glomssl.data.images import image_ok
    from glomssl.data.sources import resolve_sources
    from glomssl.finetune.classifier.data import read_label_rows

    src = Path(source)
    if src.is_file() and src.suffix.lower() == ".csv":
        items, skipped = [], []
        for full, row in read_label_rows(src):
            reason = "missing file" if not full.is_file() else image_ok(full)
            if reason is None:
                items.append((full, row))
            else:
                skipped.append({"path": str(full), "reason": reason})
        if not items:
            raise GlomsslError(f"none of the images listed in {src} could be read; check the paths")
        return items, skipped
    got = resolve_sources(
        [source], what="--input", allow_slides=False, exclude=own, command="classify"
    )
    return got.items, got.skipped


def _match(rows: list[tuple[Path, dict[str, Any]]], labels: str) -> dict[int, str]:
    """Index of each classified image -> its true label (matched by resolved file path)."""
    from glomssl.finetune.classifier.data import read_label_rows

    table = read_label_rows(labels, what="--evaluate")
    if not any("label" in row for _, row in table):
        raise GlomsslError(
            f"--evaluate {labels} has no 'label' column; give each image its true class there"
        )
    truth = {full.resolve(): str(row.get("label", "")) for full, row in table}
    out = {}
    for i, (p, _) in enumerate(rows):
        lab = truth.get(p.resolve())
        if lab:
            out[i] = lab
    if not out:
        raise GlomsslError(
            f"--evaluate {labels}: none of its rows names a classified image; its paths must be "
            "relative to its own folder and point at the --input images"
        )
    return out


def run_classify(cfg: ClassifyConfig) -> dict[str, Any]:
    """Classify every readable image of ``cfg.input``; write predictions (and metrics); summary."""
    from glomssl.engine import progress_line, resolve_device
    from glomssl.finetune.classifier.linear import write_json
    from glomssl.finetune.classifier.metrics import confusion_png, evaluate
    from glomssl.fsutil import atomic_open, refuse_out_is_input
    from glomssl.manifest import dumps_row, write_jsonl

    cfg.validate()
    refuse_out_is_input(cfg.out, [cfg.input], "classify")  # before the model is read
    device = resolve_device(cfg.device)
    model, meta = load_classifier(cfg.model, device)
    classes = [str(c) for c in meta["classes"]]
    # its own confusion matrix (written beside --out) is never classified on a rerun
    items, skipped = _inputs(cfg.input, [f"{Path(cfg.out).with_suffix('')}.confusion.png"])
    truth = _match(items, cfg.evaluate) if cfg.evaluate else {}
    unknown = sorted({lab for lab in truth.values() if lab not in classes})
    if unknown:
        raise GlomsslError(
            f"--evaluate {cfg.evaluate} has label {unknown[0]!r}, which the model does not know "
            f"(its classes: {', '.join(classes)}); fix the labels or use a matching model"
        )
    from glomssl.fsutil import ensure_writable_dir

    ensure_writable_dir(Path(cfg.out).parent, "--out")  # a path under a file: one line, not a trace
    t0 = time.perf_counter()
    probs = np.zeros((len(items), len(classes)), dtype=np.float32)
    bs = cfg.batch_size * 8
    for i in range(0, len(items), bs):
        chunk = [p for p, _ in items[i : i + bs]]
        probs[i : i + len(chunk)] = classify_images(model, meta, chunk, cfg.batch_size, device)
        if not cfg.quiet:
            print(progress_line("classify", i + len(chunk), len(items), t0), file=sys.stderr)
    from glomssl.manifest import relpath

    out = Path(cfg.out)
    with atomic_open(out, "w") as fh:
        for (path, row), p in zip(items, probs, strict=True):
            k = int(p.argmax())
            rec = {
                **row,
                "path": relpath(path, out.resolve().parent),  # like every manifest: from its folder
                "prediction": classes[k],
                "confidence": round(float(p[k]), 6),
                "probabilities": {c: round(float(v), 6) for c, v in zip(classes, p, strict=True)},
            }
            fh.write(dumps_row(rec) + "\n")
    if skipped:
        write_jsonl(out.with_name(out.stem + ".skipped.jsonl"), skipped)
    summary: dict[str, Any] = {
        "out": str(out),
        "n": len(items),
        "skipped": len(skipped),
        "classes": classes,
        "predicted": {c: int((probs.argmax(1) == i).sum()) for i, c in enumerate(classes)},
    }
    if truth:
        idx = np.asarray(sorted(truth))
        y = np.asarray([classes.index(truth[i]) for i in idx])
        metrics = evaluate(y, probs[idx])
        metrics["chance_balanced_accuracy"] = 1.0 / len(classes)
        metrics["classes"] = classes
        base = out.with_suffix("")
        write_json(Path(f"{base}.metrics.json"), metrics)
        confusion_png(
            np.asarray(metrics["confusion"]),
            classes,
            Path(f"{base}.confusion.png"),
            f"{Path(cfg.model).name} on {Path(cfg.evaluate or '').name}",
        )
        summary["metrics"] = metrics
    return summary
