"""Annotation efficiency on real glomeruli: N real masks vs a datasetGAN set made from them vs both.

The datasetGAN claim (Lutnick & Sarder, ../shared/papers/002): a few annotations plus a GAN's labelled
samples beat the same few annotations alone. Pipeline (64 px; real data from ../shared/data/glomeruli,
read in place, never copied into the project):

1. the slide split of ``benchmarks/segment_realdata.py`` (same seed: the same test slides);
2. ``gan train`` the "small" StyleGAN2-ADA on the training slides' crops (or reuse ``--network``);
3. for each N in ``--annotated`` (8, 16, 32): ``datagan project`` N real training crops with their
   glomerulus masks, ``datagan train-labeler``, ``datagan generate`` ``--n`` pairs;
4. ``glomssl finetune seg`` (the toolkit's own segmenter, one class) on (a) the N real crops, (b) the
   synthetic pairs, (c) both (``--synthetic-ratio 0.5``), same steps; the exported weights are chosen
   by Dice on the N real crops (the only annotations each arm has);
5. crop-level Dice and boundary F1 on the test slides, beside the all-foreground and centred-disk
   priors, and tiled Dice on the 12 aidpath fields (prior ~0), as in segment_realdata.py.

``--arms real`` runs the real-only arm alone (no GAN needed). Prints ONE JSON line; results are kept in
WORK/efficiency.json (a rerun skips finished arms).
Usage: ``nice python benchmarks/datagan_realdata.py --work /tmp/dg --arms real --annotated 8,16,32``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

RES = 64


def _common() -> Any:
    """benchmarks/segment_realdata.py as a module (tables, scoring, tiled evaluation)."""
    spec = importlib.util.spec_from_file_location(
        "segment_realdata", Path(__file__).with_name("segment_realdata.py")
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _one_class_tables(common: Any, work: Path, seed: int) -> dict[str, Any]:
    """Train/test tables of ONE class (the glomerulus mask on every crop), same test slides."""
    t = common.build_tables(work, seed)
    rows = {k: [{**r, "task": "Tuft", "mask": r["path"].replace("/images/", "/masks/")}
                for r in t["rows"][k]] for k in ("train", "test")}  # fmt: skip
    return {
        "n_train": len(rows["train"]),
        "n_test": len(rows["test"]),
        "train_rows": rows["train"],
        "test": common.write_csv(work / "test_tuft.csv", rows["test"]),
        "test_slides": t["test_slides"],
    }


def _gan_steps(a: argparse.Namespace, work: Path, train_rows: list[dict[str, Any]],
               ann: list[dict[str, Any]], tag: str) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """GAN (trained once or reused), projection of the annotated crops, labeler, generation."""
    import numpy as np
    from PIL import Image

    from glomssl.datagan.factory import GenerateConfig, run_datagan_generate
    from glomssl.datagan.labeler import LabelerConfig, train_labeler
    from glomssl.datagan.project import ProjectConfig, run_datagan_project
    from glomssl.datagan.train import GanTrainConfig, run_gan_train

    info: dict[str, Any] = {}
    net = a.network or str(work / "gan")
    if not a.network and not (work / "gan").is_dir():
        (work / "gan_data").mkdir(parents=True, exist_ok=True)
        for r in train_rows:
            img = Image.open(r["path"]).convert("RGB").resize((RES, RES), Image.Resampling.LANCZOS)
            img.save(work / "gan_data" / f"{Path(r['path']).stem}.png")
        t = time.time()
        gan = GanTrainConfig(
            data=[str(work / "gan_data")], out=net, resolution=RES, networks="small", batch_size=16,
            kimg=a.kimg, snap=max(1.0, a.kimg / 20), tick=max(0.1, a.kimg / 50),
            max_minutes=a.gan_minutes, mirror=True, workers=0, accelerator="cpu", quiet=True,
            seed=a.seed,
        )  # fmt: skip
        info["gan_kimg"] = run_gan_train(gan)["kimg"]
        info["gan_train_s"] = round(time.time() - t, 1)
    d = work / f"ann_{tag}"
    for sub in ("real", "real_masks"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    for r in ann:
        img = Image.open(r["path"]).convert("RGB").resize((RES, RES), Image.Resampling.LANCZOS)
        m = Image.open(r["mask"]).convert("L").resize((RES, RES), Image.Resampling.NEAREST)
        img.save(d / "real" / f"{Path(r['path']).stem}.png")
        Image.fromarray((np.asarray(m) > 127).astype(np.uint8)).save(
            d / "real_masks" / f"{Path(r['path']).stem}_mask.png"
        )
    proj = run_datagan_project(ProjectConfig(network=net, images=str(d / "real"),
                                             masks=str(d / "real_masks"), out=str(d / "proj"),
                                             steps=a.project_steps, quiet=True))  # fmt: skip
    lab = train_labeler(LabelerConfig(network=net, annotations=str(d / "proj"), num_classes=2,
                                      out=str(d / "lab"), quiet=True, seed=a.seed))  # fmt: skip
    gen = run_datagan_generate(GenerateConfig(network=net, labeler=str(d / "lab"),
                                              out=str(d / "syn"), n=a.n, drop_uncertain=0.1,
                                              device="cpu", quiet=True, seed=a.seed))  # fmt: skip
    info.update(
        {
            "projection_mean_mse": proj["mean_mse"],
            "labeler_train_accuracy": lab["train_accuracy"],
            "synthetic_pairs": gen.get("kept"),
        }
    )
    return d / "syn" / "manifest.jsonl", info


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--arms", default="real,synthetic,both")
    ap.add_argument("--annotated", default="8,16,32")
    ap.add_argument("--network", default=None, help="reuse a 64 px `gan train` run")
    ap.add_argument("--kimg", type=float, default=20.0)
    ap.add_argument("--gan-minutes", type=float, default=None)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--project-steps", type=int, default=150)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--base", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-aidpath", action="store_true")
    a = ap.parse_args()
    import torch

    from glomssl.engine import HardwareConfig
    from glomssl.finetune.segmenter.train import SegTrainConfig, run_finetune_seg

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    common = _common()
    work = Path(a.work)
    tables = _one_class_tables(common, work, a.seed)
    store = work / "efficiency.json"
    results: dict[str, Any] = json.loads(store.read_text()) if store.is_file() else {}
    arms = a.arms.split(",")
    for n in [int(v) for v in a.annotated.split(",")]:
        ann = random.Random(a.seed + n).sample(tables["train_rows"], n)
        real_csv = common.write_csv(work / f"real_{n}.csv", ann)
        syn: Path | None = None
        for arm in arms:
            key = f"N{n}-{arm}-s{a.steps}-b{a.base}"
            if key in results:
                continue
            extra: dict[str, Any] = {}
            if arm in ("synthetic", "both") and syn is None:
                syn, extra = _gan_steps(a, work, tables["train_rows"], ann, f"N{n}")
            train = [str(syn)] if arm == "synthetic" else [str(real_csv)]
            run = work / "runs" / key
            t = time.time()
            res = run_finetune_seg(SegTrainConfig(
                train=train, val=[str(real_csv)], out=str(run), classes=["Tuft"], base=a.base,
                image_size=RES, batch_size=a.batch, max_steps=a.steps, optimizer="adamw", lr=a.lr,
                workers=0, cache=True, quiet=True, seed=a.seed, val_every_steps=max(1, a.steps // 4),
                ckpt_every=10_000, overlays=1, hardware=HardwareConfig(accelerator="cpu"),
                synthetic=[str(syn)] if arm == "both" and syn else [], synthetic_ratio=0.5,
            ))  # fmt: skip
            entry: dict[str, Any] = {"N": n, "arm": arm, "train_seconds": round(time.time() - t, 1),
                                     "weights": res["weights"], **extra}  # fmt: skip
            entry["test"] = common.test_scores(run, tables["test"], RES)["per_class"]["Tuft"]
            if not a.no_aidpath:
                entry["aidpath_tiled"] = common.tiled_aidpath(run, work, RES, key)
            results[key] = entry
            store.write_text(json.dumps(results, indent=1))
            print(json.dumps({key: entry}), file=sys.stderr, flush=True)
    print(json.dumps({
        "benchmark": "datagan_realdata", "machine": "2-core CPU, shared/noisy", "resolution": RES,
        "steps": a.steps, "base": a.base, "test_slides": tables["test_slides"],
        "train_crops": tables["n_train"], "test_crops": tables["n_test"],
        "network": a.network or ("trained here" if any(x != "real" for x in arms) else None),
        "results": results,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
