"""Glo-In-One's label-fraction study on the real crops: does pretraining pay when labels are few?

GS vs nonGS on ../shared/data/glomeruli (676 crops, 21 slides), slide-grouped stratified 5-fold
cross-validation (the same folds for every row: one seed), each fold's rest split 75/25 into training
and validation (grouped), the label fraction drawn from the training part, best epoch by validation
balanced accuracy. Every row runs ``glomssl finetune cls`` (``run_finetune_cls``, the same code as the
command) once per fraction. Rows:

- ``chance``: 0.5 balanced accuracy (no training);
- ``random_linear``: linear layer on the random-init encoder (``glomssl pretrain --max-steps 0``);
- ``vicreg_linear`` / ``vicreg_finetune``: linear layer on / fine-tuning of ``--vicreg RUN``;
- ``simsiam_linear``: linear layer on ``--simsiam RUN``;
- ``scratch``: the whole ResNet-18 from random init.

Usage (the CPU study: linear rows, then the network rows at the fractions that matter)::

    python benchmarks/cls_label_fractions.py --vicreg RUN --rows random_linear,vicreg_linear
    python benchmarks/cls_label_fractions.py --vicreg RUN --rows scratch,vicreg_finetune \
        --fractions 0.1,1 --net-epochs 20

Prints ONE JSON line (mean and std over folds per row and fraction, wall seconds per run); ``--log FILE``
appends it to a JSONL file; a Markdown table goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROWS = ("random_linear", "vicreg_linear", "simsiam_linear", "vicreg_finetune", "scratch")


def shared_data() -> Path:
    env = os.environ.get("GLOMSSL_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def row_setup(row: str, args: argparse.Namespace, random_run: Path) -> tuple[str, str | None]:
    """(mode, backbone) of a row."""
    enc = {"random": str(random_run), "vicreg": args.vicreg, "simsiam": args.simsiam}
    if row == "scratch":
        return "scratch", None
    name, mode = row.split("_")
    if not enc[name]:
        raise SystemExit(f"row {row} needs --{name} RUN")
    return mode, enc[name]


def run_row(row: str, frac: float, args: argparse.Namespace, random_run: Path) -> dict[str, Any]:
    from glomssl.finetune.classifier.protocol import FinetuneClsConfig, run_finetune_cls

    mode, backbone = row_setup(row, args, random_run)
    out = Path(args.work) / row / f"frac{frac:g}"
    first = Path(args.work) / row / "features.npz"
    if mode == "linear" and first.is_file() and not (out / "features.npz").is_file():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(first, out / "features.npz")  # the run checks the cache key before using it
    cfg = FinetuneClsConfig(
        data=str(shared_data() / "glomeruli" / "labels.csv"),
        out=str(out),
        backbone=backbone,
        mode=mode,  # type: ignore[arg-type]
        group="slide",
        folds=args.folds,
        label_fraction=frac,
        image_size=args.size,
        epochs=args.linear_epochs if mode == "linear" else args.net_epochs,
        lr=args.scratch_lr if mode == "scratch" else None,
        batch_size=args.batch_size,
        export=False,
        workers=2,
        seed=args.seed,
        resume=args.resume,
        quiet=True,
    )
    t0 = time.perf_counter()
    res = run_finetune_cls(cfg)
    wall = time.perf_counter() - t0
    if mode == "linear" and not first.is_file():
        shutil.copy(out / "features.npz", first)
    m = res["mean"]
    return {
        **{k: round(m[k], 4) for k in ("balanced_accuracy", "macro_f1", "auc") if m[k] is not None},
        **{k: round(m[k], 4) for k in ("balanced_accuracy_std", "macro_f1_std", "auc_std")},
        "labelled_per_fold": [f["n_train_labelled"] for f in res["per_fold"]],
        "best_epochs": [f["best_epoch"] for f in res["per_fold"]],
        "wall_s": round(wall, 1),
    }


def encoder_meta(run: str | None) -> dict[str, Any] | None:
    if not run:
        return None
    p = Path(run) / "backbone.json"
    meta = json.loads(p.read_text()) if p.is_file() else {}
    return {k: meta.get(k) for k in ("method", "arch", "image_size", "step")} | {
        "batch_size": meta.get("config", {}).get("batch_size"),
        "lr": meta.get("config", {}).get("lr"),
        "seed": meta.get("config", {}).get("seed"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="random_linear,vicreg_linear")
    ap.add_argument("--fractions", default="0.01,0.05,0.1,0.25,1")
    ap.add_argument("--vicreg", default=None, help="`glomssl pretrain` run (VICReg)")
    ap.add_argument("--simsiam", default=None, help="`glomssl pretrain` run (SimSiam)")
    ap.add_argument("--random", default=None, help="random-init run [made with --max-steps 0]")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--linear-epochs", type=int, default=100)
    ap.add_argument("--net-epochs", type=int, default=20)
    ap.add_argument("--scratch-lr", type=float, default=None, help="[the command's: 1e-4]")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--work", default="/tmp/glomssl_cls_study")
    ap.add_argument("--resume", action="store_true", help="keep finished folds in --work")
    ap.add_argument("--log", default=None)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad:
        raise SystemExit(f"unknown row {bad[0]}; choose from {', '.join(ROWS)}")
    fracs = [float(f) for f in args.fractions.split(",")]
    work = Path(args.work)
    random_run = Path(args.random) if args.random else work / "random_init"
    if "random_linear" in rows and not (random_run / "backbone.safetensors").is_file():
        from glomssl.ssl.train import PretrainConfig, run_pretrain

        run_pretrain(
            PretrainConfig(
                data=["-"],
                out=str(random_run),
                max_steps=0,
                image_size=args.size,
                seed=args.seed,
                quiet=True,
            )
        )
    t0 = time.perf_counter()
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        table[row] = {}
        for frac in fracs:
            table[row][f"{frac:g}"] = res = run_row(row, frac, args, random_run)
            print(
                f"{row} {frac:g}: {res['balanced_accuracy']:.3f} +- "
                f"{res['balanced_accuracy_std']:.3f} ({res['wall_s']:.0f} s)",
                file=sys.stderr,
            )
    out = {
        "benchmark": "cls_label_fractions",
        "data": "glomeruli GS vs nonGS, 676 crops, 21 slides",
        "protocol": f"slide-grouped stratified {args.folds}-fold, inner 75/25 grouped, seed {args.seed}",
        "size": args.size,
        "linear_epochs": args.linear_epochs,
        "net_epochs": args.net_epochs,
        "scratch_lr": args.scratch_lr or 1e-4,
        "chance_balanced_accuracy": 0.5,
        "encoders": {"random": encoder_meta(str(random_run)), "vicreg": encoder_meta(args.vicreg),
                     "simsiam": encoder_meta(args.simsiam)},
        "rows": table,
        "wall_s": round(time.perf_counter() - t0, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch threads "
                   f"{torch.get_num_threads()}, shared/noisy",
    }  # fmt: skip
    line = json.dumps(out)
    print(line)
    if args.log:
        with open(args.log, "a") as fh:
            fh.write(line + "\n")
    head = "| row | " + " | ".join(f"{float(f):.0%}" for f in fracs) + " |"
    print(head + "\n|" + "---|" * (len(fracs) + 1), file=sys.stderr)
    for row, cells in table.items():
        vals = [f"{c['balanced_accuracy']:.3f} +- {c['balanced_accuracy_std']:.3f}"
                for c in cells.values()]  # fmt: skip
        print(f"| {row} | " + " | ".join(vals) + " |", file=sys.stderr)


if __name__ == "__main__":
    main()
