"""``glomssl pretrain``: self-supervised pretraining (calls :func:`glomssl.ssl.train.run_pretrain`)."""

from __future__ import annotations

from typing import Any

import click

from glomssl.cli.common import drop_none
from glomssl.config import build_config, to_yaml

METHODS = ("simsiam", "regcon", "byol", "barlowtwins", "vicreg")
ARCHS = ("resnet18", "resnet34", "resnet50")


@click.command("pretrain")
@click.option("--method", type=click.Choice(METHODS), default=None, help="SSL method [vicreg].")
@click.option("--data", multiple=True, required=True, help="FOLDER, MANIFEST or slide file(s).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--arch", type=click.Choice(ARCHS), default=None, help="Encoder [resnet18].")
@click.option("--image-size", type=int, default=None, help="Training crop size [64].")
@click.option("--batch-size", type=int, default=None, help="Images per device per step [256].")
@click.option("--epochs", type=int, default=None, help="Epochs (default 100 unless --max-steps).")
@click.option("--max-steps", type=int, default=None, help="Optimizer steps; 0 exports random init.")
@click.option("--lr", type=float, default=None, help="Base lr, scaled by batch/256 [0.05].")
@click.option("--warmup-steps", type=int, default=None, help="Linear lr warm-up steps [40].")
@click.option("--accumulate", type=int, default=None, help="Gradient accumulation steps [1].")
@click.option("--accelerator", type=click.Choice(["cpu", "gpu", "auto"]), default=None)
@click.option("--devices", type=int, default=None, help="Devices per node [1].")
@click.option("--num-nodes", type=int, default=None, help="Nodes [1].")
@click.option("--strategy", type=str, default=None, help="auto | ddp | ddp_spawn ... [auto].")
@click.option("--precision", type=click.Choice(["32", "bf16-mixed", "16-mixed"]), default=None)
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
@click.option("--seed", type=int, default=None)
@click.option(
    "--resume", is_flag=True, default=False, help="Continue from RUN/checkpoints/last.ckpt."
)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None)
@click.option("--dry-run", is_flag=True, help="Print the merged config and exit.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def pretrain(config_file: str | None, dry_run: bool, stain_jitter: float | None, **kw: Any) -> None:
    """Self-supervised pretraining (SimSiam, region contrast, BYOL, Barlow Twins, VICReg).

    Example: glomssl pretrain --method simsiam --data corpus/manifest.jsonl --out runs/ssl1 \
--image-size 96 --max-steps 2000
    """
    from glomssl.ssl.train import PretrainConfig

    over = drop_none(**kw)
    over["data"] = list(kw["data"])
    if not kw["resume"]:
        over.pop("resume", None)
    if not kw["quiet"]:
        over.pop("quiet", None)
    if stain_jitter is not None:
        over["augment"] = {"stain_jitter": stain_jitter}
    if config_file:
        from glomssl.config import load_yaml

        base_aug = load_yaml(config_file).get("augment", {})
        if "augment" in over:
            over["augment"] = {**base_aug, **over["augment"]}
    cfg = build_config(PretrainConfig, config_file, over)
    if dry_run:
        click.echo(to_yaml(cfg), nl=False)
        return
    from glomssl.ssl.train import run_pretrain

    res = run_pretrain(cfg)
    from glomssl.runs import is_rank_zero

    if is_rank_zero():
        click.echo(
            f"pretrained {cfg.method}/{cfg.arch} for {res['steps']} steps -> {res['backbone']}"
            + (f" ({res['skipped']} unreadable images skipped)" if res.get("skipped") else "")
        )
