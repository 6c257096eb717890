"""StyleGAN2-ADA training loop on Lightning Fabric (``glomssl gan train``).

One iteration follows StyleGAN2-ADA: a G step (non-saturating loss through the ADA pipeline), a lazy
path-length step every ``g_reg_interval`` iterations, a D step with lazy R1 every ``d_reg_interval``,
the G_ema update (half-life ``ema_kimg`` thousand images, ramped up over the first images), and an ADA
p update every ``ada_interval`` iterations. Adam learning rates and betas are corrected for lazy
regularisation (StyleGAN2 appendix B: lr * c, beta ** c with c = interval / (interval + 1)).

Distributed training: Fabric launches the processes and sets the devices and precision; gradients are
averaged across processes by one flat all-reduce per step (as StyleGAN2-ADA does), which keeps G's and
D's alternating phases simple (no DDP hooks on a network whose parameters are frozen in that phase).
Only rank zero writes files.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.utils.data as tud

from glomssl.config import opt
from glomssl.errors import GlomsslError

PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")


@dataclass
class GanTrainConfig:
    """Options of ``glomssl gan train`` (defaults follow StyleGAN2-ADA's "auto" config)."""

    data: list[str] = field(default_factory=list)  # FOLDER | MANIFEST | SLIDE...
    out: str = ""  # the run folder
    resolution: int = 256
    # "auto": ADA's auto widths on a GPU; on a CPU the "small" networks (the full ones take hours
    # per thousand images there); name a config to force it
    cfg: Literal["auto", "small", "paper256", "paper512", "paper1024"] = "auto"
    channel_max: int | None = opt(None, ge=4)  # override the widest layer (smaller = faster)
    batch_size: int = opt(32, ge=1)  # total over all processes
    kimg: float = opt(5000.0, ge=0)  # training length in thousands of real images shown to D
    max_minutes: float | None = opt(None, gt=0)  # wall-clock budget: stop (with a snapshot)
    gamma: float | None = opt(
        None, ge=0
    )  # R1 weight; None -> 0.0002 * res^2 / batch or the paper's
    mirror: bool = False  # random x-flips of the training data
    aug: Literal["ada", "noaug", "fixed"] = "ada"
    aug_p: float = opt(0.2, ge=0, le=1)  # p for --aug fixed
    target: float = opt(0.6, ge=0, le=1)  # ADA over-fitting target for E[sign(D(real))]
    ada_kimg: float = opt(500.0, gt=0)  # p can move from 0 to 1 in this many kimg
    ada_interval: int = opt(4, ge=1)
    lr: float | None = opt(None, gt=0)  # None -> 0.0025 (0.002 at 1024)
    ema_kimg: float | None = opt(None, gt=0)  # None -> batch * 10 / 32
    ema_rampup: float | None = opt(0.05, ge=0)
    pl_weight: float | None = opt(None, ge=0)  # None -> 2 (0 for "small")
    style_mixing: float = opt(0.9, ge=0, le=1)
    g_reg_interval: int = opt(4, ge=1)
    d_reg_interval: int = opt(16, ge=1)
    snap: float = opt(50.0, gt=0)  # kimg between snapshots
    tick: float = opt(4.0, gt=0)  # kimg between metrics.jsonl lines
    grid: int | None = opt(
        None, ge=1, le=32
    )  # fakes grid of grid x grid; None: 8, fewer above 512 px
    seed: int = opt(0, ge=0)
    workers: int = opt(2, ge=0)
    accelerator: str = "auto"
    devices: int = opt(1, ge=1)
    num_nodes: int = opt(1, ge=1)
    strategy: str = (
        "auto"  # auto -> ddp when devices * num_nodes > 1; ddp_spawn for notebooks/tests
    )
    precision: str = "auto"  # auto -> bf16-mixed on GPUs with bf16, 16-mixed on older GPUs, else 32
    resume: bool = False
    slide_level: int = opt(0, ge=0)
    slide_mpp: float | None = opt(None, gt=0)
    metric_encoder: str | None = None  # glomssl pretrain run/backbone for FID/KID per snapshot
    metric_inception: str | None = None  # local Inception-v3 weights for standard FID/KID
    metric_num: int = opt(1000, ge=2)  # images (real and fake) per FID/KID evaluation
    quiet: bool = False

    def validate(self) -> None:
        from glomssl.datagan.networks import RESOLUTIONS

        if self.resolution not in RESOLUTIONS:
            raise GlomsslError(
                f"--resolution {self.resolution} must be one of {', '.join(map(str, RESOLUTIONS))}"
            )
        if self.batch_size < 1:
            raise GlomsslError(f"--batch-size {self.batch_size} must be at least 1")
        if self.kimg < 0:
            raise GlomsslError(f"--kimg {self.kimg} must be >= 0")
        if not 0 <= self.target <= 1:
            raise GlomsslError(f"--target {self.target} must lie in [0, 1]")
        if not 0 <= self.aug_p <= 1:
            raise GlomsslError(f"--aug-p {self.aug_p} must lie in [0, 1]")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise GlomsslError(f"--max-minutes {self.max_minutes} must be positive")
        if self.snap <= 0 or self.tick <= 0:
            raise GlomsslError("--snap and --tick must be positive (kimg)")
        if self.precision not in PRECISIONS:
            raise GlomsslError(
                f"--precision {self.precision} is not one of {', '.join(PRECISIONS)}"
            )
        if self.devices < 1 or self.num_nodes < 1:
            raise GlomsslError("--devices and --num-nodes must be at least 1")
        if self.batch_size % (self.devices * self.num_nodes):
            raise GlomsslError(
                f"--batch-size {self.batch_size} must be divisible by devices x nodes "
                f"({self.devices * self.num_nodes})"
            )
        if self.channel_max is not None and self.channel_max < 4:
            raise GlomsslError(f"--channel-max {self.channel_max} must be at least 4")
        if self.gamma is not None and self.gamma < 0:
            raise GlomsslError(f"--gamma {self.gamma} must be >= 0")
        if self.metric_inception is not None and not Path(self.metric_inception).is_file():
            raise GlomsslError(
                f"--metric-inception {self.metric_inception} does not exist; save torchvision's "
                "inception_v3 state dict there (see README) or drop the option"
            )
        if (self.metric_encoder or self.metric_inception) and self.metric_num < 2:
            raise GlomsslError(f"--metric-num {self.metric_num} must be at least 2 for FID/KID")


def network_config(cfg: GanTrainConfig, on_gpu: bool, resumed: dict[str, Any] | None) -> str:
    """The network config a run uses: the one it was started with when resuming; "auto" on a CPU ->
    "small" (the full networks cost hours per thousand images on a CPU); else ``cfg.cfg``."""
    if resumed is not None:  # a snapshot from before this rule recorded no choice: it used "auto"
        return str(resumed.get("cfg_resolved") or resumed.get("cfg") or cfg.cfg)
    if cfg.cfg == "auto" and not on_gpu:
        return "small"
    return cfg.cfg


def resolved_hparams(cfg: GanTrainConfig, net_cfg: str | None = None) -> dict[str, float]:
    """Hyper-parameters left as None, filled in like StyleGAN2-ADA's configs."""
    res, mb = cfg.resolution, cfg.batch_size
    name = net_cfg or cfg.cfg
    paper_gamma = {"paper256": 1.0, "paper512": 0.5, "paper1024": 2.0}
    gamma = cfg.gamma
    if gamma is None:
        gamma = paper_gamma.get(name, 0.0002 * res * res / mb)
    lr = cfg.lr if cfg.lr is not None else (0.002 if res >= 1024 else 0.0025)
    ema = cfg.ema_kimg if cfg.ema_kimg is not None else mb * 10 / 32
    pl = cfg.pl_weight if cfg.pl_weight is not None else (0.0 if name == "small" else 2.0)
    return {"gamma": float(gamma), "lr": float(lr), "ema_kimg": float(ema), "pl_weight": float(pl)}


def _flat_all_reduce(fabric: Any, params: list[Any], sanitize: bool = True) -> None:
    """Average gradients over processes with one flat all-reduce; missing grads count as zero.

    ``sanitize`` replaces NaN/inf by finite values (as StyleGAN2-ADA does); it is off under
    ``16-mixed``, whose gradient scaler must see infinities to skip the step and lower its scale."""

    if fabric.world_size <= 1:
        if sanitize:
            for p in params:
                if p.grad is not None:
                    torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.flatten() for g in grads])
    flat = fabric.all_reduce(flat, reduce_op="mean")
    if sanitize:
        torch.nan_to_num_(flat, nan=0.0, posinf=1e5, neginf=-1e5)
    off = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[off : off + n].view_as(p).to(p.dtype)
        off += n


