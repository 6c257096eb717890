"""``glomssl pretrain``: self-supervised pretraining (calls :func:`glomssl.ssl.train.run_pretrain`)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import click

from glomssl.cli.common import config_options, drop_none, hardware_options, hardware_overrides

METHODS = ("simsiam", "regcon", "byol", "barlowtwins", "vicreg")
ARCHS = ("resnet18", "resnet34", "resnet50")


def _check_stain_jitter(value: float) -> None:
    """``--stain-jitter`` checked here, so the error names the option typed (the config key is
    ``augment.stain_jitter``)."""
    from glomssl.errors import GlomsslError
    from glomssl.ssl.transforms import AugmentSpec

    meta = next(f.metadata for f in dataclasses.fields(AugmentSpec) if f.name == "stain_jitter")
    lo, hi = meta.get("ge", 0.0), meta.get("le", 1.0)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise GlomsslError(
            f"--stain-jitter {value:g} must be a number from {lo:g} to {hi:g} (0: off), e.g. 0.05"
        )


@click.command("pretrain")
@click.option("--method", type=click.Choice(METHODS), default=None, help="SSL method [vicreg].")
@click.option("--data", multiple=True, required=True, help="FOLDER, MANIFEST or slide file(s).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--arch", type=click.Choice(ARCHS), default=None, help="Encoder [resnet18].")
@click.option("--image-size", type=int, default=None, help="Training crop size [64].")
@click.option("--batch-size", type=int, default=None, help="Images per device per step [256].")
@click.option("--epochs", type=int, default=None, help="Epochs (default 100 unless --max-steps).")
@click.option("--max-steps", type=int, default=None, help="Optimizer steps; 0 exports random init.")
@click.option("--max-minutes", type=float, default=None, help="Stop after this wall time.")
@click.option("--lr", type=float, default=None, help="Base lr, scaled by batch/256 [0.05].")
@click.option("--warmup-steps", type=int, default=None, help="Linear lr warm-up steps [40].")
@click.option("--accumulate", type=int, default=None, help="Gradient accumulation steps [1].")
@hardware_options
@click.option("--workers", type=int, default=None, help="Data-loading processes [2].")
@click.option("--cache/--no-cache", default=None, help="Keep decoded images in memory.")
@click.option("--stain-jitter", type=float, default=None, help="HED stain jitter strength [0.05].")
@click.option("--regions", type=int, default=None, help="regcon: number of regions K [8].")
@click.option(
    "--backbone-bn",
    type=click.Choice(["train", "frozen"]),
    default=None,
    help="frozen: BatchNorm statistics of the encoder stay at their initial values [train].",
)
@click.option(
    "--regcon-negatives",
    type=click.Choice(["batch", "image"]),
    default=None,
    help="regcon: InfoNCE negatives from the whole batch or the same image only [batch].",
)
@click.option("--probe-data", default=None, help="Labelled CSV/manifest: online kNN probe.")
@click.option("--probe-every", type=int, default=None, help="Steps between online probes [500].")
@click.option("--seed", type=int, default=None, help="Random seed [0].")
@click.option(
    "--resume", is_flag=True, default=None, help="Continue from RUN/checkpoints/last.ckpt."
)
@config_options
@click.option("--quiet", is_flag=True, default=None, help="No progress bar.")
def pretrain(
    config_file: str | None,
    set_: tuple[str, ...],
    dry_run: bool,
    stain_jitter: float | None,
    **kw: Any,
) -> None:
    """Self-supervised pretraining (VICReg by default; SimSiam, region contrast, BYOL, Barlow Twins).

    \b
    Example (the measured default recipe: VICReg, ResNet-18, 64 px, batch 256):
      glomssl pretrain --data corpus/manifest.jsonl --out runs/ssl --max-steps 800
    """
    from glomssl.cli.common import run_command
    from glomssl.ssl.train import PretrainConfig, run_pretrain

    over = drop_none(**kw)
    over["data"] = list(kw["data"])
    over["hardware"] = hardware_overrides(over)
    if stain_jitter is not None:
        _check_stain_jitter(stain_jitter)
        over["augment"] = {"stain_jitter": stain_jitter}
    res = run_command(PretrainConfig, config_file, over, run_pretrain, dry_run=dry_run, sets=set_)
    if res is None:
        return
    from glomssl.runs import is_rank_zero

    if is_rank_zero():
        click.echo(
            f"pretrained {res['method']}/{res['arch']} for {res['steps']} steps -> {res['backbone']}"
            + (f" ({res['skipped']} unreadable images skipped)" if res.get("skipped") else "")
        )
