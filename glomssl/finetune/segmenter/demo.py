"""The segmenter's step of ``make demo``: train for a few minutes on the shipped aidpath tiles (CC BY 4.0,
glomssl/assets/aidpath), then segment a held-back tile and compare with its mask.

The held-back tile is fixed in advance (the first by name); the other 11 train a one-class ``dynamic``
segmenter at 96 px (the whole 1024-px tile shrunk ~11x, ~5 microns per pixel) with AdamW for at most
``minutes`` and export the final weights (one validation tile is too few to pick a best step). The
result is reported beside the all-foreground prior (glomeruli cover 2-20% of a tile, so that prior is
low) and an overlay is written for a person to look at.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "aidpath"


def _table(path: Path, images: list[Path]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "mask", "task", "slide"])
        for p in images:
            w.writerow([str(p), str(ASSETS / "masks" / f"{p.stem}.png"), "glomerulus", p.stem])
    return path


def run_demo_step(
    out_dir: Path, minutes: float = 4.0, max_steps: int = 600, quiet: bool = True
) -> dict[str, Any]:
    """Train on 11 shipped tiles, segment the 12th; returns Dice, the prior and the overlay path."""
    from glomssl.engine import HardwareConfig
    from glomssl.finetune.segmenter.predict import SegmentConfig, run_segment
    from glomssl.finetune.segmenter.train import SegTrainConfig, run_finetune_seg

    out_dir = Path(out_dir)
    images = sorted((ASSETS / "images").glob("*.jpg"))
    held, train = images[0], images[1:]
    train_csv = _table(out_dir / "data" / "train.csv", train)
    held_csv = _table(out_dir / "data" / "held_out.csv", [held])
    run = out_dir / "seg_run"
    res = run_finetune_seg(
        SegTrainConfig(
            train=[str(train_csv)],
            out=str(run),
            classes=["glomerulus"],
            model="dynamic",
            base=8,
            image_size=96,
            batch_size=4,
            max_steps=max_steps,
            max_minutes=minutes,
            optimizer="adamw",
            lr=3e-3,
            val_fraction=0.1,
            val_every_steps=100,
            select="final",
            workers=0,
            cache=True,
            quiet=quiet,
            overlays=1,
            hardware=HardwareConfig(accelerator="cpu"),
        )  # fmt: skip
    )
    seg = run_segment(
        SegmentConfig(
            model=str(run),
            input=[str(held_csv)],
            out=str(out_dir / "segment"),
            device="cpu",
            quiet=quiet,
        )  # fmt: skip
    )
    scores = json.loads((out_dir / "segment" / "scores.json").read_text())["per_class"][
        "glomerulus"
    ]
    return {
        "held_out": held.name,
        "train_tiles": len(train),
        "steps": res["steps"],
        "dice": scores["dice"],
        "boundary_f1": scores["bf1"],
        "dice_all_foreground": scores["dice_all_foreground"],
        "overlay": str(out_dir / "segment" / "overlays" / f"{held.stem}.png"),
        "mask": str(out_dir / "segment" / "masks" / "glomerulus" / f"{held.stem}.png"),
        "model": str(run / "model.safetensors"),
        "scale": seg["scale"],
    }
