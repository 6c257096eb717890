"""Segmenters on real glomeruli: two partially labelled tasks, four models, three kinds of evidence.

Real multi-class glomerular masks are not public. From ../shared/data/glomeruli (676 PAS crops, 21
slides, a binary glomerulus mask each, GS/nonGS labels) this script builds two real tasks, each crop
annotated for ONE of them (half of each label's crops per task, seeded):

- ``Tuft``: the glomerulus mask;
- ``GS``: the glomerulus mask on globally sclerosed crops, an EMPTY mask on nonGS crops (the lesion
  "this glomerulus is globally sclerosed").

Whole slides are held out for testing (seeded, ~25% of the crops, at least 20 GS crops). Every model is
trained with ``glomssl finetune seg`` (its own grouped validation split inside the training slides picks
the exported weights) and scored on the test slides' crops with:

1. crop-level Dice and boundary F1 (2 px) per task, beside the two priors that saturate Dice on these
   centred crops: the all-foreground mask and a centred disk whose area is the training masks' mean;
2. for GS, Dice on the GS crops alone and the share of nonGS crops left empty (the actual decision);
3. tiled segmentation of the 12 real 1024-px aidpath fields (glomeruli 2-20% of a tile, prior ~0)
   with ``glomssl segment`` (Tuft), at a scale fixed in advance from the glomerulus sizes: 63 px across
   at the working size on the crops (76% of a 224-px crop, resized to 64) vs ~350 px on aidpath (the
   middle of its README's 250-450 px) -> 0.18.

Prints ONE JSON line; per-model results are kept in WORK/results.json (a rerun skips finished models).
Usage: ``nice python benchmarks/segment_realdata.py --work /tmp/segreal --steps 400``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

AIDPATH_SCALE = 63 / 350


def data_dir() -> Path:
    env = os.environ.get("GLOMSSL_SHARED_DATA")
    d = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not (d / "glomeruli" / "labels.csv").is_file():
        sys.exit(f"real data not found at {d}; set GLOMSSL_SHARED_DATA")
    return d


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return path


def split_slides(rows: list[dict[str, str]], seed: int, share: float = 0.25) -> set[str]:
    """Test slides: a seeded shuffle, whole slides until ``share`` of the crops (>= 20 GS crops)."""
    slides = sorted({r["slide"] for r in rows})
    for attempt in range(100):
        rng = random.Random(seed + attempt)
        order = slides[:]
        rng.shuffle(order)
        test: set[str] = set()
        for s in order:
            if sum(r["slide"] in test for r in rows) >= share * len(rows):
                break
            test.add(s)
        if sum(r["slide"] in test and r["label"] == "GS" for r in rows) >= 20:
            return test
    raise RuntimeError("no slide split with 20 GS test crops")


def build_tables(work: Path, seed: int = 0) -> dict[str, Any]:
    """train.csv / test.csv of the Tuft and GS tasks (absolute paths; nothing copied)."""
    import numpy as np
    from PIL import Image

    root = data_dir() / "glomeruli"
    rows = list(csv.DictReader(open(root / "labels.csv", encoding="utf-8")))
    work.mkdir(parents=True, exist_ok=True)
    empty = work / "empty_224.png"
    Image.fromarray(np.zeros((224, 224), np.uint8)).save(empty)
    rng = random.Random(seed)
    task_of: dict[str, str] = {}
    for label in ("GS", "nonGS"):
        names = sorted(r["image"] for r in rows if r["label"] == label)
        rng.shuffle(names)
        for i, n in enumerate(names):
            task_of[n] = "Tuft" if i % 2 == 0 else "GS"
    test_slides = split_slides(rows, seed)
    out: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for r in rows:
        task = task_of[r["image"]]
        if task == "Tuft" or r["label"] == "GS":
            mask = str(root / r["mask"])
        else:
            mask = str(empty)
        row = {"path": str(root / r["image"]), "mask": mask, "task": task, "slide": r["slide"],
               "label": r["label"], "centre": r["centre"]}  # fmt: skip
        out["test" if r["slide"] in test_slides else "train"].append(row)
    return {
        "train": write_csv(work / "train.csv", out["train"]),
        "test": write_csv(work / "test.csv", out["test"]),
        "test_slides": sorted(test_slides),
        "n_train": len(out["train"]),
        "n_test": len(out["test"]),
        "rows": out,
    }


def aidpath_table(work: Path) -> Path:
    root = data_dir() / "aidpath"
    rows = [{"path": str(p), "mask": str(root / "masks" / p.name), "task": "Tuft"}
            for p in sorted((root / "images").glob("*.png"))]  # fmt: skip
    return write_csv(work / "aidpath.csv", rows)


def test_scores(run: Path, test_csv: Path, size: int) -> dict[str, Any]:
    """Crop-level scores of an exported model on the test table (priors included)."""
    import numpy as np

    from glomssl.finetune.segmenter.data import load_items
    from glomssl.finetune.segmenter.infer import load_segmenter
    from glomssl.finetune.segmenter.metrics import aggregate
    from glomssl.finetune.segmenter.report import evaluate

    model, meta = load_segmenter(run)
    classes = list(meta["classes"])
    disks = json.loads((run / "val_dice.json").read_text())["disk_fraction"]
    items = load_items([str(test_csv)], classes)
    recs, _ = evaluate(model, items, classes, size, 127, disks)
    res = aggregate(recs, classes)
    labels = {str(it.image): it.meta.get("label") for it in items}
    gs = [r for r in recs if r["class"] == "GS"]
    pos = [r["dice"] for r in gs if labels[r["image"]] == "GS"]
    neg = [r["dice"] for r in gs if labels[r["image"]] != "GS"]
    res["GS_dice_on_GS_crops"] = float(np.mean(pos)) if pos else None
    res["GS_nonGS_left_empty"] = float(np.mean(neg)) if neg else None  # empty truth: 1 iff empty
    res["n_GS_crops"], res["n_nonGS_crops"] = len(pos), len(neg)
    return res


def tiled_aidpath(run: Path, work: Path, size: int, name: str) -> dict[str, Any]:
    from glomssl.finetune.segmenter.predict import SegmentConfig, run_segment

    out = work / "aidpath" / name
    res = run_segment(
        SegmentConfig(
            model=str(run),
            input=[str(aidpath_table(work))],
            out=str(out),
            classes=["Tuft"],
            scale=AIDPATH_SCALE,
            tile=size,
            overlap=size // 4,
            device="cpu",
            quiet=True,
        )  # fmt: skip
    )
    s = json.loads((out / "scores.json").read_text())["per_class"]["Tuft"]
    return {"dice": s["dice"], "bf1": s["bf1"], "dice_all_foreground": s["dice_all_foreground"],
            "tiles": res["images"], "scale": AIDPATH_SCALE}  # fmt: skip


def train(cfg_kw: dict[str, Any]) -> tuple[dict[str, Any], float]:
    from glomssl.finetune.segmenter.train import SegTrainConfig, run_finetune_seg

    t = time.time()
    res = run_finetune_seg(SegTrainConfig(**cfg_kw))
    return res, time.time() - t


def base_cfg(a: argparse.Namespace, table: Path, out: Path) -> dict[str, Any]:
    from glomssl.engine import HardwareConfig

    return {
        "train": [str(table)], "out": str(out), "classes": ["Tuft", "GS"], "base": a.base,
        "image_size": a.size, "batch_size": a.batch, "max_steps": a.steps, "lr": a.lr,
        "optimizer": a.optimizer, "workers": 0, "cache": True, "quiet": True, "seed": a.seed,
        "val_every_steps": max(1, a.steps // 4), "ckpt_every": 10_000, "overlays": 2,
        "hardware": HardwareConfig(accelerator="cpu"),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--models", default="dynamic,multihead,unet,multiclass")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--base", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--optimizer", default="adamw")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-aidpath", action="store_true")
    ap.add_argument("--encoder", default="resunet", help="resunet or resnet18 (for --init)")
    ap.add_argument("--init", default=None, help="a `glomssl pretrain` run to start from")
    ap.add_argument("--init-name", default="random", help="name of --init in the results")
    ap.add_argument("--subset", type=int, default=0, help="train on N crops (N/2 per task)")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    work = Path(a.work)
    tables = build_tables(work, a.seed)
    store = work / "results.json"
    results: dict[str, Any] = json.loads(store.read_text()) if store.is_file() else {}
    table = tables["train"]
    if a.subset:
        rng = random.Random(a.seed + a.subset)
        rows = tables["rows"]["train"]
        pick = [r for t in ("Tuft", "GS")
                for r in rng.sample([x for x in rows if x["task"] == t], a.subset // 2)]  # fmt: skip
        table = write_csv(work / f"train_sub{a.subset}.csv", pick)
    tag = "" if a.encoder == "resunet" and not a.init else f"-{a.encoder}-{a.init_name}"
    tag += f"-N{a.subset}" if a.subset else ""
    for name in a.models.split(","):
        key = f"{name}-s{a.steps}-b{a.base}-{a.size}px-seed{a.seed}{tag}"
        if key in results:
            continue
        run = work / "runs" / key
        cfg = {**base_cfg(a, table, run), "model": name, "encoder": a.encoder, "init": a.init}
        res, secs = train(cfg)
        entry: dict[str, Any] = {"model": name, "train_seconds": round(secs, 1),
                                 "weights": res["weights"], "val_dice": res["val_dice"]}  # fmt: skip
        entry["test"] = test_scores(run, tables["test"], a.size)
        if not a.no_aidpath:
            entry["aidpath_tiled"] = tiled_aidpath(run, work, a.size, key)
        results[key] = entry
        store.write_text(json.dumps(results, indent=1))
        print(json.dumps({key: entry}), file=sys.stderr, flush=True)
    print(json.dumps({
        "benchmark": "segment_realdata", "machine": "2-core CPU, shared/noisy",
        "size": a.size, "base": a.base, "batch": a.batch, "steps": a.steps,
        "optimizer": a.optimizer, "lr": a.lr, "train_crops": tables["n_train"],
        "test_crops": tables["n_test"], "test_slides": tables["test_slides"],
        "encoder": a.encoder, "init": a.init_name, "subset": a.subset or "all",
        "results": {k: v for k, v in results.items() if f"-s{a.steps}-b{a.base}-" in k},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