def _resolve_precision(cfg: GanTrainConfig, accelerator: str) -> str:

    if cfg.precision != "auto":
        return cfg.precision
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def run_gan_train(cfg: GanTrainConfig) -> dict[str, Any]:
    """Train (or resume, or with ``kimg=0`` just initialise) a StyleGAN2-ADA in ``cfg.out``.

    Returns a summary: run folder, last snapshot, kimg reached, final augment p, seconds per kimg.
    """
    from lightning.fabric import Fabric

    cfg.validate()
    if not cfg.data:
        raise GlomsslError("--data is required: a folder of images, a manifest, or slide files")
    if not cfg.out:
        raise GlomsslError("--out is required: the run folder to write")
    for src in cfg.data:
        if not Path(src).exists():
            raise GlomsslError(
                f"--data {src} does not exist; pass an image folder, manifest or slide"
            )
    world = cfg.devices * cfg.num_nodes
    strategy = cfg.strategy
    if strategy == "auto":
        strategy = "ddp" if world > 1 else "auto"
    precision = _resolve_precision(cfg, cfg.accelerator)
    fabric = Fabric(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=strategy,
        precision=precision,  # type: ignore[arg-type]
    )
    if strategy in ("ddp_spawn", "ddp_fork"):
        return fabric.launch(_train_worker, cfg, precision)  # type: ignore[no-any-return,arg-type]
    fabric.launch()
    return _train_worker(fabric, cfg, precision)


