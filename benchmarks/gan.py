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


def bench_quality(res: int, batch: int, kimg: float, num: int) -> dict[str, float]:
    """Does training move the fakes toward the data? FID/KID of G_ema at kimg 0 and at ``kimg``,
    measured in the features of a fixed random-init resnet18 (no downloads; a weak but honest
    distribution distance), on the synthetic blob images."""
    import torchvision

    from glomssl.datagan.metrics import MetricState
    from glomssl.datagan.snapshot import list_snapshots, load_snapshot
    from glomssl.datagan.train import GanTrainConfig, make_dataset, run_gan_train

    torch.manual_seed(0)
    trunk = torchvision.models.resnet18(weights=None)
    trunk.fc = torch.nn.Identity()  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        _images(data, 64, res)
        base = dict(
            data=[str(data)], out=str(Path(tmp) / "run"), resolution=res, cfg="small",
            batch_size=batch, snap=kimg, tick=max(kimg / 8, 0.004), grid=4, workers=0,
            accelerator="cpu", quiet=True, mirror=True,
        )  # fmt: skip
        run_gan_train(GanTrainConfig(**base, kimg=0))  # type: ignore[arg-type]
        t0 = time.perf_counter()
        run_gan_train(GanTrainConfig(**base, kimg=kimg, resume=True))  # type: ignore[arg-type]
        train_s = time.perf_counter() - t0
        state = MetricState(trunk, make_dataset(GanTrainConfig(**base)), num, "cpu")  # type: ignore[arg-type]
        snaps = list_snapshots(Path(tmp) / "run")
        first = state.evaluate(load_snapshot(snaps[0])["G_ema"])
        last = state.evaluate(load_snapshot(snaps[-1])["G_ema"])
    return {
        "quality_kimg": kimg,
        "quality_train_s": train_s,
        "fid_rand_kimg0": first["fid_enc"],
        "fid_rand_final": last["fid_enc"],
        "kid_rand_kimg0": first["kid_enc"],
        "kid_rand_final": last["kid_enc"],
    }


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
    ap.add_argument("--quality-kimg", type=float, default=0.0, help="also train this long, FID")
    ap.add_argument("--quality-num", type=int, default=256)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    quality = (
        bench_quality(args.resolution, args.batch, args.quality_kimg, args.quality_num)
        if args.quality_kimg > 0
        else {}
    )
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
                **{k: round(v, 4) for k, v in quality.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
