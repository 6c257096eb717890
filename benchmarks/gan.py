"""Benchmark: generator throughput (images/s) and StyleGAN2-ADA training speed (kimg/hour).

Generation times G_ema forward passes (constant noise, no grad). Training runs the real
``run_gan_train`` loop (G step, lazy R1/path length, D step, EMA, ADA) on synthetic pink-blob images
written to a temporary folder, and reads the loop's own ``sec_per_kimg`` from metrics.jsonl (the
first tick, which includes start-up, is skipped). Prints ONE JSON line.

    python benchmarks/gan.py --cfg small --resolution 64 --train-kimg 0.128 --threads 1
    python benchmarks/gan.py --cfg paper256 --resolution 256 --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _images(folder: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = np.full((size, size, 3), 235, np.uint8)
        for _ in range(3):
            y, x = rng.integers(0, size - size // 4, 2)
            a[y : y + size // 4, x : x + size // 4] = rng.integers(60, 220, 3)
        Image.fromarray(a).save(folder / f"img{i:03d}.png")


@torch.no_grad()
def bench_generate(cfg: str, res: int, device: str, batch: int, reps: int) -> float:
    from glomssl.datagan.networks import create_generator

    G = create_generator(cfg, res).to(device).eval()
    G.set_fused(device.startswith("cuda"))
    z = torch.randn(batch, G.z_dim, device=device)
    G(z)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        G(z)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch * reps / (time.perf_counter() - t0)


def bench_train(
    cfg: str, res: int, device: str, batch: int, kimg: float, precision: str, workers: int
) -> dict[str, float]:
    from glomssl.datagan.train import GanTrainConfig, run_gan_train
    from glomssl.runs import read_metrics

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        _images(data, 64, res)
        run = Path(tmp) / "run"
        tick = kimg / 4
        gcfg = GanTrainConfig(
            data=[str(data)],
            out=str(run),
            resolution=res,
            cfg=cfg,  # type: ignore[arg-type]
            batch_size=batch,
            kimg=kimg,
            snap=kimg,
            tick=tick,
            grid=2,
            workers=workers,
            accelerator="cuda" if device.startswith("cuda") else "cpu",
            precision=precision,
            quiet=True,
        )
        run_gan_train(gcfg)
        rows = read_metrics(run / "metrics.jsonl")
    steady = rows[1:] or rows
    spk = float(np.median([r["sec_per_kimg"] for r in steady]))
    out = {"sec_per_kimg": spk, "kimg_per_hour": 3600.0 / spk, "ticks": len(rows)}
    if "gpu_mem_gb" in rows[-1]:
        out["gpu_mem_gb"] = rows[-1]["gpu_mem_gb"]
    out["rss_gb"] = rows[-1]["rss_gb"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cfg", default="small")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gen-batch", type=int, default=16)
    ap.add_argument("--gen-reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8, help="training batch")
    ap.add_argument("--train-kimg", type=float, default=0.128)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ips = bench_generate(args.cfg, args.resolution, args.device, args.gen_batch, args.gen_reps)
    train = bench_train(
        args.cfg,
        args.resolution,
        args.device,
        args.batch,
        args.train_kimg,
        args.precision,
        args.workers,
    )
    print(
        json.dumps(
            {
                "benchmark": "gan",
                "cfg": args.cfg,
                "resolution": args.resolution,
                "device": args.device,
                "torch_threads": torch.get_num_threads(),
                "machine": platform.processor() or platform.machine(),
                "generate_images_per_s": round(ips, 2),
                "gen_batch": args.gen_batch,
                "train_batch": args.batch,
                "train_kimg_per_hour": round(train["kimg_per_hour"], 3),
                "train_sec_per_kimg": round(train["sec_per_kimg"], 1),
                **{k: round(v, 3) for k, v in train.items() if k in ("gpu_mem_gb", "rss_gb")},
            }
        )
    )


if __name__ == "__main__":
    main()