def _train_worker(fabric: Any, cfg: GanTrainConfig, precision: str) -> dict[str, Any]:
    import numpy as np

    from glomssl.config import to_dict, to_yaml
    from glomssl.datagan.augment import AdaptiveP, AugmentPipe
    from glomssl.datagan.generate import save_grid
    from glomssl.datagan.loss import PathLengthPenalty, discriminator_loss, generator_loss
    from glomssl.datagan.metrics import MetricState
    from glomssl.datagan.networks import create_discriminator, create_generator
    from glomssl.datagan.snapshot import (
        latest_complete_snapshot,
        list_snapshots,
        load_optimizer_state,
        save_snapshot,
        snapshot_name,
    )
    from glomssl.engine import truncate_metrics
    from glomssl.fsutil import atomic_write_text
    from glomssl.runs import MetricsLogger

    t_start = time.time()  # --max-minutes counts from here (start-up included)
    run = Path(cfg.out)
    rank0 = fabric.global_rank == 0
    dataset = make_dataset(cfg)  # bad data fails before anything is written
    if rank0:
        run.mkdir(parents=True, exist_ok=True)
        _report_skipped(dataset, run)
    fabric.barrier()
    existing = list_snapshots(run) if run.is_dir() else []
    if existing and not cfg.resume:
        raise GlomsslError(
            f"{run} already holds snapshots; pass --resume to continue it or choose a new --out"
        )
    dev = fabric.device
    snap = None
    if existing:  # the newest snapshot that loads; a half-written newer one is reported and skipped
        snap = latest_complete_snapshot(run, device=str(dev), warn=rank0)
    net_cfg = network_config(cfg, dev.type == "cuda", snap["meta"]["config"] if snap else None)
    if rank0 and snap is None and net_cfg != cfg.cfg:
        print(
            f"gan train: CPU run, --cfg {cfg.cfg} uses the '{net_cfg}' networks (the full ones "
            "take hours per kimg on a CPU); pass --cfg paper256 (or another) to force them",
            file=sys.stderr,
        )
    hp = resolved_hparams(cfg, net_cfg)
    mixed = precision != "32-true"
    sanitize = precision != "16-mixed"
    conv_clamp = 256.0 if mixed else None
    if dev.type == "cpu" and fabric.world_size > 1:  # share the cores, no OpenMP oversubscription
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, cfg.devices)))

    torch.manual_seed(cfg.seed)  # identical initial networks on every rank
    net_kw: dict[str, Any] = {"conv_clamp": conv_clamp}
    if cfg.channel_max is not None:
        net_kw["channel_max"] = cfg.channel_max
    G = create_generator(net_cfg, cfg.resolution, **net_kw).to(dev)
    D = create_discriminator(net_cfg, cfg.resolution, **net_kw).to(dev)
    G.set_fused(dev.type == "cuda")
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    pipe = AugmentPipe(cfg.aug_p if cfg.aug == "fixed" else 0.0).to(dev)
    ada = AdaptiveP(pipe, cfg.target, cfg.ada_kimg, cfg.ada_interval) if cfg.aug == "ada" else None

    def adam(net: torch.nn.Module, interval: int) -> torch.optim.Optimizer:
        c = interval / (interval + 1) if interval > 0 else 1.0
        return torch.optim.Adam(net.parameters(), lr=hp["lr"] * c, betas=(0.0, 0.99**c), eps=1e-8)

    opt_G = adam(G, cfg.g_reg_interval if hp["pl_weight"] > 0 else 0)
    opt_D = adam(D, cfg.d_reg_interval)
    cur_nimg = 0
    if snap is not None:
        if snap["meta"]["G_kwargs"] != G.init_kwargs or snap["meta"]["D_kwargs"] != D.init_kwargs:
            raise GlomsslError(
                f"{snap['path']} was trained with other network settings "
                f"({snap['meta']['G_kwargs']}); resume with the run's own --cfg/--resolution/"
                "--channel-max/--precision, or start a new --out"
            )
        for dst, key in ((G, "G"), (D, "D"), (G_ema, "G_ema")):
            dst.load_state_dict(snap[key].state_dict())
        load_optimizer_state(opt_G, "opt_G", snap["tensors"])
        load_optimizer_state(opt_D, "opt_D", snap["tensors"])
        cur_nimg = int(snap["meta"]["cur_nimg"])
        if cfg.aug == "ada":
            pipe.p.fill_(snap["augment_p"])
        if rank0:  # lines a killed run logged after this snapshot would be logged twice
            # kimg is fractional; engine.truncate_metrics compares numbers (its hint says int)
            truncate_metrics(run / "metrics.jsonl", cur_nimg / 1000, key="kimg")
        del snap
    opt_G, opt_D = fabric.setup_optimizers(opt_G, opt_D)
    cfg_dict = to_dict(cfg)
    cfg_dict["resolved"] = hp
    cfg_dict["precision_resolved"] = precision
    cfg_dict["cfg_resolved"] = net_cfg
    if rank0:  # reusable with --config; what the automatic values resolved to, as comments
        resolved = "".join(
            f"# resolved {k}: {v}\n"
            for k, v in {**hp, "precision": precision, "cfg": net_cfg}.items()
        )
        atomic_write_text(run / "config.yaml", to_yaml(cfg) + resolved)
    logger = MetricsLogger(run / "metrics.jsonl")
    grid = cfg.grid or grid_size(cfg.resolution)
    grid_z = torch.randn(grid * grid, G.z_dim, generator=torch.Generator().manual_seed(123))

    def snapshot() -> Path:
        path = run / snapshot_name(cur_nimg)
        if rank0:
            save_snapshot(
                path,
                G,
                D,
                G_ema,
                float(pipe.p),
                cur_nimg,
                cfg_dict,
                opt_G.optimizer,
                opt_D.optimizer,
            )
            save_grid(G_ema, grid_z, grid, path.with_name(f"fakes-{cur_nimg // 1000:06d}.png"))
        fabric.barrier()
        return path

    if rank0 and not existing:
        real_grid(dataset, grid, run / "reals.png")
    if cfg.kimg == 0 or cur_nimg >= cfg.kimg * 1000:
        last = snapshot()
        p_now = float(pipe.p)
        return {"run": str(run), "snapshot": str(last), "kimg": cur_nimg / 1000, "augment_p": p_now}

    batch_gpu = cfg.batch_size // fabric.world_size
    loader = build_loader(dataset, batch_gpu, cfg, fabric.global_rank, fabric.world_size)
    batches = infinite_batches(loader)
    torch.manual_seed(cfg.seed * 1000 + fabric.global_rank + cur_nimg)  # per-rank latents
    np.random.seed(cfg.seed + fabric.global_rank)
    pl_reg = PathLengthPenalty(hp["pl_weight"]) if hp["pl_weight"] > 0 else None
    metric_state = None
    if (cfg.metric_encoder or cfg.metric_inception) and rank0:
        metric_state = MetricState(
            cfg.metric_encoder or None,
            dataset,
            cfg.metric_num,
            str(dev),
            inception=cfg.metric_inception or None,
        )

    it = 0
    total = int(cfg.kimg * 1000)
    tick_start_nimg, tick_start_time, start_time = cur_nimg, time.time(), time.time()
    next_snap = (cur_nimg // int(cfg.snap * 1000) + 1) * int(cfg.snap * 1000)
    acc: dict[str, list[float]] = {}
    bar = _progress(cfg, rank0, total, cur_nimg)
    last_path: Path | None = None

    def record(key: str, value: Any) -> None:
        acc.setdefault(key, []).append(float(value))

    step_sec = 0.0  # the last step's duration: the next one is expected to take as long

    def out_of_time() -> bool:
        """True when one more step would end past ``max_minutes`` (counted from the start of the
        command, start-up included); rank 0's clock decides for every rank."""
        if cfg.max_minutes is None:
            return False
        late = time.time() - t_start + step_sec >= cfg.max_minutes * 60
        return bool(fabric.broadcast(late, src=0)) if fabric.world_size > 1 else late

    log_lines = rank0 and not cfg.quiet and bar is None  # no terminal: plain lines for the log
    loop_t0, start_nimg, last_line = time.perf_counter(), cur_nimg, time.time()
    done = False
    while not done:
        step_t0 = time.time()
        real = next(batches).to(dev).float() / 127.5 - 1  # (b, 3, R, R) in [-1, 1]
        # --- G main
        G.requires_grad_(True)
        D.requires_grad_(False)
        z = torch.randn(batch_gpu, G.z_dim, device=dev)
        with fabric.autocast():
            loss_g = generator_loss(G, D, pipe, z, cfg.style_mixing)
        fabric.backward(loss_g)
        _flat_all_reduce(fabric, list(G.parameters()), sanitize)
        opt_G.step()
        opt_G.zero_grad(set_to_none=True)
        record("loss_G", loss_g.detach())
        # --- G path-length regularisation (lazy)
        if pl_reg is not None and it % cfg.g_reg_interval == 0:
            z = torch.randn(batch_gpu, G.z_dim, device=dev)
            with fabric.autocast():
                loss_pl, pen = pl_reg(G, z, cfg.g_reg_interval, cfg.style_mixing)
            fabric.backward(loss_pl)
            _flat_all_reduce(fabric, list(G.parameters()), sanitize)
            opt_G.step()
            opt_G.zero_grad(set_to_none=True)
            record("pl_penalty", pen)
        # --- D main (+ lazy R1)
        G.requires_grad_(False)
        D.requires_grad_(True)
        do_r1 = it % cfg.d_reg_interval == 0
        z = torch.randn(batch_gpu, G.z_dim, device=dev)
        with fabric.autocast():
            loss_d, st = discriminator_loss(
                G, D, pipe, z, real, hp["gamma"], do_r1, cfg.d_reg_interval, cfg.style_mixing
            )
        fabric.backward(loss_d)
        _flat_all_reduce(fabric, list(D.parameters()), sanitize)
        opt_D.step()
        opt_D.zero_grad(set_to_none=True)
        record("loss_D", st["loss_fake"] + st["loss_real"])
        record("loss_D_real", st["loss_real"])
        record("loss_D_fake", st["loss_fake"])
        if "r1_penalty" in st:
            record("r1_penalty", st["r1_penalty"])
        record("D_real_sign", torch.sign(st["real_logits"].float()).mean())
        if ada is not None:
            ada.accumulate(st["real_logits"])
        # --- G_ema (StyleGAN2-ADA: half-life in images, ramped up early in training)
        cur_nimg += cfg.batch_size
        it += 1
        update_ema(G_ema, G, ema_beta(cfg.batch_size, cur_nimg, hp["ema_kimg"], cfg.ema_rampup))
        # --- ADA p
        if ada is not None and it % cfg.ada_interval == 0:
            red = (
                (lambda t: fabric.all_reduce(t.to(dev), reduce_op="sum").cpu())
                if fabric.world_size > 1
                else None
            )
            ada.update(cfg.batch_size * cfg.ada_interval, red)
        if bar is not None:
            bar.update(cfg.batch_size)
        step_sec = time.time() - step_t0
        done = cur_nimg >= total or out_of_time()
        tick = cur_nimg - tick_start_nimg >= cfg.tick * 1000 or done or cur_nimg >= next_snap
        if log_lines and (tick or time.time() - last_line >= 60):
            _log_line(cur_nimg, start_nimg, total, loop_t0, acc, float(pipe.p))
            last_line = time.time()
        if tick:
            now = time.time()
            row = _tick_row(acc, cur_nimg, float(pipe.p), now, tick_start_time, tick_start_nimg)
            row["total_sec"] = now - start_time
            if ada is not None and ada.last_rt is not None:
                row["ada_rt"] = ada.last_rt
            if cur_nimg >= next_snap or done:
                last_path = snapshot()
                next_snap += int(cfg.snap * 1000)
                if metric_state is not None and rank0:
                    row.update(metric_state.evaluate(G_ema))
                fabric.barrier()
            logger.log(**row)
            acc.clear()
            tick_start_nimg, tick_start_time = cur_nimg, time.time()
    if bar is not None:
        bar.close()
    _check_ranks_agree(fabric, G)
    return {
        "run": str(run),
        "snapshot": str(last_path) if last_path else "",
        "kimg": cur_nimg / 1000,
        "augment_p": float(pipe.p),
    }


def grid_size(resolution: int) -> int:
    """Default side of the reals/fakes grids: 8 images, fewer above 512 px so the PNG stays within
    4096 px (1024 px: 4 x 4)."""
    return max(2, min(8, 4096 // resolution))


def ema_beta(batch: int, cur_nimg: int, ema_kimg: float, rampup: float | None) -> float:
    """G_ema decay per step: half-life ``ema_kimg`` thousand images, shortened early in training to
    ``rampup * cur_nimg`` (StyleGAN2-ADA)."""
    ema_nimg = ema_kimg * 1000
    if rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * rampup)
    return float(0.5 ** (batch / max(ema_nimg, 1e-8)))


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """G_ema <- beta * G_ema + (1 - beta) * G for parameters; buffers (w_avg, noise) copied."""
    for pe, p in zip(G_ema.parameters(), G.parameters(), strict=True):
        pe.copy_(p.detach().lerp(pe, beta))
    for be, b in zip(G_ema.buffers(), G.buffers(), strict=True):
        be.copy_(b)


def _check_ranks_agree(fabric: Any, G: torch.nn.Module) -> None:
    """Every process must hold the same G after training (gradients were averaged); a cheap
    checksum comparison catches a broken all-reduce instead of silently saving rank 0's view."""
    if fabric.world_size <= 1:
        return
    with torch.no_grad():
        total = torch.stack([p.double().sum() for p in G.parameters()]).sum()
        slots = torch.zeros(fabric.world_size, dtype=torch.float64, device=total.device)
        slots[fabric.global_rank] = total
    gathered = fabric.all_reduce(slots, reduce_op="sum")  # every rank's checksum
    if float((gathered - gathered[0]).abs().max()) > 1e-6 * (1 + float(total.abs())):
        raise RuntimeError(f"distributed GAN ranks diverged: G checksums {gathered.tolist()}")


def _tick_row(
    acc: dict[str, list[float]], nimg: int, p: float, now: float, t0: float, n0: int
) -> dict[str, Any]:
    import psutil

    row: dict[str, Any] = {"kimg": nimg / 1000, "augment_p": p}
    row.update({k: sum(v) / len(v) for k, v in acc.items() if v})
    dk = max(nimg - n0, 1) / 1000
    row["sec_per_kimg"] = (now - t0) / dk
    row["rss_gb"] = psutil.Process().memory_info().rss / 2**30
    if torch.cuda.is_available():
        row["gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def _log_line(
    nimg: int, start: int, total: int, t0: float, acc: dict[str, list[float]], p: float
) -> None:
    """One plain progress line on stderr (runs without a terminal: nohup, sbatch, CI)."""
    from glomssl.engine import progress_line

    extra: dict[str, Any] = {"kimg": round(nimg / 1000, 3)}
    for key in ("loss_G", "loss_D"):
        if acc.get(key):
            extra[key] = round(sum(acc[key]) / len(acc[key]), 4)
    extra["augment_p"] = round(p, 3)
    print(progress_line("gan train img", nimg - start, total - start, t0, **extra), file=sys.stderr)
    sys.stderr.flush()


def _progress(cfg: GanTrainConfig, rank0: bool, total: int, start: int) -> Any:
    if cfg.quiet or not rank0 or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="img", desc="gan train")


# --------------------------------------------------------------------------------------------------
# Training data: folders / manifests (map-style) or whole-slide images (patches sampled on the fly)


def _to_square(img: Any, size: int) -> Any:
    """Centre-crop a PIL image to a square and resize it to ``size`` (shared with projection)."""
    from glomssl.data.images import centre_square

    return centre_square(img, size)


class ImageDataset:
    """Images from folders/manifests as uint8 tensors (3, R, R); x-flipped at random with mirror.

    ``skipped`` lists (path, reason) of the files left out because they cannot be read."""

    def __init__(
        self,
        paths: list[Path],
        resolution: int,
        mirror: bool,
        skipped: list[tuple[str, str]] | None = None,
    ) -> None:
        self.paths = paths
        self.resolution = resolution
        self.mirror = mirror
        self.skipped = skipped or []

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        import numpy as np

        from glomssl.data.images import load_rgb

        img = _to_square(load_rgb(self.paths[i]), self.resolution)
        x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)  # (3, R, R) uint8
        if self.mirror and torch.rand(()) < 0.5:
            x = x.flip(2)
        return x


