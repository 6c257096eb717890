"""Pretraining throughput: the full data pipeline vs the model alone, and 2-process DDP vs 1 process.

* ceiling: the SimSiam training step (forward, backward, SGD) on in-memory tensors, no data loading;
* pipeline: ``run_pretrain`` on real image files (the glomeruli crops when ../shared/data exists, else
  generated PNGs), with DataLoader workers, augmentations and Lightning - images/s from metrics.jsonl,
  skipping the first logged interval (start-up, first decode);
* ddp: the same ``run_pretrain`` launched as ``python -m glomssl pretrain --devices 2 --strategy ddp``
  on CPU (gloo), images/s counted over the effective (global) batch.

Prints one JSON line. Usage: ``python benchmarks/pretrain_throughput.py --image-size 64 --batch-size 32``;
on a GPU: ``--accelerator gpu --precision bf16-mixed --arch resnet50 --image-size 224 --batch-size 128``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def image_source(tmp: Path, n: int) -> Path:
    env = os.environ.get("GLOMSSL_SHARED_DATA")
    real = (Path(env) if env else ROOT.parent / "shared" / "data") / "glomeruli" / "images"
    if real.is_dir():
        return real
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = tmp / "imgs"
    out.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(out / f"{i}.png")
    return out


def ceiling(
    method: str,
    size: int,
    batch: int,
    steps: int,
    arch: str = "resnet18",
    accelerator: str = "cpu",
    precision: str = "32",
) -> float:
    """images/s of the bare training step on random in-memory tensors (on the GPU if asked)."""
    import contextlib

    import torch

    from glomssl.ssl.methods import create_method

    torch.manual_seed(0)
    dev = torch.device("cuda" if accelerator == "gpu" else "cpu")
    m = create_method(method, arch).to(dev)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x0 = torch.rand(batch, 3, size, size, device=dev)
    x1 = torch.rand(batch, 3, size, size, device=dev)
    bf16 = precision.startswith("bf16")

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    times = []
    warm = 3 if dev.type == "cuda" else 1  # cuDNN autotuning and allocator warm-up
    for _ in range(steps + warm):
        sync()
        t = time.perf_counter()
        ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            loss = m.training_loss(x0, x1)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - t)
    return batch / (sum(times[warm:]) / steps)


def steady_rate(metrics: Path) -> float:
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    rates = [r["images_per_s"] for r in rows[1:] if r.get("images_per_s")]
    return sum(rates) / len(rates) if rates else float("nan")


def pipeline(
    data: Path,
    out: Path,
    method: str,
    size: int,
    batch: int,
    steps: int,
    workers: int,
    devices: int = 1,
    arch: str = "resnet18",
    accelerator: str = "cpu",
    precision: str = "32",
) -> float:
    cmd = [
        sys.executable,
        "-m",
        "glomssl",
        "pretrain",
        "--method",
        method,
        "--data",
        str(data),
        "--out",
        str(out),
        "--image-size",
        str(size),
        "--batch-size",
        str(batch),
        "--max-steps",
        str(steps),
        "--workers",
        str(workers),
        "--accelerator",
        accelerator,
        "--arch",
        arch,
        "--precision",
        precision,
        "--cache",
        "--quiet",
        "--devices",
        str(devices),
    ]
    cfg = out.parent / f"{out.name}.yaml"
    cfg.write_text("log_every: 2\nckpt_every: 100000\n")
    cmd += ["--config", str(cfg)]
    if devices > 1:
        cmd += ["--strategy", "ddp"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if devices > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // devices))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:  # show why (the run's own one-line error or traceback), not just the code
        sys.exit(f"pretrain failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return steady_rate(out / "metrics.jsonl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="simsiam")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--precision", default="32", help="32 or bf16-mixed (GPU)")
    ap.add_argument("--no-ddp", action="store_true", help="skip the 2-process run (always on GPU)")
    args = ap.parse_args()
    import torch

    res: dict[str, Any] = {
        "method": args.method,
        "arch": args.arch,
        "accelerator": args.accelerator,
        "precision": args.precision,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "workers": args.workers,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if args.accelerator == "gpu" else None,
    }
    hw = {"arch": args.arch, "accelerator": args.accelerator, "precision": args.precision}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        data = image_source(t, 256)
        res["data"] = str(data)
        res["ceiling_img_s"] = round(
            ceiling(args.method, args.image_size, args.batch_size, args.steps, **hw), 2
        )
        res["pipeline_img_s"] = round(
            pipeline(
                data,
                t / "p1",
                args.method,
                args.image_size,
                args.batch_size,
                args.steps,
                args.workers,
                **hw,
            ),
            2,
        )
        res["pipeline_over_ceiling"] = round(res["pipeline_img_s"] / res["ceiling_img_s"], 3)
        if not args.no_ddp and args.accelerator == "cpu":
            res["ddp2_img_s"] = round(
                pipeline(
                    data,
                    t / "p2",
                    args.method,
                    args.image_size,
                    args.batch_size,
                    args.steps,
                    args.workers,
                    devices=2,
                ),
                2,
            )
            res["ddp2_over_1proc"] = round(res["ddp2_img_s"] / res["pipeline_img_s"], 3)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
