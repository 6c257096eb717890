"""Build the folders of panel images that the panel detector's training recipe passes to
``glomssl separator synth --images`` (see glomssl/weights/MODEL_CARD.md).

- ``OUT/glomeruli_train``: links to the glomerulus crops of centres SAS and SESCAM (353 of 676). The
  crops of centre VUHSK are kept out: the held-out evaluation (benchmarks/separator_heldout.py) uses them.
- ``OUT/histology``: links to the 5 images of ../shared/data/histology.
- ``OUT/wsi_regions``: 41 random 200-700 px regions of ../shared/data/wsi/cmu_small_region.svs (read
  with tiffslide at level 0, numpy seed 0; regions with mean intensity > 225, mostly glass, skipped).

The glomerulus crops are CC BY-NC-SA 4.0: used as training content only, never shipped.
Prints ONE JSON line (counts).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def link_all(files: list[Path], folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = folder / f.name
        if not target.exists():
            os.symlink(f.resolve(), target)
    return len(files)


def wsi_regions(svs: Path, folder: Path, n: int = 41, seed: int = 0) -> int:
    import tiffslide

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    slide = tiffslide.TiffSlide(str(svs))
    w, h = slide.dimensions
    done = tries = 0
    while done < n and tries < 20 * n:
        tries += 1
        size = int(rng.integers(200, 701))
        x, y = int(rng.integers(0, w - size)), int(rng.integers(0, h - size))
        region = slide.read_region((x, y), 0, (size, size)).convert("RGB")
        if np.asarray(region).mean() > 225:
            continue
        region.save(folder / f"region_{done:03d}.png")
        done += 1
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    default_shared = os.environ.get("GLOMSSL_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--shared-data", default=default_shared)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    shared, out = Path(args.shared_data), Path(args.out)
    with open(shared / "glomeruli" / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    train = [shared / "glomeruli" / r["image"] for r in rows if r["centre"] in ("SAS", "SESCAM")]
    counts = {
        "glomeruli_train": link_all(train, out / "glomeruli_train"),
        "histology": link_all(sorted((shared / "histology").glob("*.*")), out / "histology"),
        "wsi_regions": wsi_regions(shared / "wsi" / "cmu_small_region.svs", out / "wsi_regions"),
    }
    print(json.dumps({"benchmark": "separator_pool", "out": str(out), **counts}))


if __name__ == "__main__":
    main()