class SlideDataset:
    """Endless random tissue patches from whole-slide images, as uint8 tensors (3, R, R)."""

    def __init__(self, cfg: GanTrainConfig, slides: list[str | os.PathLike[str]]) -> None:
        from glomssl.wsi import SlidePatchSampler

        self.sampler = SlidePatchSampler(
            slides, patch_size=cfg.resolution, level=cfg.slide_level, mpp=cfg.slide_mpp
        )
        self.resolution = cfg.resolution
        self.mirror = cfg.mirror
        self.seed = cfg.seed

    def stream(self, seed: int) -> Any:
        import numpy as np

        rng = np.random.default_rng(seed)
        while True:
            img = _to_square(self.sampler.sample(rng), self.resolution)
            x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)  # (3, R, R)
            if self.mirror and rng.random() < 0.5:
                x = x.flip(2)
            yield x


def make_dataset(cfg: GanTrainConfig) -> ImageDataset | SlideDataset:
    """Folders/manifests -> ImageDataset; slides -> SlideDataset.

    Every image's header is checked up front (glomssl.data.images.image_ok: readable, not a
    decompression bomb); unreadable files are left out and listed in ``dataset.skipped``."""
    from glomssl.data.images import image_ok
    from glomssl.manifest import load_image_list
    from glomssl.wsi import is_slide_path

    slides: list[str | os.PathLike[str]] = [
        d for d in cfg.data if is_slide_path(d) and Path(d).is_file()
    ]
    if slides and len(slides) != len(cfg.data):
        raise GlomsslError(
            "--data mixes slides with folders/manifests; train on one kind at a time"
        )
    if slides:
        return SlideDataset(cfg, slides)
    paths: list[Path] = []
    for src in cfg.data:
        paths.extend(p for p, _row in load_image_list(src))
    good: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for p in paths:
        reason = image_ok(p)
        if reason is None:
            good.append(p)
        else:
            skipped.append((str(p), reason))
    if not good:
        first = f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise GlomsslError(
            f"--data {', '.join(cfg.data)} holds no readable image{first}; check the path"
        )
    return ImageDataset(good, cfg.resolution, cfg.mirror, skipped)


