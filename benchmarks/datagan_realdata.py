"""Does a datagan synthetic set help on real glomeruli? An end-to-end CPU-budget experiment.

Pipeline (all at 64x64, real data from ../shared/data/glomeruli, never copied into the project):
1. split the 676 PAS crops by *slide*: test slides (held out entirely), the rest for training;
2. ``gan train`` the "small" StyleGAN2-ADA on the training slides' crops (unlabelled) for ``--kimg``;
3. ``datagan project`` 16 real training crops with their glomerulus masks into W+;
4. ``datagan train-labeler`` (K=10) on those 16 projected annotations;
5. ``datagan generate`` ``--n`` pairs (dropping the 10 % most uncertain);
6. train the same small U-Net-style segmenter (a) on the synthetic pairs and (b) on the 16 real
   annotated crops alone (flip/rot90 augmentation), same steps; report Dice on the test slides' crops.

Prints ONE JSON line. Usage: ``nice python benchmarks/datagan_realdata.py [--kimg 20] [--n 2000]``.
A CPU budget this small gives a weak GAN, so the result measures this budget, not the method's ceiling.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RES = 64


def _data_dir() -> Path:
    env = os.environ.get("GLOMSSL_SHARED_DATA")
    d = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not (d / "glomeruli" / "labels.csv").is_file():
        sys.exit(f"real data not found at {d}; set GLOMSSL_SHARED_DATA")
    return d / "glomeruli"


def _load(root: Path, row: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    img = (
        Image.open(root / row["image"]).convert("RGB").resize((RES, RES), Image.Resampling.LANCZOS)
    )
    m = Image.open(root / row["mask"]).convert("L").resize((RES, RES), Image.Resampling.NEAREST)
    return np.asarray(img), (np.asarray(m) > 127).astype(np.uint8)


def _segmenter() -> Any:
    import torch
    from torch import nn

    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
            nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
        )  # fmt: skip

    class TinyUNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.e1, self.e2, self.e3 = block(3, 16), block(16, 32), block(32, 64)
            self.d2, self.d1 = block(64 + 32, 32), block(32 + 16, 16)
            self.out = nn.Conv2d(16, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            import torch.nn.functional as F

            a = self.e1(x)  # (B, 16, 64, 64)
            b = self.e2(F.max_pool2d(a, 2))  # (B, 32, 32, 32)
            c = self.e3(F.max_pool2d(b, 2))  # (B, 64, 16, 16)
            u = self.d2(torch.cat([F.interpolate(c, scale_factor=2.0), b], 1))
            u = self.d1(torch.cat([F.interpolate(u, scale_factor=2.0), a], 1))
            return self.out(u)  # (B, 1, 64, 64) logits

    return TinyUNet()


def _train_seg(x: np.ndarray, y: np.ndarray, steps: int, seed: int) -> Any:
    """Train on (N, H, W, 3) uint8 images and (N, H, W) {0,1} masks with flips/rot90; BCE + Dice."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    net = _segmenter()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
    yt = torch.from_numpy(y).float()[:, None]
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, xt.shape[0], (32,), generator=g)
        xb, yb = xt[idx], yt[idx]
        k = int(torch.randint(0, 4, (1,), generator=g))
        xb, yb = torch.rot90(xb, k, (2, 3)), torch.rot90(yb, k, (2, 3))
        if torch.rand(1, generator=g) < 0.5:
            xb, yb = xb.flip(3), yb.flip(3)
        logits = net(xb)
        p = logits.sigmoid()
        dice = 1 - (2 * (p * yb).sum() + 1) / (p.sum() + yb.sum() + 1)
        loss = F.binary_cross_entropy_with_logits(logits, yb) + dice
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def _dice(net: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Mean per-image Dice of the foreground on real test crops."""
    import torch

    with torch.no_grad():
        pred = (net(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0)[:, 0] > 0).numpy()
    inter = (pred & (y > 0)).sum((1, 2))
    denom = pred.sum((1, 2)) + (y > 0).sum((1, 2))
    return float(np.mean(np.where(denom > 0, 2 * inter / np.maximum(denom, 1), 1.0)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kimg", type=float, default=20.0)
    ap.add_argument(
        "--gan-minutes", type=float, default=None, help="wall-clock cap on GAN training"
    )
    ap.add_argument("--work", default=None, help="keep the work folder here (default: a temp dir)")
    ap.add_argument("--network", default=None, help="reuse a 64 px `gan train` run (skips step 2)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--annotated", type=int, default=16)
    ap.add_argument("--project-steps", type=int, default=150)
    ap.add_argument("--seg-steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import torch
    from PIL import Image

    from glomssl.datagan.factory import GenerateConfig, run_datagan_generate
    from glomssl.datagan.labeler import LabelerConfig, train_labeler
    from glomssl.datagan.project import ProjectConfig, run_datagan_project
    from glomssl.datagan.train import GanTrainConfig, run_gan_train

    threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or min(2, os.cpu_count() or 1)
    torch.set_num_threads(max(1, threads))
    root = _data_dir()
    rows = list(csv.DictReader(open(root / "labels.csv", encoding="utf-8")))
    slides = sorted({r["slide"] for r in rows})
    rng = random.Random(a.seed)
    rng.shuffle(slides)
    test_slides, n_test = set(), 0
    for s in slides:  # hold out whole slides until ~20 % of crops
        if n_test >= 0.2 * len(rows):
            break
        test_slides.add(s)
        n_test += sum(r["slide"] == s for r in rows)
    train_rows = [r for r in rows if r["slide"] not in test_slides]
    test_rows = [r for r in rows if r["slide"] in test_slides]
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="datagan-real-") as tmp:
        t0 = time.time()
        work = Path(a.work or tmp)
        if a.work and work.exists():
            sys.exit(f"--work {work} exists; choose a new folder")
        (work / "gan_data").mkdir(parents=True)
        for r in train_rows:
            img, _ = _load(root, r)
            Image.fromarray(img).save(work / "gan_data" / f"{Path(r['image']).stem}.png")
        ann_rows = rng.sample(train_rows, a.annotated)
        for sub in ("real", "real_masks"):
            (work / sub).mkdir()
        for r in ann_rows:
            img, m = _load(root, r)
            Image.fromarray(img).save(work / "real" / f"{Path(r['image']).stem}.png")
            Image.fromarray(m).save(work / "real_masks" / f"{Path(r['image']).stem}_mask.png")
        t = time.time()
        net = a.network or str(work / "gan")
        gan_kimg: float | None = None
        if not a.network:
            gan = GanTrainConfig(
                data=[str(work / "gan_data")], out=net, resolution=RES, cfg="small",
                batch_size=16, kimg=a.kimg, snap=max(1.0, a.kimg / 20), tick=max(0.1, a.kimg / 50),
                max_minutes=a.gan_minutes, mirror=True,
                workers=0, accelerator="cpu", quiet=True, seed=a.seed,
            )  # fmt: skip
            gan_kimg = run_gan_train(gan)["kimg"]
        times["gan_train_s"] = time.time() - t
        t = time.time()
        proj = run_datagan_project(
            ProjectConfig(
                network=net,
                images=str(work / "real"),
                masks=str(work / "real_masks"),
                out=str(work / "ann"),
                steps=a.project_steps,
                quiet=True,
            )  # fmt: skip
        )
        times["project_s"] = time.time() - t
        t = time.time()
        lab = train_labeler(
            LabelerConfig(
                network=net,
                annotations=str(work / "ann"),
                num_classes=2,
                out=str(work / "lab"),
                quiet=True,
                seed=a.seed,
            )  # fmt: skip
        )
        times["labeler_s"] = time.time() - t
        t = time.time()
        gen = run_datagan_generate(
            GenerateConfig(
                network=net,
                labeler=str(work / "lab"),
                out=str(work / "syn"),
                n=a.n,
                drop_uncertain=0.1,
                device="cpu",
                quiet=True,
                seed=a.seed,
            )  # fmt: skip
        )
        times["generate_s"] = time.time() - t
        manifest = [json.loads(line) for line in (work / "syn" / "manifest.jsonl").open()]
        sx = np.stack([np.asarray(Image.open(work / "syn" / m["path"])) for m in manifest])
        sy = np.stack([np.asarray(Image.open(work / "syn" / m["mask"])) for m in manifest])
        rx, ry = (np.stack(v) for v in zip(*[_load(root, r) for r in ann_rows]))
        tx, ty = (np.stack(v) for v in zip(*[_load(root, r) for r in test_rows]))
        t = time.time()
        dice_syn = _dice(_train_seg(sx, sy, a.seg_steps, a.seed), tx, ty)
        dice_real = _dice(_train_seg(rx, ry, a.seg_steps, a.seed), tx, ty)
        times["segmenters_s"] = time.time() - t
        times["total_s"] = time.time() - t0
    print(
        json.dumps(
            {
                "benchmark": "datagan_realdata",
                "machine": "2-core CPU, shared/noisy",
                "resolution": RES,
                "gan_kimg": gan_kimg,
                "gan_minutes_cap": a.gan_minutes,
                "network": a.network or "trained here",
                "train_crops": len(train_rows),
                "test_crops": len(test_rows),
                "test_slides": sorted(test_slides),
                "annotated_real": a.annotated,
                "projection_mean_mse": proj["mean_mse"],
                "labeler_train_accuracy": lab["train_accuracy"],
                "synthetic_pairs": gen.get("kept"),
                "synthetic_foreground_fraction": float(sy.mean()),
                "real_foreground_fraction": float(ty.mean()),
                "dice_test_seg_on_synthetic": round(dice_syn, 4),
                "dice_test_seg_on_real": round(dice_real, 4),
                "seg_steps": a.seg_steps,
                "seconds": {k: round(v, 1) for k, v in times.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
