"""What a training run leaves for a person to look at: per-class scores, a bar chart, overlays.

:func:`evaluate` scores a model on annotated images, each on the class(es) it annotates, at the
validation view (centre square at the working size), with Dice, boundary F1 and the three priors (all
foreground; all empty; a centred disk whose area is the class's mean foreground share in the
*training* masks). :func:`write_report` writes ``val_dice.json``, ``val_dice.png`` (bars per class,
the best prior as a tick) and ``overlays/<class>/*.png`` (image | truth | prediction).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.finetune.segmenter.data import SegItem

#: the trivial predictions every score is reported beside (see metrics.score)
PRIORS = ("dice_all_foreground", "dice_all_empty", "dice_centred_disk")

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
           (220, 190, 255), (170, 110, 40), (128, 0, 0), (0, 0, 128)]  # fmt: skip


def colour(k: int) -> tuple[int, int, int]:
    return PALETTE[k % len(PALETTE)]


def overlay(img: np.ndarray, mask: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    """(H, W, 3) uint8 with ``mask`` tinted (35%) and its boundary drawn in ``rgb``."""
    from glomssl.finetune.segmenter.metrics import boundary

    out = img.astype(np.float32).copy()
    m = mask.astype(bool)
    out[m] = 0.65 * out[m] + 0.35 * np.asarray(rgb, np.float32)
    out[boundary(m)] = rgb
    return out.clip(0, 255).astype(np.uint8)


def disk_fractions(
    items: Sequence[SegItem],
    classes: Sequence[str],
    image_size: int,
    threshold: int,
    cap: int = 200,
) -> dict[str, float]:
    """Mean foreground share per class over (up to ``cap``) training masks at the validation view."""
    from glomssl.finetune.segmenter.dataset import centre_view, load_pair
    from glomssl.finetune.segmenter.metrics import foreground_fraction
    from glomssl.finetune.segmenter.module import per_class_truth

    out: dict[str, float] = {}
    for k, c in enumerate(classes):
        sel = [it for it in items if it.task in (c, None)][:cap]
        masks = []
        for it in sel:
            img, m = centre_view(*load_pair(it, classes, image_size, threshold), image_size)
            t = -1 if it.task is None else k
            masks += [truth for kk, truth in per_class_truth(m, t, len(classes)) if kk == k]
        if masks:
            out[c] = foreground_fraction(masks)
    return out


def evaluate(
    model: Any,
    items: Sequence[SegItem],
    classes: Sequence[str],
    image_size: int,
    threshold: int = 127,
    disks: dict[str, float] | None = None,
    device: str = "cpu",
    keep: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]]]:
    """Per-(image, class) score records, and up to ``keep`` (name, image, truth, pred) per class."""
    import torch

    from glomssl.finetune.segmenter.dataset import centre_view, load_pair
    from glomssl.finetune.segmenter.metrics import score
    from glomssl.finetune.segmenter.module import per_class_truth

    records: list[dict[str, Any]] = []
    kept: dict[str, list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]] = {}
    model.eval()
    for it in items:
        img, m = centre_view(*load_pair(it, classes, image_size, threshold), image_size)
        x = (
            torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)[None].float().to(device)
            / 255.0
        )
        with torch.no_grad():
            probs = model.probabilities(x)[0].float().cpu().numpy()  # (K, S, S)
        t = -1 if it.task is None else list(classes).index(it.task)
        for k, truth in per_class_truth(m, t, len(classes)):
            c = classes[k]
            pred = probs[k] > 0.5
            rec: dict[str, Any] = {"class": c, "image": str(it.image)}
            rec.update(score(pred, truth, (disks or {}).get(c)))
            records.append(rec)
            if len(kept.setdefault(c, [])) < keep:
                kept[c].append((it.image.stem, img, truth, pred))
    return records, kept


def _bar_chart(path: Path, summary: dict[str, Any]) -> None:
    from PIL import Image, ImageDraw, ImageFont

    from glomssl.data.images import save_png

    per = summary["per_class"]
    names = list(per)
    bar_w, gap, left, top, h = 36, 18, 40, 30, 200
    width = left + len(names) * (bar_w + gap) + gap
    im = Image.new("RGB", (max(width, 240), top + h + 60), "white")
    d = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    d.text((4, 4), "validation Dice per class (tick: best trivial prior)", fill="black", font=font)
    d.line([(left, top), (left, top + h)], fill="black")
    d.line([(left, top + h), (width, top + h)], fill="black")
    for v in (0.0, 0.5, 1.0):
        y = top + h - int(v * h)
        d.text((4, y - 6), f"{v:.1f}", fill="black", font=font)
    for i, c in enumerate(names):
        x0 = left + gap + i * (bar_w + gap)
        v = per[c]["dice"]
        d.rectangle([x0, top + h - int(v * h), x0 + bar_w, top + h], fill=colour(i))
        priors = [per[c][k] for k in PRIORS if k in per[c]]  # all foreground, all empty, disk
        prior = max(priors) if priors else None
        if prior is not None:
            y = top + h - int(prior * h)
            d.line([(x0 - 4, y), (x0 + bar_w + 4, y)], fill="black", width=2)
        d.text((x0, top + h + 4), c[:6], fill="black", font=font)
        d.text((x0, top + h + 18), f"{v:.2f}", fill="black", font=font)
        d.text((x0, top + h + 32), f"n={per[c]['n']}", fill="black", font=font)
    save_png(path, im)


def write_report(
    out: Path,
    records: list[dict[str, Any]],
    kept: dict[str, list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]],
    classes: Sequence[str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``val_dice.json`` + ``val_dice.png`` + ``overlays/``; returns the summary."""
    from PIL import Image

    from glomssl.data.images import save_png
    from glomssl.finetune.segmenter.metrics import aggregate
    from glomssl.fsutil import atomic_write_text

    summary = aggregate(records, classes)
    summary.update(extra or {})
    atomic_write_text(out / "val_dice.json", json.dumps(summary, indent=2) + "\n")
    if summary["per_class"]:
        _bar_chart(out / "val_dice.png", summary)
    for c, rows in kept.items():
        k = list(classes).index(c)
        for name, img, truth, pred in rows:
            panels = [img, overlay(img, truth == 1, (0, 170, 0)), overlay(img, pred, colour(k))]
            strip = np.concatenate(panels, axis=1)
            scale = max(1, 192 // img.shape[0])
            pil = Image.fromarray(strip)
            if scale > 1:
                pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
            save_png(out / "overlays" / c / f"{name}.png", pil)
    return summary