def _report_skipped(ds: Any, run: Path) -> None:
    """RUN/skipped.jsonl lists the unreadable training images (rewritten each start); one line says
    how many."""
    from glomssl.fsutil import atomic_write_text

    skipped = getattr(ds, "skipped", [])
    target = run / "skipped.jsonl"
    if not skipped:
        target.unlink(missing_ok=True)
        return
    rows = "".join(json.dumps({"path": p, "reason": r}) + "\n" for p, r in skipped)
    atomic_write_text(target, rows)
    n = len(skipped) + len(ds)  # a warning, shown with --quiet too (quiet drops the progress bar)
    print(
        f"gan train: skipped {len(skipped)} of {n} images that cannot be read (listed in {target})",
        file=sys.stderr,
    )


class _InfiniteShard:
    """Endless shuffled indices, one shard per process (each epoch a new seeded permutation)."""

    def __init__(self, n: int, rank: int, world: int, seed: int) -> None:
        self.n, self.rank, self.world, self.seed = n, rank, world, seed

    def __iter__(self) -> Any:
        import numpy as np

        epoch = 0
        while True:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            if self.n < self.world:
                perm = np.resize(perm, self.world)
            yield from perm[self.rank :: self.world].tolist()
            epoch += 1


class _SlideStream(tud.IterableDataset):  # type: ignore[type-arg]
    """Per-process, per-worker seeded stream of slide patches."""

    def __init__(self, ds: SlideDataset, rank: int) -> None:
        super().__init__()
        self.ds, self.rank = ds, rank

    def __iter__(self) -> Any:
        info = tud.get_worker_info()
        wid = info.id if info is not None else 0
        return self.ds.stream(self.ds.seed * 100003 + self.rank * 101 + wid)


