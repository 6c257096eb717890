"""Benchmark: StyleGAN2 generator images/s, training seconds per image and peak RSS per resolution.

Every measurement runs in a fresh child process (so its peak RSS, VmHWM from /proc/self/status, is its
own), with fp32, ``--threads`` torch threads (1 by default), the same architecture for every implementation (the ADA
"auto" config by default: 2 mapping layers, channel_base 16384 below 512 px and 32768 from 512 px) and:

* ``generate``: G forward of ``--batch`` latents, constant noise, no gradients; images/s over ``--reps``
  passes after one warm-up pass;
* ``train``: one StyleGAN2-ADA iteration split into its phases, each timed on its own after a warm-up:
  G main (non-saturating loss through D), G path-length regularisation, D main (fakes + reals) and R1.
  Seconds per image = (G main + D main + PL / 4 + R1 / 16) / batch, the lazy-regularisation schedule of
  the paper (G every 4, D every 16 iterations). No augmentation.

Speeds are reported per wall-clock second and per CPU second of the process (``time.process_time``);
ratios use CPU seconds, which a machine shared with other jobs disturbs far less than wall time (with
one thread there is no spinning OpenMP barrier to inflate them).

``--official DIR`` also measures NVIDIA's StyleGAN2-ADA PyTorch code (``training/networks.py``,
``training/loss.py`` and ``torch_utils``; not part of glomssl, see docs/experiments/gan-speed.md) in the
same run, alternating with glomssl, so the ratios compare like with like on a shared machine.
Prints ONE JSON line.

    python benchmarks/gan.py --resolutions 32 64 --threads 2
    python benchmarks/gan.py --resolutions 256 512 --official /tmp/official --train-max-res 256

``--loop`` keeps the earlier end-to-end mode (also for GPUs): G_ema images/s at ``--gen-batch`` and the
real ``run_gan_train`` loop's kimg/hour on synthetic blob images, e.g.
``python benchmarks/gan.py --loop --cfg paper256 --resolution 256 --device cuda --train-batch 32``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _hwm() -> int:
    """This process's own peak RSS in bytes (VmHWM)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _arch(cfg: str, res: int) -> dict[str, Any]:
    from glomssl.datagan.networks import resolve_config

    return resolve_config(cfg, res)


# --------------------------------------------------------------------------------------------------
# the two implementations behind one interface: build(), generate(z), train phases


class Glomssl:
    def __init__(self, cfg: str, res: int) -> None:
        from glomssl.datagan.networks import create_discriminator, create_generator

        self.G = create_generator(cfg, res)
        self.D = create_discriminator(cfg, res)
        self.z_dim = self.G.z_dim

    def generate(self, z: Any) -> Any:
        return self.G(z, noise_mode="const")

    def phases(self, batch: int) -> dict[str, Any]:
        import torch

        from glomssl.datagan.loss import PathLengthPenalty, discriminator_loss, generator_loss

        G, D = self.G.train(), self.D.train()
        opt_g = torch.optim.Adam(G.parameters(), lr=0.0025, betas=(0.0, 0.99))
        opt_d = torch.optim.Adam(D.parameters(), lr=0.0025, betas=(0.0, 0.99))
        pl = PathLengthPenalty(2.0)
        real = torch.rand(batch, 3, G.img_resolution, G.img_resolution) * 2 - 1

        def ident(x: Any) -> Any:
            return x

        def g_main() -> None:
            G.requires_grad_(True)
            D.requires_grad_(False)
            generator_loss(G, D, ident, torch.randn(batch, G.z_dim)).backward()
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)

        def g_reg() -> None:
            loss, _ = pl(G, torch.randn(batch, G.z_dim), 4)
            loss.backward()
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)

        def d_step(r1: bool) -> None:
            G.requires_grad_(False)
            D.requires_grad_(True)
            z = torch.randn(batch, G.z_dim)
            loss, _ = discriminator_loss(G, D, ident, z, real, 1.0, r1, 16)
            loss.backward()
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)

        return {
            "g_main": g_main,
            "g_reg": g_reg,
            "d_main": lambda: d_step(False),
            "d_main_r1": lambda: d_step(True),
        }


