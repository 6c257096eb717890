"""Why the glomerulus detector misses on the real aidpath fields: localisation or ranking?

For every glomerulus of the 12 aidpath fields (../shared/data/aidpath, ~0.5 um/px) this runs the
detector through the slide pipeline at a near-zero threshold and reports:

- ``best_iou``: the best IoU of any detection with it (whatever its score): can the detector place a
  box on it at all?
- ``score_at_iou50``: the highest score among detections with IoU >= 0.5 (0: none): how it ranks;
- ``edge``: whether the glomerulus touches the field's border (cut by the field), and its box size;
- per field, the highest score of a detection that matches no glomerulus (IoU < 0.5 with all).

The summary counts glomeruli found at the detector's threshold, glomeruli with a box at IoU >= 0.5 at
any score (the most any re-scoring of these boxes could reach), and false positives scored above the
median matched score.

    python benchmarks/detect_field_diagnosis.py [--weights W] [--mpp 0.5]

Prints ONE JSON line. Needs ../shared/data (or GLOMSSL_SHARED_DATA).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from detect_realdata import aidpath_fields, detect_field, shared_dir  # type: ignore[import-not-found]


def main() -> None:
    from glomssl.detect.geometry import box_iou
    from glomssl.detect.model import load_detector

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared-data", default=None)
    ap.add_argument("--weights", default=None, help="detector weights [shipped]")
    ap.add_argument("--mpp", type=float, default=0.5, help="the fields' microns per pixel [0.5]")
    args = ap.parse_args()
    det = load_detector(args.weights)
    rows, false_scores = [], []
    for path, gts in aidpath_fields(shared_dir(args.shared_data)):
        boxes, scores = detect_field(det, path, args.mpp)
        ious = box_iou(gts, boxes)  # (G, D)
        matched = (ious >= 0.5).any(axis=0) if len(gts) else np.zeros(len(boxes), bool)
        false_scores += [float(s) for s in scores[~matched]]
        for g, row in zip(gts, ious):
            hit = row >= 0.5
            rows.append(
                {
                    "field": path.name,
                    "box": [int(v) for v in g],
                    "size": [int(g[2] - g[0]), int(g[3] - g[1])],
                    "edge": bool(g[0] <= 0 or g[1] <= 0 or g[2] >= 1024 or g[3] >= 1024),
                    "best_iou": round(float(row.max()) if row.size else 0.0, 3),
                    "score_at_iou50": round(float(scores[hit].max()) if hit.any() else 0.0, 4),
                }
            )
    matched_scores = [r["score_at_iou50"] for r in rows if r["score_at_iou50"] > 0]
    median = float(np.median(matched_scores)) if matched_scores else 1.0
    print(
        json.dumps(
            {
                "benchmark": "detect_field_diagnosis",
                "weights": args.weights or "shipped",
                "threshold": det.conf,
                "glomeruli": len(rows),
                "touching_the_field_edge": sum(r["edge"] for r in rows),
                "found_at_threshold": sum(r["score_at_iou50"] >= det.conf for r in rows),
                "boxed_at_any_score": len(matched_scores),
                "median_matched_score": round(median, 4),
                "false_positives_above_that": sum(s > median for s in false_scores),
                "false_positives_above_threshold": sum(s >= det.conf for s in false_scores),
                "glomeruli_detail": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
