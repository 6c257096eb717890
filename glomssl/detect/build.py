"""``glomssl detect data``: build the detector's training set (mosaics from crops, tiles from fields).

Two kinds of annotated input, both manifests of (image, mask[, slide]):

- ``--crops``: one glomerulus per image (the mask's largest component is the glomerulus). They become
  mosaics (:mod:`glomssl.detect.mosaic`) at the working resolution ``--mpp``.
- ``--fields`` with ``--fields-mpp``: large images at a known resolution whose masks mark every
  glomerulus (binary masks: one glomerulus per connected component; instance masks: one per id). They
  are resampled to ``--mpp`` and cut into tiles; a glomerulus less than ``MIN_VISIBLE`` inside a tile
  is left out of that tile's labels.

Slides (or patients) never straddle the train/val split. Tiles are numbered and drawn from a random
generator seeded by (seed, split, number), so a rerun after a crash rebuilds exactly the missing
tiles and the same options always give the same data set.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.config import opt
from glomssl.errors import GlomsslError


@dataclass
class DetectDataConfig:
    """Options of ``glomssl detect data``."""

    out: str = ""
    crops: str | None = None  # manifest of glomerulus crops: image, mask[, slide]
    fields: str | None = None  # manifest of large annotated fields: image, mask[, slide]
    fields_mpp: float | None = opt(None, gt=0)  # um/px of the fields
    n: int = opt(1000, ge=1)  # mosaics to make from the crops
    val_fraction: float = opt(0.15, gt=0, lt=1)  # share of slides held out for validation
    size: int = opt(384, ge=64, le=4096)  # tile side in working pixels
    mpp: float = opt(2.0, gt=0, le=64)  # working resolution (um/px) of the detector
    glom_um: list[float] = opt(factory=lambda: [100.0, 250.0], gt=0)  # glomerulus diameters (um)
    crop_mpp: float | None = opt(None, gt=0)  # um/px of the crops when known (else glom_um)
    per_tile: list[int] = opt(factory=lambda: [0, 5], ge=0, le=50)  # glomeruli per mosaic
    glass: float = opt(0.4, ge=0, le=1)  # share of mosaics with a tissue edge and glass
    negatives: list[int] = opt(factory=lambda: [1, 4], ge=0, le=50)  # distractor pastes per mosaic
    poisson: float = opt(0.7, ge=0, le=1)  # share of pastes blended by Poisson editing
    seed: int = opt(0, ge=0)  # draws of the mosaics
    split_seed: int = opt(0, ge=0)  # draw of the held-out slides (keep it to compare runs)
    quiet: bool = False

    def validate(self) -> None:
        if not self.out:
            raise GlomsslError("--out is required: the folder for the training set")
        if not self.crops and not self.fields:
            raise GlomsslError(
                "give --crops MANIFEST and/or --fields MANIFEST (image,mask[,slide])"
            )
        if self.fields and self.fields_mpp is None:
            raise GlomsslError("--fields needs --fields-mpp: the fields' microns per pixel")
        if len(self.glom_um) != 2 or self.glom_um[0] > self.glom_um[1]:
            raise GlomsslError(f"--glom-um must be MIN,MAX microns, got {self.glom_um}")
        if len(self.negatives) != 2 or self.negatives[0] > self.negatives[1]:
            raise GlomsslError(f"--negatives must be MIN,MAX pastes, got {self.negatives}")
        if len(self.per_tile) != 2 or self.per_tile[0] > self.per_tile[1]:
            raise GlomsslError(f"--per-tile must be MIN,MAX glomeruli, got {self.per_tile}")
        if self.size % 32:
            raise GlomsslError(
                f"--size must be a multiple of 32 (the detector's stride), got {self.size}"
            )


def split_groups(groups: list[str], val_fraction: float, seed: int) -> set[str]:
    """The held-out groups: a seeded draw of about ``val_fraction`` of them (at least one)."""
    uniq = sorted(set(groups))
    if len(uniq) < 2:
        raise GlomsslError(
            f"the training data come from {len(uniq)} slide(s); a held-out split needs at least two "
            "(add a slide column, or more slides)"
        )
    rng = np.random.default_rng(seed)
    k = min(len(uniq) - 1, max(1, int(round(val_fraction * len(uniq)))))
    return set(rng.permutation(uniq)[:k].tolist())


def _tile_done(root: Path, split: str, name: str) -> bool:
    return (root / "labels" / split / f"{name}.txt").is_file() and (
        root / "images" / split / f"{name}.jpg"
    ).is_file()


def _progress(cfg: DetectDataConfig, what: str, done: int, total: int, t0: float) -> None:
    import sys

    from glomssl.engine import progress_line

    if not cfg.quiet and (done == total or done % 50 == 0):
        print(progress_line(what, done, total, t0), file=sys.stderr, flush=True)


def build_mosaics(cfg: DetectDataConfig, root: Path, val_groups: set[str]) -> dict[str, Any]:
    """Write ``cfg.n`` mosaics (train and val by slide) from the crops."""
    from glomssl.detect.dataset import read_pairs, write_sample
    from glomssl.detect.mosaic import MosaicMaker, load_crops

    assert cfg.crops is not None
    crops, skipped = load_crops(read_pairs(cfg.crops, "--crops"))
    if not crops:
        first = f" (first: {skipped[0]['reason']})" if skipped else ""
        raise GlomsslError(
            f"--crops {cfg.crops}: no readable crop with a non-empty mask{first}; fix the images "
            "and masks it lists"
        )
    by_split: dict[str, dict[str, list[int]]] = {
        "train": defaultdict(list),
        "val": defaultdict(list),
    }
    for i, c in enumerate(crops):
        by_split["val" if c.group in val_groups else "train"][c.group].append(i)
    if not by_split["train"] or not by_split["val"]:
        raise GlomsslError("--crops: the slide split left no crop on one side; add slides")
    n_val = max(1, int(round(cfg.n * cfg.val_fraction)))
    makers = {
        split: MosaicMaker(
            crops,
            by_split[split],
            cfg.size,
            cfg.mpp,
            (cfg.glom_um[0], cfg.glom_um[1]),
            (cfg.per_tile[0], cfg.per_tile[1]),
            cfg.glass,
            cfg.crop_mpp,
            seed=cfg.seed * 2 + (split == "val"),
            negatives=(cfg.negatives[0], cfg.negatives[1]),
            poisson=cfg.poisson,
        )
        for split in ("train", "val")
    }
    plan = [("val", i) for i in range(n_val)] + [("train", i) for i in range(cfg.n - n_val)]
    t0 = time.perf_counter()
    for done, (split, i) in enumerate(plan, 1):
        name = f"mosaic{i:06d}"
        if not _tile_done(root, split, name):
            rng = np.random.default_rng([cfg.seed, 0 if split == "train" else 1, i])
            img, boxes = makers[split].make(rng)
            write_sample(root, split, name, img, boxes)
        _progress(cfg, "detect data: mosaics", done, len(plan), t0)
    return {
        "mosaics": {"train": cfg.n - n_val, "val": n_val},
        "crops": {s: sum(len(v) for v in g.values()) for s, g in by_split.items()},
        "skipped": skipped,
    }


def _instances(mask: np.ndarray) -> list[np.ndarray]:
    """Boolean masks of the glomeruli of a field mask (ids if several, else connected components)."""
    import cv2

    ids = [v for v in np.unique(mask) if v not in (0, 255)]
    if len(ids) > 1:
        return [mask == v for v in ids]
    n, lab = cv2.connectedComponents((mask > 0).astype(np.uint8))
    return [lab == k for k in range(1, n)]


def build_fields(cfg: DetectDataConfig, root: Path, val_groups: set[str]) -> dict[str, Any]:
    """Cut the annotated fields, resampled to the working mpp, into labelled tiles."""
    import cv2

    from glomssl.data.images import load_rgb
    from glomssl.data.masks import read_mask
    from glomssl.detect.dataset import read_pairs, write_sample
    from glomssl.detect.mosaic import MIN_VISIBLE

    assert cfg.fields is not None and cfg.fields_mpp is not None
    pairs = read_pairs(cfg.fields, "--fields")
    f = cfg.fields_mpp / cfg.mpp
    counts = {"train": 0, "val": 0}
    skipped: list[dict[str, str]] = []
    t0 = time.perf_counter()
    for k, p in enumerate(pairs):
        split = "val" if p.group in val_groups else "train"
        try:
            rgb = np.asarray(load_rgb(p.image), dtype=np.uint8)
            mask = read_mask(p.mask, size=(rgb.shape[1], rgb.shape[0]))
        except GlomsslError as exc:
            skipped.append({"path": str(p.image), "reason": str(exc)})
            continue
        w, h = max(1, round(rgb.shape[1] * f)), max(1, round(rgb.shape[0] * f))
        rgb = np.asarray(cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA), dtype=np.uint8)
        inst = [
            cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
            for m in _instances(mask)
        ]
        s = cfg.size
        pad = np.full((max(h, s), max(w, s), 3), 255, np.uint8)
        pad[:h, :w] = rgb
        ys = sorted({*range(0, max(1, h - s + 1), s // 2), max(0, h - s)})
        xs = sorted({*range(0, max(1, w - s + 1), s // 2), max(0, w - s)})
        for ty in ys:
            for tx in xs:
                boxes = []
                for m in inst:
                    sub = m[ty : ty + s, tx : tx + s]
                    area = int(m.sum())
                    if area == 0 or sub.sum() < MIN_VISIBLE * area:
                        continue
                    yy, xx = np.nonzero(sub)
                    boxes.append((xx.min(), yy.min(), xx.max() + 1, yy.max() + 1))
                name = f"field{k:05d}_{ty:05d}_{tx:05d}"
                tile = pad[ty : ty + s, tx : tx + s]
                write_sample(root, split, name, tile, np.asarray(boxes, np.float64).reshape(-1, 4))
                counts[split] += 1
        _progress(cfg, "detect data: fields", k + 1, len(pairs), t0)
    if len(skipped) == len(pairs):  # nothing usable: never a "complete" set without tiles
        raise GlomsslError(
            f"--fields {cfg.fields}: none of its {len(pairs)} fields is usable (first: "
            f"{skipped[0]['reason']}); fix the images and masks it lists"
        )
    return {"field_tiles": counts, "skipped": skipped}


def run_data(cfg: DetectDataConfig) -> dict[str, Any]:
    """Build (or finish building) the training set in ``cfg.out``; return a summary."""
    import json

    from glomssl.config import to_dict
    from glomssl.data.sources import write_skipped
    from glomssl.detect.dataset import DATASET_FILE, read_pairs, write_descriptor
    from glomssl.fsutil import ensure_writable_dir

    options = to_dict(cfg)
    options.pop("quiet", None)
    # the manifests are read (and the split drawn) before anything is written or even made, so a
    # wrong --crops or --fields never leaves an --out behind, least of all one that refuses the
    # corrected command
    groups: list[str] = []
    if cfg.crops:
        groups += [p.group for p in read_pairs(cfg.crops, "--crops")]
    if cfg.fields:
        groups += [p.group for p in read_pairs(cfg.fields, "--fields")]
    val_groups = split_groups(groups, cfg.val_fraction, cfg.split_seed)
    root = ensure_writable_dir(cfg.out)
    desc = root / DATASET_FILE
    if desc.is_file():
        try:
            old = json.loads(desc.read_text(encoding="utf-8")).get("options")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            old = None
        # a build that stopped before its first tile (e.g. no usable crop) holds nothing to mix
        if old != options and (root / "images").exists():
            raise GlomsslError(
                f"--out {root} holds a training set built with other options; use another --out"
            )
    elif any(root.iterdir()):
        raise GlomsslError(f"--out {root} is not empty; pass a new folder for the training set")
    # the options go down first: a rerun after a crash finishes this build, never mixes two
    write_descriptor(
        root, {"mpp": cfg.mpp, "size": cfg.size, "options": options, "complete": False}
    )
    summary: dict[str, Any] = {"out": str(root), "val_groups": sorted(val_groups)}
    skipped: list[dict[str, str]] = []
    if cfg.crops:
        s = build_mosaics(cfg, root, val_groups)
        skipped += s.pop("skipped")
        summary.update(s)
    if cfg.fields:
        s = build_fields(cfg, root, val_groups)
        skipped += s.pop("skipped")
        summary.update(s)
    write_skipped(root, skipped)
    summary["skipped"] = len(skipped)
    write_descriptor(
        root,
        {
            "mpp": cfg.mpp,
            "size": cfg.size,
            "options": options,
            "complete": True,
            "summary": summary,
        },
    )
    return summary
