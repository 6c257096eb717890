"""One panel-detector training stage under a wall-clock budget (diary, section 53).

Draws ``--n`` figures with `glomssl separator synth` in ``--shards`` parallel processes (seeds
``--seed`` + k, ``same_source`` 0.3 as in the shipped W7/W8 stages, panels from ``--pool``, the
folder `benchmarks/separator_pool.py` writes), then trains one `glomssl separator train` stage from
random init for ``--hours`` of training (ultralytics' ``time`` budget: the number of epochs follows
from the measured epoch time, and the learning-rate schedule with it; ``--epochs0`` is only the
first epoch's schedule length). Written for a lent GPU, where section 53's stage (12,000 figures,
512 px, batch 32, 0.075 hours) took 5.5 minutes; on a CPU the same budget trains far fewer epochs.

Prints ONE JSON line: drawing and training seconds, epochs run, per-epoch val mAP50, the weights.

    python benchmarks/separator_budget_stage.py --work W --pool POOL --device 0   # section 53
    python benchmarks/separator_budget_stage.py --work W --pool POOL --n 40 --shards 2 \\
        --hours 0.003 --imgsz 128 --batch 8 --workers 1 --device cpu             # a wiring check
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

from separator_train_speed import draw  # the same shards and join

ROOT = Path(__file__).resolve().parents[1]
POOL_FOLDERS = ("histology", "wsi_regions", "glomeruli_train")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--work", required=True, help="a new folder")
    ap.add_argument("--pool", required=True, help="the folder of benchmarks/separator_pool.py")
    ap.add_argument("--n", type=int, default=12000)
    ap.add_argument("--shards", type=int, default=14)
    ap.add_argument("--seed", type=int, default=1200)
    ap.add_argument("--hours", type=float, default=0.075, help="training budget [0.075]")
    ap.add_argument("--epochs0", type=int, default=10)
    ap.add_argument("--imgsz", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--device", default="0", help="cpu, or a CUDA index such as 0")
    ap.add_argument("--train-seed", type=int, default=12)
    args = ap.parse_args()
    work, pool = Path(args.work), Path(args.pool)
    if work.exists() and any(work.iterdir()):
        sys.exit(f"{work} is not empty; pass a new --work folder")
    missing = [d for d in POOL_FOLDERS if not (pool / d).is_dir()]
    if missing:
        sys.exit(f"--pool {pool} lacks {', '.join(missing)}: run benchmarks/separator_pool.py")
    if not args.hours > 0:
        sys.exit("--hours must be positive")
    work.mkdir(parents=True, exist_ok=True)
    (work / "ss.yaml").write_text("same_source: 0.3\n")
    t0 = time.perf_counter()
    images = [str(pool / d) for d in POOL_FOLDERS]
    options = ["--config", str(work / "ss.yaml")]
    data_yaml = draw(work, args.n, max(1, args.shards), args.seed, images, options)
    drawn = time.perf_counter() - t0

    import ultralytics.engine.model as um

    from glomssl.mining.yolo_train import TrainConfig, train_detector

    plain_train = um.Model.train

    def budget_train(self, *a, **kw):  # `separator train` has no time budget option
        kw["time"] = args.hours
        return plain_train(self, *a, **kw)

    um.Model.train = budget_train  # type: ignore[method-assign]
    t1 = time.perf_counter()
    res = train_detector(
        TrainConfig(
            data=str(data_yaml),
            out=str(work / "runs"),
            epochs=args.epochs0,
            imgsz=args.imgsz,
            batch=args.batch,
            device=args.device,
            workers=args.workers,
            seed=args.train_seed,
            quiet=True,
        )  # fmt: skip
    )
    trained = time.perf_counter() - t1
    with (Path(res["run"]) / "ultralytics" / "results.csv").open() as fh:
        rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(fh)]
    print(
        json.dumps(
            {
                "benchmark": "separator_budget_stage",
                "device": args.device,
                "cpus": os.cpu_count(),
                "figures": args.n,
                "shards": args.shards,
                "imgsz": args.imgsz,
                "batch": args.batch,
                "workers": args.workers,
                "hours": args.hours,
                "draw_seconds": round(drawn, 1),
                "train_seconds": round(trained, 1),
                "epochs_run": len(rows),
                "val_map50": [float(r.get("metrics/mAP50(B)", "nan")) for r in rows],
                "metrics": res["metrics"],
                "weights": res["weights"],
            }
        )
    )


if __name__ == "__main__":
    main()
