"""Tiny partially labelled segmentation sets made by the tests (no downloads).

Each image is a noisy pink background with one disk. Half the disks are "sclerosed" (pale, smooth),
half are "normal" (dark purple, speckled). Each image is annotated for ONE task: ``Tuft`` (the disk,
whatever its kind) or ``GS`` (the disk when sclerosed, an empty mask otherwise), like the real
Tuft/GS tasks built from ../shared/data/glomeruli.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def make_seg_set(
    folder: Path, n: int = 16, size: int = 48, seed: int = 0, painted: bool = True
) -> Path:
    """Write ``n`` images + masks and ``folder/table.csv`` (path,mask,task,slide); returns the CSV.

    ``painted`` masks are 0/255 black-and-white PNGs (what painting tools export); otherwise 0/1 ids.
    """
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    rows = []
    for i in range(n):
        img = np.clip(rng.normal(225, 12, (size, size, 3)), 0, 255)
        img[..., 1] -= 40
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        r = rng.uniform(size * 0.15, size * 0.28)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        sclerosed = i % 2 == 0
        if sclerosed:
            img[disk] = (200, 170, 200) + rng.normal(0, 3, (int(disk.sum()), 3))
        else:
            img[disk] = (110, 50, 130) + rng.normal(0, 25, (int(disk.sum()), 3))
        task = "Tuft" if i % 4 in (0, 1) else "GS"
        m = disk if task == "Tuft" else (disk & sclerosed)
        name = f"im{i:03d}"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / "images" / f"{name}.png")
        mask = (m * (255 if painted else 1)).astype(np.uint8)
        Image.fromarray(mask).save(folder / "masks" / f"{name}.png")
        rows.append(
            {
                "path": f"images/{name}.png",
                "mask": f"masks/{name}.png",
                "task": task,
                "slide": f"s{i % 8}",
                "species": "human" if i % 3 else "rodent",
            }
        )
    table = folder / "table.csv"
    with open(table, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return table


@pytest.fixture()
def seg_table(tmp_path: Path) -> Path:
    return make_seg_set(tmp_path / "data")


@pytest.fixture(scope="session")
def make_seg():  # type: ignore[no-untyped-def]
    return make_seg_set
