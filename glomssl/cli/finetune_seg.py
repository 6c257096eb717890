"""``glomssl finetune seg``: train a segmenter (calls :func:`glomssl.finetune.segmenter.train.run_finetune_seg`)."""

from __future__ import annotations

from typing import Any

import click

from glomssl.cli.common import (
    config_options,
    csv_tuple,
    drop_none,
    hardware_options,
    hardware_overrides,
)

MODELS = ("dynamic", "multihead", "multiclass", "unet", "deeplabv3")
ENCODERS = ("resunet", "resnet18", "resnet34", "resnet50")


@click.command("seg")
@click.option("--train", multiple=True, required=True, help="Table(s) of path,mask,task rows.")
@click.option("--val", multiple=True, help="Validation table(s) [a grouped holdout of --train].")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--model", type=click.Choice(MODELS), default=None, help="Segmenter [dynamic].")
@click.option("--classes", default=None, help="Comma-separated class names [the tables' tasks].")
@click.option("--encoder", type=click.Choice(ENCODERS), default=None, help="[resunet].")
@click.option("--base", type=int, default=None, help="resunet width (32 in GIO2) [32].")
@click.option(
    "--init", default=None, help="`glomssl pretrain` run (ResNet encoders) to start from."
)
@click.option("--image-size", type=int, default=None, help="Working size in pixels [512].")
@click.option("--batch-size", type=int, default=None, help="Images per device per step [8].")
@click.option("--epochs", type=int, default=None, help="Epochs [200 unless --max-steps].")
@click.option("--max-steps", type=int, default=None, help="Optimizer steps.")
@click.option("--max-minutes", type=float, default=None, help="Stop after this wall time.")
@click.option("--lr", type=float, default=None, help="Learning rate [1e-3].")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default=None, help="[sgd].")
@click.option("--synthetic", multiple=True, help="Synthetic table(s), e.g. a datagan manifest.")
@click.option("--synthetic-ratio", type=float, default=None, help="Synthetic share of a batch.")
@click.option("--train-filter", multiple=True, help="Keep training rows with KEY=VALUE[,VALUE].")
@click.option("--eval-filter", multiple=True, help="Keep validation rows with KEY=VALUE[,VALUE].")
@click.option("--batching", type=click.Choice(["task", "mixed"]), default=None, help="[task].")
@click.option("--val-fraction", type=float, default=None, help="Held-out share [0.15].")
@click.option("--mask-threshold", type=int, default=None, help="Painted masks: > this is [127].")
@hardware_options
@click.option("--workers", type=int, default=None, help="Data-loading processes [2].")
@click.option("--cache/--no-cache", default=None, help="Keep decoded images in memory.")
@click.option("--ckpt-every", type=int, default=None, help="Steps between checkpoints [50].")
@click.option("--val-every", "val_every_steps", type=int, default=None, help="Steps between "
              "validations [an epoch].")  # fmt: skip
@click.option("--select", type=click.Choice(["best", "final"]), default=None,
              help="Export the best validated weights (GIO2) or the final ones [best].")  # fmt: skip
@click.option("--seed", type=int, default=None, help="Random seed [0].")
@click.option("--resume", is_flag=True, default=None, help="Continue from RUN/checkpoints.")
@config_options
@click.option("--quiet", is_flag=True, default=None, help="No progress bar.")
def seg(config_file: str | None, set_: tuple[str, ...], dry_run: bool, **kw: Any) -> None:
    """Train a segmenter on partially labelled masks (Glo-In-One v2's dynamic head by default).

    \b
    Each table row is one annotated image: path, mask (PNG the image's size) and task (the class
    the mask annotates). Masks from any painting tool or a QuPath export work (thresholded at 127).
    \b
    Example:
      glomssl finetune seg --train masks.csv --out runs/seg --image-size 256 --max-steps 2000
    """
    from glomssl.cli.common import run_command
    from glomssl.finetune.segmenter.train import SegTrainConfig, run_finetune_seg

    over = drop_none(**kw)
    for key in ("train", "val", "synthetic", "train_filter", "eval_filter"):
        if kw.get(key):
            over[key] = list(kw[key])
        else:
            over.pop(key, None)
    if kw.get("classes") is not None:
        over["classes"] = list(csv_tuple(kw["classes"]) or ())
    over["hardware"] = hardware_overrides(over)
    res = run_command(SegTrainConfig, config_file, over, run_finetune_seg, dry_run=dry_run,
                      sets=set_)  # fmt: skip
    if res is None or "model_path" not in res:
        return
    per = ", ".join(f"{c} {v:.3f}" for c, v in res["val_dice_per_class"].items())
    click.echo(
        f"trained {res['model']} ({','.join(res['classes'])}) for {res['steps']} steps -> "
        f"{res['model_path']}; validation Dice {res['val_dice']:.3f} ({per}); "
        f"weights: {res['weights']}"
        + (f"; {res['skipped']} unreadable images skipped" if res.get("skipped") else "")
    )
