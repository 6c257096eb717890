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
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from glomssl.datagan.dataset import (  # noqa: F401  (re-exported for callers of this module)
    ImageDataset,
    SlideDataset,
    _report_skipped,
    build_loader,
    infinite_batches,
    iter_images,
    make_dataset,
    real_grid,
)
from glomssl.datagan.train_config import (  # noqa: F401
    PRECISIONS,
    GanTrainConfig,
    network_config,
    resolved_hparams,
)
from glomssl.errors import GlomsslError


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
    from glomssl.fsutil import refuse_out_is_input

    refuse_out_is_input(cfg.out, cfg.data, "gan train", "--data")  # a resume would train on grids
    world = cfg.devices * cfg.num_nodes
    strategy = cfg.strategy
    if strategy == "auto":
        strategy = "ddp" if world > 1 else "auto"
    precision = _resolve_precision(cfg, cfg.accelerator)
    try:
        fabric = Fabric(
            accelerator=cfg.accelerator,
            devices=cfg.devices,
            num_nodes=cfg.num_nodes,
            strategy=strategy,
            precision=precision,  # type: ignore[arg-type]
        )
    except (
        ValueError,
        RuntimeError,
        ImportError,
        TypeError,
    ) as exc:  # e.g. no GPU for --accelerator gpu
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise GlomsslError(
            f"--accelerator {cfg.accelerator} / --devices {cfg.devices} / --strategy {cfg.strategy} "
            f"/ --precision {precision} cannot run here ({first}); pick settings this machine has, "
            "e.g. --accelerator cpu"
        ) from exc
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
    from glomssl.fsutil import atomic_write_text, ensure_writable_dir
    from glomssl.runs import MetricsLogger

    t_start = time.time()  # --max-minutes counts from here (start-up included)
    run = Path(cfg.out)
    rank0 = fabric.global_rank == 0
    dataset = make_dataset(cfg)  # bad data fails before anything is written
    if rank0:
        ensure_writable_dir(run)  # an --out that is a file is a one-line error
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
    if rank0 and snap is None and net_cfg != cfg.networks:
        print(
            f"gan train: CPU run, --networks {cfg.networks} uses the '{net_cfg}' networks (the full ones "
            "take hours per kimg on a CPU); pass --networks paper256 (or another) to force them",
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
                f"({snap['meta']['G_kwargs']}); resume with the run's own --networks/--resolution/"
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
                    row["metric_num"] = metric_state.num  # capped at the real images there are
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
