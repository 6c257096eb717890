"""Glomerulus detector trained on mosaics of real crops; scored on unseen slides and real fields.

Data: ../shared/data/glomeruli (676 PAS crops with masks from 21 slides) and ../shared/data/aidpath
(12 real 1024-px PAS fields at ~0.5 um/px with 13 glomeruli, many cut by the field's edge).

1. Slides are split three ways with a fixed seed: *test* slides (~20%, never seen: their crops only
   make the held-out mosaics), then ``glomssl detect data`` splits the rest into train and *val*
   slides (its ``--val-fraction``; val picks the score threshold, best F1).
2. ``glomssl detect train`` from random init on the train mosaics (CPU).
3. Scores at box IoU 0.5 -- precision and recall at the detector's own threshold, and AP50 -- on
   (a) mosaics of the test slides and (b) the 12 aidpath fields, run through the slide pipeline
   (``open_any`` with mpp 0.5, tiles at the detector's working mpp, seam merging): what a user gets.
4. Baselines on the same images: *Otsu blobs* (each connected tissue component is a detection) and a
   *centred box* (one 160-um box in the middle of every image).

Prints ONE JSON line (also written to OUT/result.json). ``--weights W`` scores existing weights
without training (e.g. the shipped ones).

    python benchmarks/detect_realdata.py --out /tmp/detbench            # train + score (~1.5 h CPU)
    python benchmarks/detect_realdata.py --out /tmp/detbench --weights glomssl/weights/glomerulus_detector.safetensors
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def shared_dir(arg: str | None) -> Path:
    d = Path(arg or os.environ.get("GLOMSSL_SHARED_DATA") or ROOT.parent / "shared" / "data")
    if not (d / "glomeruli" / "labels.csv").is_file():
        sys.exit(f"real data not found at {d}; pass --shared-data or set GLOMSSL_SHARED_DATA")
    return d


def write_manifest(path: Path, rows: list[dict[str, str]], base: Path) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "mask", "slide"])
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    "image": str(base / r["image"]),
                    "mask": str(base / r["mask"]),
                    "slide": r["slide"],
                }
            )


def test_mosaics(
    manifest: Path, root: Path, n: int, size: int, mpp: float, seed: int, cfg: Any
) -> None:
    """Mosaics of the test slides, in a data-set folder's ``test`` split (same generator)."""
    from glomssl.detect.dataset import read_pairs, write_sample
    from glomssl.detect.mosaic import MosaicMaker, load_crops

    crops, _ = load_crops(read_pairs(manifest))
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(crops):
        by_group[c.group].append(i)
    maker = MosaicMaker(
        crops,
        dict(by_group),
        size,
        mpp,
        seed=seed * 2 + 101,
        negatives=(cfg.negatives[0], cfg.negatives[1]),
        poisson=cfg.poisson,
    )
    for i in range(n):
        name = f"mosaic{i:06d}"
        if (root / "labels" / "test" / f"{name}.txt").is_file():
            continue
        img, boxes = maker.make(np.random.default_rng([seed, 2, i]))
        write_sample(root, "test", name, img, boxes)


def aidpath_fields(d: Path) -> list[tuple[Path, np.ndarray]]:
    """(image, level-0 boxes of every glomerulus: mask components) of the aidpath fields."""
    import cv2
    from PIL import Image

    out = []
    for img in sorted((d / "aidpath" / "images").glob("*.png")):
        m = np.asarray(Image.open(d / "aidpath" / "masks" / img.name).convert("RGB"))[..., 0] > 127
        n, _, st, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8))
        boxes = [(s[0], s[1], s[0] + s[2], s[1] + s[3]) for s in st[1:n]]
        out.append((img, np.asarray(boxes, np.float64).reshape(-1, 4)))
    return out


