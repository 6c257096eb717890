"""Curation on real data: what the statistics rules and the learned scorer keep.

Sets (../shared/data, or $GLOMSSL_SHARED_DATA):

* must keep: all 676 PAS glomerulus crops, the 12 PAS whole-slide tiles (aidpath), the 3 H&E/IHC
  images, 60 random 224 px patches of the H&E slide;
* must drop: the 78 boxed panels of the 14 exsclaim compound figures (materials science: charts,
  schematics, electron micrographs, false-colour maps; none is tissue), and the panels the shipped
  YOLO separator cuts from the same figures (``--yolo``, about 10 s more).

Rules: the ``classify_stats`` verdict, as ``glomssl curate`` applies it (no scorer).
Scorer: ``curate train`` on glomeruli [::6] vs slide patches and histology crops (the negatives of
tests/mining/test_scorer.py, without drawn charts), once with ``drawn_negatives=0`` and once with
``drawn_negatives=N``; each scored alone (rules off) on the unseen glomeruli [1::24], the exsclaim
panels, and drawn panels of another seed. Trivial baselines: keep everything (rules) and the
majority class (scorer accuracy).

Prints ONE JSON line. Usage: python benchmarks/curate_realdata.py [--drawn 120] [--yolo]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    env = os.environ.get("GLOMSSL_SHARED_DATA")
    d = Path(env) if env else ROOT.parent / "shared" / "data"
    if not d.is_dir():
        sys.exit(f"real data not found at {d}; set GLOMSSL_SHARED_DATA")
    return d


def exsclaim_panels(d: Path) -> list[Any]:
    from glomssl.data.images import load_rgb

    root = d / "compound_figures" / "exsclaim"
    out = []
    for fig in json.loads((root / "boxes.json").read_text()):
        im = load_rgb(root / "images" / fig["file"])
        out += [im.crop((b["x0"], b["y0"], b["x1"], b["y1"])) for b in fig["boxes"]]
    return out


def yolo_panels(d: Path, tmp: Path) -> list[Any]:
    from glomssl.data.images import load_rgb
    from glomssl.manifest import read_manifest, resolve
    from glomssl.mining.separate import SeparateConfig, run_separate

    src = d / "compound_figures" / "exsclaim" / "images"
    run_separate(SeparateConfig(input=str(src), out=str(tmp / "sep"), quiet=True))
    m = tmp / "sep" / "manifest.jsonl"
    return [load_rgb(resolve(m, r)) for r in read_manifest(m)]


def verdict(im: Any) -> str | None:
    from PIL import Image

    from glomssl.mining.curate import CurateConfig
    from glomssl.mining.panel_stats import STATS_SIDE, classify_stats, image_stats

    thumb = im.copy()
    thumb.thumbnail((STATS_SIDE, STATS_SIDE), Image.Resampling.BOX)
    return classify_stats(image_stats(np.asarray(thumb)), im.width, im.height, CurateConfig())[0]


def kept(images: list[Any]) -> dict[str, int]:
    return {"kept": sum(verdict(im) is None for im in images), "of": len(images)}


def train_sets(d: Path, tmp: Path) -> tuple[Path, Path]:
    from glomssl.data.images import load_rgb
    from glomssl.wsi import SlidePatchSampler

    pos, neg = tmp / "pos", tmp / "neg"
    pos.mkdir()
    neg.mkdir()
    for f in sorted((d / "glomeruli" / "images").glob("*.png"))[::6]:
        (pos / f.name).symlink_to(f)
    rng = np.random.default_rng(0)
    sampler = SlidePatchSampler([d / "wsi" / "cmu_small_region.svs"], patch_size=224)
    for k in range(60):
        sampler.sample(rng).save(neg / f"wsi{k:03d}.png")
    for f in sorted((d / "histology").glob("*.*")):
        im = load_rgb(f)
        for k in range(6):
            x, y = int(rng.integers(0, im.width - 160)), int(rng.integers(0, im.height - 160))
            im.crop((x, y, x + 160, y + 160)).save(neg / f"{f.stem}{k}.png")
    return pos, neg


def scorer_report(pos: Path, neg: Path, drawn: int, out: Path, checks: dict) -> dict[str, Any]:
    from glomssl.mining.scorer import ScorerTrainConfig, load_scorer, run_train_scorer

    s = run_train_scorer(
        ScorerTrainConfig(
            positives=str(pos), negatives=str(neg), out=str(out), drawn_negatives=drawn, quiet=True
        )
    )
    scorer = load_scorer(out)
    rep: dict[str, Any] = {"drawn_negatives": drawn, "heldout": s["heldout"]}
    for name, images in checks.items():
        scores = np.array([scorer.score_image(im) for im in images])
        rep[f"{name}_scored_ge_0.7"] = f"{int((scores >= 0.7).sum())}/{len(scores)}"
    return rep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drawn", type=int, default=120, help="drawn negatives of the second scorer")
    ap.add_argument("--yolo", action="store_true", help="also the shipped YOLO separator's panels")
    args = ap.parse_args()
    from glomssl.data.images import load_rgb
    from glomssl.mining.drawn_panels import drawn_panels
    from glomssl.wsi import SlidePatchSampler

    t0 = time.perf_counter()
    d = data_dir()
    glom = sorted((d / "glomeruli" / "images").glob("*.png"))
    rng = np.random.default_rng(1)
    sampler = SlidePatchSampler([d / "wsi" / "cmu_small_region.svs"], patch_size=224)
    tissue = {
        "glomeruli": [load_rgb(f) for f in glom],
        "aidpath_tiles": [load_rgb(f) for f in sorted((d / "aidpath" / "images").glob("*.png"))],
        "he_ihc": [
            load_rgb(d / "histology" / n)
            for n in ("he_stardist.jpg", "he_tiatoolbox_target.png", "ihc_colon.png")
        ],
        "he_slide_patches": [sampler.sample(rng) for _ in range(60)],
    }
    other = {"exsclaim_boxes": exsclaim_panels(d)}
    with tempfile.TemporaryDirectory() as tmp:
        if args.yolo:
            other["exsclaim_yolo_panels"] = yolo_panels(d, Path(tmp))
        result: dict[str, Any] = {"benchmark": "curate_realdata"}
        result["rules_keep_tissue"] = {k: kept(v) for k, v in tissue.items()}
        result["rules_keep_non_tissue"] = {k: kept(v) for k, v in other.items()}
        pos, neg = train_sets(d, Path(tmp))
        checks = {
            "unseen_glomeruli": [load_rgb(f) for f in glom[1::24]],
            **other,
            "drawn_seed99": [im for _, im in drawn_panels(60, seed=99)],
        }
        result["scorer"] = [
            scorer_report(pos, neg, n, Path(tmp) / f"s{n}.json", checks) for n in (0, args.drawn)
        ]
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
