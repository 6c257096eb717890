"""One-class re-scoring of glomerulus detector boxes (docs/experiments/detector.md, fifth session).

Each detector box is scored again by how much it looks like real glomerulus crops: a square on the
box's centre (side: its longer side, reflected at the image's edge) is embedded at 64 px by an
encoder from `glomssl pretrain`; its glomerulus-likeness is the mean cosine similarity to its 5
nearest train-crop embeddings, calibrated as the share of val crops that score no higher; the new
score is sqrt(detector score x that share). Threshold: best F1 on the val mosaics, per arm.

Inputs: a data folder of `benchmarks/detect_realdata.py --data-only` (val and test mosaics), folders of
the train and val slides' crop images, and one or more encoder runs. Prints ONE JSON line with
precision, recall and AP50 per arm on the val mosaics, the test mosaics and the 12 aidpath fields.

    python benchmarks/detect_realdata.py --out W --n 1000 --n-test 200 --size 320 --seed 2 --data-only
    glomssl pretrain --method vicreg --data TRAIN_CROPS --out W/vicreg --image-size 64 --batch-size 64 --max-steps 600
    glomssl pretrain --method vicreg --data TRAIN_CROPS --out W/random --image-size 64 --max-steps 0
    python benchmarks/detect_rescore.py --data W/data --train-crops TRAIN_CROPS --val-crops VAL_CROPS \\
        --encoder vicreg=W/vicreg --encoder random=W/random
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from detect_realdata import aidpath_fields, detect_field, shared_dir  # type: ignore[import-not-found]

K, SIZE = 5, 64


def box_crops(img: np.ndarray, boxes: np.ndarray) -> torch.Tensor:
    """(N, 3, 64, 64) squares on each box's centre, side = the box's longer side."""
    import cv2

    out = []
    h, w = img.shape[:2]
    for x0, y0, x1, y1 in boxes:
        side = max(x1 - x0, y1 - y0, 4.0)
        a, b, s = round((x0 + x1 - side) / 2), round((y0 + y1 - side) / 2), round(side)
        pad = max(0, -a, -b, a + s - w, b + s - h)
        im = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REFLECT_101) if pad else img
        c = cv2.resize(im[b + pad : b + pad + s, a + pad : a + pad + s], (SIZE, SIZE),
                       interpolation=cv2.INTER_AREA)  # fmt: skip
        out.append(torch.from_numpy(c).permute(2, 0, 1).float() / 255)
    return torch.stack(out) if out else torch.zeros(0, 3, SIZE, SIZE)


def unit(z: np.ndarray) -> np.ndarray:
    return np.asarray(z / np.linalg.norm(z, axis=1, keepdims=True).clip(1e-8), dtype=np.float32)


def likeness(z: np.ndarray, bank: np.ndarray) -> np.ndarray:
    return np.sort(z @ bank.T, axis=1)[:, -K:].mean(axis=1) if len(z) else np.zeros(0)


def main() -> None:
    from glomssl.data.images import load_rgb
    from glomssl.detect.evaluate import best_f1_threshold, labelled_tiles, predict_files
    from glomssl.detect.geometry import detection_metrics
    from glomssl.detect.model import load_detector
    from glomssl.models.encoder import load_backbone
    from glomssl.ssl.embed import embed_paths

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="detect data folder with val and test mosaics")
    ap.add_argument("--train-crops", required=True)
    ap.add_argument("--val-crops", required=True)
    ap.add_argument("--encoder", action="append", default=[], help="NAME=RUN (repeat)")
    ap.add_argument("--weights", default=None, help="detector weights [shipped]")
    ap.add_argument("--shared-data", default=None)
    args = ap.parse_args()
    det = load_detector(args.weights, "cpu")
    sets: dict[str, Any] = {}
    for split in ("val", "test"):
        tiles = labelled_tiles(args.data, split)
        imgs = [np.asarray(load_rgb(t[0]), dtype=np.uint8) for t in tiles]
        sets[split] = (imgs, predict_files(det, [t[0] for t in tiles]), [t[1] for t in tiles])
    fields = aidpath_fields(shared_dir(args.shared_data))
    sets["aidpath"] = (
        [np.asarray(load_rgb(f), dtype=np.uint8) for f, _ in fields],
        [detect_field(det, f, 0.5) for f, _ in fields],
        [g for _, g in fields],
    )
    arms: dict[str, str | None] = {"detector": None}
    arms.update(dict(e.split("=", 1) for e in args.encoder))
    result: dict[str, Any] = {"benchmark": "detect_rescore", "k": K, "size": SIZE}
    for arm, run in arms.items():
        scored = {k: v[1] for k, v in sets.items()}
        if run is not None:
            enc, _ = load_backbone(run, device="cpu")
            enc.eval()
            crops = [sorted(Path(d).glob("*.png")) for d in (args.train_crops, args.val_crops)]
            bank, val = (unit(embed_paths(enc, c, SIZE)[0]) for c in crops)
            calib = np.sort(likeness(val, bank))
            with torch.no_grad():
                for k, (imgs, preds, _) in sets.items():
                    scored[k] = []
                    for img, (boxes, scores) in zip(imgs, preds):
                        z = (
                            unit(enc(box_crops(img, boxes)).numpy())
                            if len(boxes)
                            else np.zeros((0, 1))
                        )
                        p = np.searchsorted(calib, likeness(z, bank), side="right") / len(calib)
                        scored[k].append((boxes, np.sqrt(np.asarray(scores) * p)))
        thr, _ = best_f1_threshold(scored["val"], sets["val"][2])
        result[arm] = {"conf": thr}
        for k in ("val", "test", "aidpath"):
            m = detection_metrics([(p[0], p[1], g) for p, g in zip(scored[k], sets[k][2])], thr)
            result[arm][k] = {n: round(v, 4) if isinstance(v, float) else v for n, v in m.items()}
        print(arm, json.dumps(result[arm]), file=sys.stderr, flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
