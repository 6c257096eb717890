"""``glomssl separator synth``: write a YOLO data set of synthetic compound figures.

Output::

    OUT/images/{train,val}/000123.jpg   OUT/labels/{train,val}/000123.txt   ("0 cx cy w h", normalised)
    OUT/boxes.jsonl                      (one row per figure: file, split, width, height, boxes in px)
    OUT/data.yaml                        (ultralytics data file, single class "panel")
    OUT/skipped.jsonl                    (panel images given with --images that could not be read)

Every figure ``i`` is drawn from ``numpy.random.default_rng([seed, i])``: the set is reproducible and
any figure can be regenerated alone.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.config import opt
from glomssl.errors import GlomsslError
from glomssl.fsutil import (
    atomic_write_bytes,
    atomic_write_text,
    ensure_writable_dir,
    refuse_out_is_input,
)
from glomssl.mining.synth.drawing import KIND_NAMES, KIND_WEIGHTS, Box, make_figure
from glomssl.mining.synth.layouts import LAYOUT_WEIGHTS, LAYOUTS
from glomssl.mining.synth.panels import Fonts, load_pool


@dataclasses.dataclass
class SynthConfig:
    """Options of ``glomssl separator synth``."""

    out: str = "synth_figures"
    n: int = opt(1000, ge=1)  # number of figures
    val_fraction: float = opt(0.1, ge=0, lt=1)  # last share of figures goes to the val split
    seed: int = opt(0, ge=0)
    images: list[str] = dataclasses.field(default_factory=list)  # folders of panel images
    long_side: int = opt(512, ge=128, le=4096)  # typical long side (Open-i serves ~512 px)
    max_pool: int = opt(2000, ge=1)  # at most this many user images are kept in memory
    letters: bool = True  # draw panel letters
    captions: bool = True  # draw titles, captions and row/column headers inside some figures
    # mean share of panel kinds: photo, micrograph, plot, diagram, colour map, strip, slide
    # (6 weights, as older configs give them, mean no tissue-on-slide panels)
    kinds: list[float] = opt(factory=lambda: list(KIND_WEIGHTS), ge=0)
    # mean share of layouts: single, grid, cuts, rows, uniform, big, strip
    layouts: list[float] = opt(factory=lambda: list(LAYOUT_WEIGHTS), ge=0)
    # chance that a figure is a montage of one sample: all panels photos (or tissue on a slide)
    # cut from ONE --images picture, so neighbours share stain and texture (needs --images)
    same_source: float = opt(0.0, ge=0, le=1)
    # chance that a figure is a montage of pictures with no gutter: every panel a photo (or tissue
    # on a slide) from --images, touching its neighbours (needs --images)
    touch: float = opt(0.0, ge=0, le=1)
    quiet: bool = False

    def validate(self) -> None:
        if self.n < 1:
            raise GlomsslError(f"--n must be at least 1, got {self.n}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise GlomsslError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if (
            len(self.kinds) not in (6, len(KIND_NAMES))
            or min(self.kinds) < 0
            or sum(self.kinds) <= 0
        ):
            raise GlomsslError(
                f"kinds must be {len(KIND_NAMES)} non-negative weights ({', '.join(KIND_NAMES)}), "
                f"got {self.kinds}"
            )
        if len(self.layouts) != len(LAYOUTS) or min(self.layouts) < 0 or sum(self.layouts) <= 0:
            raise GlomsslError(
                f"layouts must be {len(LAYOUTS)} non-negative weights ({', '.join(LAYOUTS)}), "
                f"got {self.layouts}"
            )
        for flag, share, verb in (
            ("--same-source", self.same_source, "cuts montages from"),
            ("--touch", self.touch, "fills montages with"),
        ):
            if not 0.0 <= share <= 1.0:  # also NaN
                raise GlomsslError(f"{flag} must be in [0, 1], got {share}")
            if share > 0 and not self.images:
                raise GlomsslError(
                    f"{flag} {share:g} {verb} --images pictures; "
                    f"pass --images FOLDER or set {flag} 0"
                )
        if not 128 <= self.long_side <= 4096:
            raise GlomsslError(f"--long-side must be in 128..4096, got {self.long_side}")
        for folder in self.images:
            if not Path(folder).is_dir():
                raise GlomsslError(f"--images {folder} is not a folder; pass a folder of images")


def yolo_lines(boxes: Sequence[Box], w: int, h: int) -> str:
    """YOLO label text: one ``0 cx cy bw bh`` line per box, normalised to the image size."""
    lines = []
    for x0, y0, x1, y1 in boxes:
        cx, cy = (x0 + x1) / 2 / w, (y0 + y1) / 2 / h
        lines.append(f"0 {cx:.6f} {cy:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def refuse_old_set(out: Path) -> None:
    """A data set is written into a folder of its own: figures of an earlier run (another seed
    or ``--n``) left beside the new ones would be trained on as if they belonged to it."""
    if not out.is_dir():
        return
    held = [
        name for name in ("data.yaml", "boxes.jsonl", "images", "labels") if (out / name).exists()
    ]
    if held:
        raise GlomsslError(
            f"--out {out} already holds a data set ({', '.join(held)}); choose a new folder or "
            "delete that one (writing into it would mix two sets)"
        )


def run_synth(cfg: SynthConfig, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write ``cfg.n`` synthetic figures as a YOLO data set under ``cfg.out``; return a summary."""
    from glomssl.data.sources import write_skipped

    cfg.validate()
    refuse_old_set(Path(cfg.out))
    refuse_out_is_input(cfg.out, cfg.images or [], "separator synth", "--images")
    skipped: list[dict[str, str]] = []
    pool = load_pool(cfg.images, cfg.max_pool, cfg.seed, skipped)
    if cfg.images and not pool:
        raise GlomsslError(f"--images {', '.join(cfg.images)}: no readable images found there")
    out = ensure_writable_dir(cfg.out)  # only once the inputs are known good
    fonts = Fonts()
    n_val = int(round(cfg.n * cfg.val_fraction))
    if cfg.val_fraction > 0 and n_val == 0 and cfg.n >= 2:
        n_val = 1  # a share asked for is never rounded away: training needs validation figures
    rows = []
    n_boxes = 0
    for i in range(cfg.n):
        split = "val" if i >= cfg.n - n_val else "train"
        rng = np.random.default_rng([cfg.seed, i])
        fig, boxes = make_figure(
            rng,
            fonts,
            pool,
            cfg.long_side,
            cfg.letters,
            cfg.captions,
            kinds=cfg.kinds,
            layouts=cfg.layouts,
            same_source=cfg.same_source,
            touch=cfg.touch,
        )
        buf = io.BytesIO()
        fig.save(buf, format="JPEG", quality=int(rng.integers(60, 96)))
        name = f"{i:06d}"
        atomic_write_bytes(out / "images" / split / f"{name}.jpg", buf.getvalue(), fsync=False)
        atomic_write_text(
            out / "labels" / split / f"{name}.txt", yolo_lines(boxes, *fig.size), fsync=False
        )
        rows.append(
            {
                "file": f"images/{split}/{name}.jpg",
                "split": split,
                "width": fig.size[0],
                "height": fig.size[1],
                "boxes": [list(b) for b in boxes],
            }
        )
        n_boxes += len(boxes)
        if progress is not None:
            progress(1)
    atomic_write_text(out / "boxes.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    data_yaml = (
        f"path: {json.dumps(os.fspath(out.resolve()))}\ntrain: images/train\n"
        f"val: images/{'val' if n_val else 'train'}\nnames:\n  0: panel\n"
    )
    atomic_write_text(out / "data.yaml", data_yaml)
    write_skipped(out, skipped)
    return {
        "out": str(out),
        "figures": cfg.n,
        "val": n_val,
        "boxes": n_boxes,
        "pool_images": len(pool),
        "skipped_images": len(skipped),
        "data_yaml": str(out / "data.yaml"),
    }