def detect_field(det: Any, path: Path, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 boxes and scores of one field through the slide pipeline (low threshold)."""
    from glomssl.detect.slide import detect_tiles, merge_rows
    from glomssl.tiling import tile_grid, working_level
    from glomssl.wsi import open_any, tissue_mask

    slide = open_any(path, mpp=mpp)
    work = working_level(slide, mpp=det.mpp)
    tissue, down = tissue_mask(slide)
    tiles = tile_grid(slide, work, 1024, 256, tissue=tissue, tissue_down=down)
    rows = detect_tiles(slide, work, tiles, lambda b: det.predict(b, conf=0.001))
    g = merge_rows(rows, work, 0.35)
    slide.close()
    return g.boxes, g.scores


def otsu_blobs(img: np.ndarray) -> np.ndarray:
    """Baseline: every connected tissue component (Otsu on saturation, opened) is a detection."""
    import cv2

    sat = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[..., 1]
    _, m = cv2.threshold(sat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    n, _, st, _ = cv2.connectedComponentsWithStats(m)
    keep = [s for s in st[1:n] if s[4] >= 0.002 * img.shape[0] * img.shape[1]]
    return np.asarray([(s[0], s[1], s[0] + s[2], s[1] + s[3]) for s in keep], np.float64).reshape(
        -1, 4
    )


def centred_box(shape: tuple[int, ...], side: float) -> np.ndarray:
    h, w = shape[:2]
    return np.asarray([[w / 2 - side / 2, h / 2 - side / 2, w / 2 + side / 2, h / 2 + side / 2]])


def score_set(
    preds: list[tuple[np.ndarray, np.ndarray]], gts: list[np.ndarray], conf: float
) -> dict[str, Any]:
    from glomssl.detect.geometry import detection_metrics

    m = detection_metrics([(p[0], p[1], g) for p, g in zip(preds, gts)], conf)
    # NaN (no prediction at all) is written as null: the line stays strict JSON
    return {
        k: (round(v, 4) if v == v else None) if isinstance(v, float) else v for k, v in m.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shared-data", default=None)
    ap.add_argument("--weights", default=None, help="score these weights, no training")
    ap.add_argument("--n", type=int, default=1000, help="train+val mosaics")
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="mosaics and training")
    ap.add_argument("--split-seed", type=int, default=0, help="test and val slides")
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--init", default=None, help="continue from these weights")
    ap.add_argument("--data-only", action="store_true", help="build the mosaics and stop")
    ap.add_argument("--negatives", default="1,4", help="distractor pastes per mosaic (0,0: R1)")
    ap.add_argument("--poisson", type=float, default=0.7, help="Poisson-blended share (0: R1)")
    args = ap.parse_args()

    from glomssl.data.images import load_rgb
    from glomssl.detect.build import DetectDataConfig, run_data, split_groups
    from glomssl.detect.evaluate import labelled_tiles, predict_files
    from glomssl.detect.model import load_detector
    from glomssl.detect.train import DetectTrainConfig, train_glomerulus_detector

    d = shared_dir(args.shared_data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = list(csv.DictReader((d / "glomeruli" / "labels.csv").open()))
    test_slides = split_groups(
        [r["slide"] for r in rows], args.test_fraction, args.split_seed + 1000
    )
    write_manifest(
        out / "crops_trainval.csv",
        [r for r in rows if r["slide"] not in test_slides],
        d / "glomeruli",
    )
    write_manifest(
        out / "crops_test.csv", [r for r in rows if r["slide"] in test_slides], d / "glomeruli"
    )
    mpp = 2.0
    result: dict[str, Any] = {"test_slides": sorted(test_slides)}
    t0 = time.perf_counter()
    data_cfg = DetectDataConfig(
        out=str(out / "data"),
        crops=str(out / "crops_trainval.csv"),
        n=args.n,
        size=args.size,
        mpp=mpp,
        val_fraction=args.val_fraction,
        seed=args.seed,
        split_seed=args.split_seed,
        negatives=[int(v) for v in args.negatives.split(",")],
        poisson=args.poisson,
        quiet=True,
    )
    run_data(data_cfg)
    test_mosaics(
        out / "crops_test.csv", out / "data", args.n_test, args.size, mpp, args.split_seed, data_cfg
    )
    result["data_seconds"] = round(time.perf_counter() - t0, 1)
    if args.data_only:
        print(json.dumps(result))
        return
    weights = args.weights
    if weights is None:
        tr = train_glomerulus_detector(
            DetectTrainConfig(
                data=str(out / "data"),
                out=str(out / "runs"),
                epochs=args.epochs,
                imgsz=args.size,
                batch=args.batch,
                workers=args.workers,
                seed=args.seed,
                init=args.init,
                quiet=True,
            )
        )
        weights = tr["weights"]
        result["train_seconds"] = tr["train_seconds"]
        result["val_at_conf"] = tr["val"]
    det = load_detector(weights, "cpu")
    result["weights"] = str(weights)
    result["conf"] = det.conf

    test = labelled_tiles(out / "data", "test")
    preds = predict_files(det, [t[0] for t in test])
    gts = [t[1] for t in test]
    imgs = [np.asarray(load_rgb(t[0]), dtype=np.uint8) for t in test]
    side = 160 / mpp  # a typical glomerulus, 160 um
    result["mosaics_test"] = {
        "images": len(test),
        "detector": score_set(preds, gts, det.conf),
        "otsu_blobs": score_set(
            [(otsu_blobs(i), np.ones(len(otsu_blobs(i)))) for i in imgs], gts, 0.5
        ),
        "centred_box": score_set(
            [(centred_box(i.shape, side), np.ones(1)) for i in imgs], gts, 0.5
        ),
    }
    fields = aidpath_fields(d)
    t1 = time.perf_counter()
    fpreds = [detect_field(det, f, 0.5) for f, _ in fields]
    fgts = [g for _, g in fields]
    fimgs = [np.asarray(load_rgb(f), dtype=np.uint8) for f, _ in fields]
    result["aidpath"] = {
        "fields": len(fields),
        "glomeruli": int(sum(len(g) for g in fgts)),
        "seconds": round(time.perf_counter() - t1, 1),
        "detector": score_set(fpreds, fgts, det.conf),
        "otsu_blobs": score_set(
            [(otsu_blobs(i), np.ones(len(otsu_blobs(i)))) for i in fimgs], fgts, 0.5
        ),
        "centred_box": score_set(
            [(centred_box(i.shape, 160 / 0.5), np.ones(1)) for i in fimgs], fgts, 0.5
        ),
        "per_field": [
            {
                "field": f.name,
                "gt": len(g),
                "hits": int(score_set([p], [g], det.conf)["tp"]),
                "false": int(score_set([p], [g], det.conf)["fp"]),
            }
            for (f, g), p in zip(fields, fpreds)
        ],
    }
    result["target_met"] = bool(
        result["aidpath"]["detector"]["recall"] >= 0.9
        and result["aidpath"]["detector"]["precision"] >= 0.8
    )
    line = json.dumps(result, default=float)
    (out / "result.json").write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