class Official:
    """NVIDIA's code, configured as the ADA "auto" config (no fp16, no conv clamp: fp32 on CPU)."""

    def __init__(self, cfg: str, res: int, path: str) -> None:
        sys.path.insert(0, path)
        from training.networks import Discriminator, Generator  # type: ignore[import-not-found]

        a = _arch(cfg, res)
        syn = dict(channel_base=a["channel_base"], channel_max=a["channel_max"], num_fp16_res=0)
        self.G = Generator(
            a["z_dim"], 0, a["w_dim"], res, 3,
            mapping_kwargs=dict(num_layers=a["mapping_layers"]),
            synthesis_kwargs=dict(**syn, conv_clamp=None),
        )  # fmt: skip
        self.D = Discriminator(
            0, res, 3, channel_base=a["channel_base"], channel_max=a["channel_max"],
            num_fp16_res=0, conv_clamp=None, epilogue_kwargs=dict(mbstd_group_size=a["mbstd_group"]),
        )  # fmt: skip
        self.z_dim = a["z_dim"]

    def generate(self, z: Any) -> Any:
        return self.G(z, None, noise_mode="const")

    def phases(self, batch: int) -> dict[str, Any]:
        import torch
        from training.loss import StyleGAN2Loss  # type: ignore[import-not-found]

        G, D = self.G.train(), self.D.train()
        c = 4 / 5  # lazy-regularisation correction, as the official training loop sets it
        opt_g = torch.optim.Adam(G.parameters(), lr=0.0025 * c, betas=(0.0, 0.99**c))
        c = 16 / 17
        opt_d = torch.optim.Adam(D.parameters(), lr=0.0025 * c, betas=(0.0, 0.99**c))
        loss = StyleGAN2Loss("cpu", G.mapping, G.synthesis, D, r1_gamma=1.0, pl_weight=2.0)
        real = torch.rand(batch, 3, G.img_resolution, G.img_resolution) * 2 - 1
        empty = torch.zeros(batch, 0)

        def phase(name: str, net: Any, opt: Any, gain: float) -> None:
            for other in (G, D):
                other.requires_grad_(other is net)
            z = torch.randn(batch, self.z_dim)
            loss.accumulate_gradients(name, real, empty, z, empty, True, gain)
            opt.step()
            opt.zero_grad(set_to_none=True)

        return {
            "g_main": lambda: phase("Gmain", G, opt_g, 1.0),
            "g_reg": lambda: phase("Greg", G, opt_g, 4.0),
            "d_main": lambda: phase("Dmain", D, opt_d, 1.0),
            "d_reg": lambda: phase("Dreg", D, opt_d, 16.0),
        }


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement (``--child impl:what:res``) in this process."""
    import torch

    impl, what, res_s = args.child.split(":")
    res = int(res_s)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net: Any = (
        Glomssl(args.cfg, res) if impl == "glomssl" else Official(args.cfg, res, args.official)
    )
    out: dict[str, Any] = {"impl": impl, "what": what, "resolution": res}
    out["g_params"] = sum(p.numel() for p in net.G.parameters())
    if what == "generate":
        net.G.eval().requires_grad_(False)
        z = torch.randn(args.batch, net.z_dim)
        with torch.no_grad():
            net.generate(z)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.reps):
                net.generate(z)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
        out["images_per_s"] = args.batch * args.reps / dt
        out["images_per_cpu_s"] = args.batch * args.reps / dc
    else:
        batch = args.train_batch
        ph = net.phases(batch)
        times: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for name, fn in ph.items():
            fn()  # warm-up (allocator, Adam state)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.train_reps):
                fn()
            times[name] = (time.perf_counter() - t0) / args.train_reps
            cpu[name] = (time.process_time() - c0) / args.train_reps

        def per_img(t: dict[str, float]) -> float:
            if "d_reg" in t:  # official: R1 is its own phase (a second D pass on the reals)
                r1 = t["d_reg"]
            else:  # glomssl: R1 rides on D main's pass over the reals
                r1 = max(t["d_main_r1"] - t["d_main"], 0.0)
            return (t["g_main"] + t["d_main"] + t["g_reg"] / 4 + r1 / 16) / batch

        out["phase_cpu_seconds"] = {k: round(v, 3) for k, v in cpu.items()}
        out["train_s_per_img"] = per_img(times)
        out["train_cpu_s_per_img"] = per_img(cpu)
        out["train_batch"] = batch
    out["peak_rss_gb"] = _hwm() / 2**30
    return out


def run_child(args: argparse.Namespace, spec: str) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", spec]
    for key in ("cfg", "threads", "batch", "reps", "train_batch", "train_reps"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    if args.official:
        cmd += ["--official", args.official]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"spec": spec, "error": (proc.stderr.strip().splitlines() or ["killed"])[-1]}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    return {"spec": spec, "error": "no result"}


def _blob_images(folder: Path, n: int, size: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = np.full((size, size, 3), 235, np.uint8)
        for _ in range(3):
            y, x = rng.integers(0, size - size // 4, 2)
            a[y : y + size // 4, x : x + size // 4] = rng.integers(60, 220, 3)
        Image.fromarray(a).save(folder / f"img{i:03d}.png")


def loop(args: argparse.Namespace) -> dict[str, Any]:
    """End-to-end: G_ema images/s and the real training loop's kimg/hour (``--loop``)."""
    import tempfile

    import numpy as np
    import torch

    from glomssl.datagan.networks import create_generator
    from glomssl.datagan.train import GanTrainConfig, run_gan_train
    from glomssl.runs import read_metrics

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    G = create_generator(args.cfg, args.resolution).to(args.device).eval().requires_grad_(False)
    G.set_fused(cuda)
    z = torch.randn(args.gen_batch, G.z_dim, device=args.device)
    with torch.no_grad():
        G(z)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.reps):
            G(z)
        if cuda:
            torch.cuda.synchronize()
    ips = args.gen_batch * args.reps / (time.perf_counter() - t0)
    del G
    with tempfile.TemporaryDirectory() as tmp:
        _blob_images(Path(tmp) / "data", 64, args.resolution)
        run = Path(tmp) / "run"
        cfg = GanTrainConfig(
            data=[str(Path(tmp) / "data")], out=str(run), resolution=args.resolution,
            networks=args.cfg, batch_size=args.train_batch, kimg=args.train_kimg, snap=args.train_kimg,
            tick=args.train_kimg / 4, grid=2, workers=args.workers, accelerator="cuda" if cuda else "cpu",
            quiet=True,
        )  # fmt: skip
        run_gan_train(cfg)
        rows = read_metrics(run / "metrics.jsonl")
    spk = float(np.median([r["sec_per_kimg"] for r in rows[1:] or rows]))
    out = {"benchmark": "gan-loop", "cfg": args.cfg, "resolution": args.resolution}
    out.update(device=args.device, generate_images_per_s=round(ips, 2))
    out.update(train_sec_per_kimg=round(spk, 1), train_kimg_per_hour=round(3600 / spk, 3))
    out.update(rss_gb=round(rows[-1]["rss_gb"], 3), peak_rss_gb=round(_hwm() / 2**30, 3))
    if "gpu_mem_gb" in rows[-1]:
        out["gpu_mem_gb"] = round(rows[-1]["gpu_mem_gb"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--cfg", default="auto")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4, help="generator batch")
    ap.add_argument("--reps", type=int, default=2, help="timed generator passes")
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--train-reps", type=int, default=1, help="timed repeats of each phase")
    ap.add_argument("--train-max-res", type=int, default=256, help="no training above this")
    ap.add_argument("--rounds", type=int, default=1, help="alternating repeats (median reported)")
    ap.add_argument("--official", default="", help="folder with NVIDIA's StyleGAN2-ADA code")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--loop", action="store_true", help="end-to-end mode (see the docstring)")
    ap.add_argument("--resolution", type=int, default=64, help="--loop: resolution")
    ap.add_argument("--device", default="cpu", help="--loop: cpu or cuda")
    ap.add_argument("--gen-batch", type=int, default=16, help="--loop: generator batch")
    ap.add_argument("--train-kimg", type=float, default=0.128, help="--loop: training length")
    ap.add_argument("--workers", type=int, default=0, help="--loop: data-loading workers")
    args = ap.parse_args()
    if args.loop:
        print(json.dumps(loop(args)))
        return
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return
    impls = ["glomssl"] + (["official"] if args.official else [])
    rows: list[dict[str, Any]] = []
    for res in args.resolutions:
        whats = ["generate"] + (["train"] if res <= args.train_max_res else [])
        for what in whats:
            got: dict[str, list[dict[str, Any]]] = {i: [] for i in impls}
            for _ in range(args.rounds):
                for impl in impls:
                    got[impl].append(run_child(args, f"{impl}:{what}:{res}"))
            row: dict[str, Any] = {"resolution": res, "what": what}
            keys = (
                ["images_per_s", "images_per_cpu_s"]
                if what == "generate"
                else ["train_s_per_img", "train_cpu_s_per_img"]
            )
            key = keys[1]
            for impl, results in got.items():
                ok = [r for r in results if "error" not in r]
                if not ok:
                    row[impl] = {"error": results[-1].get("error")}
                    continue
                row[impl] = {k: round(statistics.median(r[k] for r in ok), 4) for k in keys}
                row[impl]["peak_rss_gb"] = round(max(r["peak_rss_gb"] for r in ok), 3)
                row[impl]["g_params"] = ok[0]["g_params"]
                if what == "train":
                    row[impl]["phase_cpu_seconds"] = ok[-1]["phase_cpu_seconds"]
            if "official" in row and key in row["official"] and key in row["glomssl"]:
                ours, theirs = row["glomssl"][key], row["official"][key]
                row["speed_ratio"] = round(
                    ours / theirs if what == "generate" else theirs / ours, 3
                )
                row["memory_ratio"] = round(
                    row["glomssl"]["peak_rss_gb"] / row["official"]["peak_rss_gb"], 3
                )
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(
        json.dumps(
            {
                "benchmark": "gan",
                "cfg": args.cfg,
                "threads": args.threads,
                "gen_batch": args.batch,
                "train_batch": args.train_batch,
                "machine": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(),
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