def build_loader(ds: Any, batch: int, cfg: GanTrainConfig, rank: int, world: int) -> Any:
    """A DataLoader that never ends: per-process shards of folder data, or per-worker slide streams."""
    if isinstance(ds, SlideDataset):
        return tud.DataLoader(_SlideStream(ds, rank), batch_size=batch, num_workers=cfg.workers)
    sampler = _InfiniteShard(len(ds), rank, world, cfg.seed)
    return tud.DataLoader(
        ds,
        batch_size=batch,
        sampler=sampler,  # type: ignore[arg-type]
        num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0,
        drop_last=True,
    )


def infinite_batches(loader: Any) -> Any:
    while True:
        yield from loader


def iter_images(ds: Any, n: int, seed: int = 0) -> Any:
    """The first ``n`` images (uint8 (3, R, R)) of a random order of a dataset or a slide stream."""
    import numpy as np

    if isinstance(ds, SlideDataset):
        stream = ds.stream(seed)
        for _ in range(n):
            yield next(stream)
        return
    order = np.random.default_rng(seed).permutation(len(ds))
    for i in np.resize(order, n) if n > len(ds) else order[:n]:
        yield ds[int(i)]


def real_grid(ds: Any, n: int, path: Path) -> None:
    """Save an n x n grid of training images (what D sees before augmentation) as PNG."""
    import numpy as np
    from PIL import Image

    from glomssl.fsutil import atomic_open

    x = torch.stack(list(iter_images(ds, n * n)))  # (n*n, 3, R, R)
    r = x.shape[-1]
    grid = x.reshape(n, n, 3, r, r).permute(0, 3, 1, 4, 2).reshape(n * r, n * r, 3)
    with atomic_open(path, "wb") as fh:
        Image.fromarray(np.ascontiguousarray(grid.numpy())).save(fh, format="PNG")
