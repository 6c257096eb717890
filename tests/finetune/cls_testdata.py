"""Tiny labelled crop sets and a random-init encoder for the classifier tests (made here, no downloads).

Imported by the ``test_cls_*`` files (the test folders are not packages; pytest puts this folder on
``sys.path``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def make_crops(
    root: Path, slides: int = 6, per_slide: int = 8, size: int = 32, seed: int = 0
) -> Path:
    """``root/labels.csv`` + PNGs: 'GS' = a flat pink disc, 'nonGS' = a speckled purple disc.

    Each slide gets its own brightness shift (a stain/scanner effect) and 3 GS crops out of
    ``per_slide``, so classes are unbalanced and groups matter. Returns the CSV path.
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    rows = []
    for s in range(slides):
        shift = int(rng.integers(-20, 20))
        for i in range(per_slide):
            label = "GS" if i < 3 else "nonGS"
            arr = np.full((size, size, 3), 235, np.int32)
            disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 2.6) ** 2
            if label == "GS":
                arr[disc] = (215, 130, 175)
            else:
                noise = rng.integers(-60, 60, (int(disc.sum()), 3))
                arr[disc] = np.asarray((150, 80, 160)) + noise
            arr = np.clip(arr + shift + rng.integers(-8, 8, arr.shape), 0, 255).astype(np.uint8)
            name = f"images/s{s}_{i}.png"
            Image.fromarray(arr).save(root / name)
            rows.append({"image": name, "label": label, "slide": f"slide{s}", "patient": f"p{s}"})
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "label", "slide", "patient"])
        w.writeheader()
        w.writerows(rows)
    return root / "labels.csv"


def make_backbone(out: Path, size: int = 32, seed: int = 0) -> Path:
    """A random-init ResNet-18 exported as `glomssl pretrain --max-steps 0` does (the run folder)."""
    from glomssl.ssl.train import PretrainConfig, run_pretrain

    run_pretrain(
        PretrainConfig(data=["unused"], out=str(out), max_steps=0, image_size=size, seed=seed)
    )
    return out


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_rows(path: Path, rows: list[dict[str, str]], fields: list[str] | None = None) -> Path:
    fields = fields or list(rows[0])
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path
