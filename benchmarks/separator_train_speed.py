"""Wall time of the panel detector's training recipe (`separator synth` + `separator train`).

Draws ``--n`` synthetic figures in ``--shards`` parallel `glomssl separator synth` processes (seeds
``--seed`` + k; `synth` itself is one process), joins them into one YOLO data set, then times one
`glomssl separator train` run on it with the given device, epochs, image size and batch (the model
card's one-stage recipe by default: 4,400 figures, 7 epochs, 320 px, batch 16). Panels are the
generator's drawn ones unless ``--images`` folders are given (the recipe's pool needs ../shared/data).

Prints ONE JSON line: drawing and training seconds, seconds per epoch, final val metrics.

    python benchmarks/separator_train_speed.py --work /tmp/sts --device cpu --workers 1
    python benchmarks/separator_train_speed.py --work /tmp/sts --device 0 --shards 8 --workers 8
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def glomssl(*args: str) -> list[str]:
    return [sys.executable, "-m", "glomssl", *args]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def draw(
    work: Path, n: int, shards: int, seed: int, images: list[str], options: Sequence[str] = ()
) -> Path:
    """``n`` figures drawn by ``shards`` parallel processes, joined into ``work/data``; ``options``
    are passed on to every `separator synth` call (e.g. ``--config FILE``)."""
    sizes = [n // shards + (k < n % shards) for k in range(shards)]
    procs = []
    for k, size in enumerate(sizes):
        extra = [a for img in images for a in ("--images", img)]
        cmd = glomssl("separator", "synth", *options, "--out", str(work / f"shard{k}"), "--n",
                      str(size), "--seed", str(seed + k), "--val-fraction", "0.09", "--quiet",
                      *extra)  # fmt: skip
        procs.append(subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL))
    if any(p.wait() != 0 for p in procs):
        sys.exit("separator synth failed")
    data = work / "data"
    for k in range(shards):
        for kind in ("images", "labels"):
            for split in ("train", "val"):
                dst = data / kind / split
                dst.mkdir(parents=True, exist_ok=True)
                for f in sorted((work / f"shard{k}" / kind / split).iterdir()):
                    f.rename(dst / f"s{k}_{f.name}")
    (data / "data.yaml").write_text(
        f'path: "{data.resolve()}"\ntrain: images/train\nval: images/val\nnames:\n  0: panel\n'
    )
    return data / "data.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--n", type=int, default=4400)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=7)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu, or a CUDA index such as 0")
    ap.add_argument("--images", action="append", default=[], help="panel image folder (repeat)")
    args = ap.parse_args()
    work = Path(args.work)
    if work.exists() and any(work.iterdir()):
        sys.exit(f"{work} is not empty; pass a new --work folder")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data_yaml = draw(work, args.n, max(1, args.shards), args.seed, args.images)
    drawn = time.perf_counter() - t0
    cmd = glomssl("separator", "train", "--data", str(data_yaml), "--out", str(work / "runs"),
                  "--epochs", str(args.epochs), "--imgsz", str(args.imgsz), "--batch",
                  str(args.batch), "--workers", str(args.workers), "--device", args.device,
                  "--seed", str(args.seed), "--quiet")  # fmt: skip
    t1 = time.perf_counter()
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, check=False)
    trained = time.perf_counter() - t1
    if proc.returncode != 0:
        sys.exit(f"separator train failed: {(proc.stdout + proc.stderr).strip()[-2000:]}")
    rows = list(
        csv.DictReader((next((work / "runs").glob("*")) / "ultralytics" / "results.csv").open())
    )
    last = {k.strip(): v for k, v in rows[-1].items()} if rows else {}
    print(
        json.dumps(
            {
                "benchmark": "separator_train_speed",
                "device": args.device,
                "cpus": os.cpu_count(),
                "figures": args.n,
                "shards": args.shards,
                "epochs": args.epochs,
                "imgsz": args.imgsz,
                "batch": args.batch,
                "workers": args.workers,
                "draw_seconds": round(drawn, 1),
                "train_seconds": round(trained, 1),
                "seconds_per_epoch": round(trained / max(1, args.epochs), 1),
                "epoch_times": [float(r.get("time", "nan")) for r in rows],
                "val_map50": float(last.get("metrics/mAP50(B)", "nan")) if last else None,
                "total_minutes": round((drawn + trained) / 60, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
