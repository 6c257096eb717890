"""Benchmark figure separation: F1 at IoU 0.5 of each method (classic, yolo, hybrid, guided; auto is
one of them), and figures per second.

Real figures: ../shared/data/compound_figures/exsclaim (14 figures, 78 boxes; read-only, test use).
Synthetic figures: seed 99 of glomssl's training generator (never a training seed), drawn panels only
unless --images is given. The held-out layout generator that decides the default is scored by
benchmarks/separator_heldout.py. Speed: figures resized to a long side
of 512 px, separated in batches of 8 on this machine's CPU (end to end: pixels in, boxes out).
``classic`` is the default splitter, ``classic_v1`` its first version, ``classic_seams`` the
``--seams`` setting.

Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

from glomssl.mining.classic import ClassicParams
from glomssl.mining.separate import AUTO_METHOD, Separator, prf1
from glomssl.mining.synth import Fonts, load_pool, make_figure

ROOT = Path(__file__).resolve().parents[1]


def real_set(shared: Path) -> tuple[list[Image.Image], list[list[tuple[int, int, int, int]]]]:
    """The 14 exsclaim figures, read as ``glomssl separate`` reads files (JPEG ones known as JPEG)."""
    from glomssl.mining.synth.heldout import exsclaim_set

    return exsclaim_set(shared)


def synth_set(
    n: int, seed: int, images: list[str]
) -> tuple[list[Image.Image], list[list[tuple[int, int, int, int]]]]:
    fonts = Fonts()
    pool = load_pool(images, 2000, seed) if images else []
    figs, truths = [], []
    for i in range(n):
        fig, boxes = make_figure(np.random.default_rng([seed, i]), fonts, pool)
        figs.append(fig)
        truths.append(boxes)
    return figs, truths


def score(sep: Separator, figs: list[Image.Image], truths: list) -> dict:
    preds = []
    for start in range(0, len(figs), 8):
        preds += [[b for b, _ in p] for p in sep.split(figs[start : start + 8])]
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in prf1(preds, truths).items()}


def speed(sep: Separator, figs: list[Image.Image], repeats: int = 2) -> float:
    small = []
    for f in figs:
        s = 512 / max(f.size)
        small.append(f.resize((round(f.size[0] * s), round(f.size[1] * s))))
    sep.split(small[:8])  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        for start in range(0, len(small), 8):
            sep.split(small[start : start + 8])
    return repeats * len(small) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    default_shared = os.environ.get("GLOMSSL_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--shared-data", default=default_shared)
    ap.add_argument("--weights", default=None, help="detector weights [shipped]")
    ap.add_argument("--n-synth", type=int, default=100)
    ap.add_argument("--synth-seed", type=int, default=99)
    ap.add_argument("--images", action="append", default=[], help="panel image folder (repeat)")
    ap.add_argument("--imgsz", type=int, default=0)
    ap.add_argument("--skip-real", action="store_true", help="leave the real figures out")
    ap.add_argument("--device", default="cpu", help="detector device: cpu or cuda [cpu]")
    args = ap.parse_args()

    import torch

    seps = {
        "classic": Separator("classic"),
        "classic_v1": Separator("classic", classic=ClassicParams.v1()),
        "classic_seams": Separator("classic", classic=ClassicParams.touching()),
        "yolo": Separator("yolo", weights=args.weights, imgsz=args.imgsz, device=args.device),
        "hybrid": Separator("hybrid", weights=args.weights, imgsz=args.imgsz, device=args.device),
        "guided": Separator("guided", weights=args.weights, imgsz=args.imgsz, device=args.device),
    }
    result: dict = {
        "benchmark": "separate",
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, torch threads {torch.get_num_threads()}",
        "imgsz": seps["yolo"].imgsz,
        "auto": AUTO_METHOD,
        "weights": args.weights or "shipped",
        "device": args.device,
    }
    shared = Path(args.shared_data)
    synth = synth_set(args.n_synth, args.synth_seed, args.images)
    if args.skip_real:
        result["real"] = "skipped: --skip-real"
    elif (shared / "compound_figures" / "exsclaim").is_dir():
        real = real_set(shared)
        for name, sep in seps.items():
            result[f"real_{name}"] = score(sep, *real)
    else:
        result["real"] = "skipped: shared data absent"
    for name, sep in seps.items():
        result[f"synth_{name}"] = score(sep, *synth)
    for name, sep in seps.items():
        result[f"fig_per_s_512_{name}"] = round(speed(sep, synth[0][:48]), 2)
    result["n_synth"] = args.n_synth
    print(json.dumps(result))


if __name__ == "__main__":
    main()
