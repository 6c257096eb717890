"""``glomssl finetune cls``: train the few-label glomerulosclerosis classifier (Glo-In-One protocol).

Calls :func:`glomssl.finetune.classifier.protocol.run_finetune_cls`.
"""

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

MODES = ("linear", "finetune", "scratch")
ARCHS = ("resnet18", "resnet34", "resnet50")


@click.command("cls")
@click.option("--data", required=True, help="Labels CSV (image, label, patient/slide) or manifest.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--backbone", default=None, help="`glomssl pretrain` run or backbone.safetensors.")
@click.option("--mode", type=click.Choice(MODES), default=None, help="Protocol [linear].")
@click.option("--arch", type=click.Choice(ARCHS), default=None, help="Scratch network [resnet18].")
@click.option("--classes", default=None, help="Class names in order, comma-separated.")
@click.option("--label-fraction", type=float, default=None, help="Share of training labels [1].")
@click.option("--folds", type=int, default=None, help="Grouped folds; 1: one model [5].")
@click.option("--group", default=None, help="Column no split may share [patient, else slide].")
@click.option("--loss", type=click.Choice(["focal", "ce"]), default=None, help="[focal].")
@click.option("--focal-gamma", type=float, default=None, help="Focal loss gamma [2.5].")
@click.option(
    "--balance",
    type=click.Choice(["weights", "sampler", "none"]),
    default=None,
    help="Class balance: loss weights, a balanced sampler, or none [weights].",
)
@click.option("--epochs", type=int, default=None, help="[linear 100, finetune 30, scratch 70].")
@click.option(
    "--lr", type=float, default=None, help="Adam lr [linear 1e-3, finetune 1e-3, scratch 1e-4]."
)
@click.option("--backbone-lr-scale", type=float, default=None, help="finetune: trunk lr x [0.1].")
@click.option("--batch-size", type=int, default=None, help="Images per step [64].")
@click.option("--image-size", type=int, default=None, help="Input size [the backbone's, else 224].")
@click.option("--export/--no-export", default=None, help="Train and export a final model [export].")
@hardware_options
@click.option("--workers", type=int, default=None, help="Image decoding threads [2].")
@click.option("--seed", type=int, default=None, help="Folds, fractions and init [0].")
@click.option("--resume", is_flag=True, default=None, help="Keep finished folds of RUN.")
@config_options
@click.option("--quiet", is_flag=True, default=None, help="No progress lines.")
def cls(
    config_file: str | None,
    set_: tuple[str, ...],
    dry_run: bool,
    classes: str | None,
    **kw: Any,
) -> None:
    """Few-label classifier: grouped K-fold protocol, label fractions, exported model.

    \b
    Example (linear layer on a pretrained encoder, 10% of the labels, 5 slide-grouped folds):
      glomssl finetune cls --data labels.csv --out runs/cls --backbone runs/ssl \\
          --group slide --label-fraction 0.1
    """
    from glomssl.cli.common import run_command
    from glomssl.finetune.classifier.protocol import FinetuneClsConfig, run_finetune_cls

    over = drop_none(**kw)
    over["hardware"] = hardware_overrides(over)
    if classes is not None:
        over["classes"] = list(csv_tuple(classes) or ())
    res = run_command(
        FinetuneClsConfig, config_file, over, run_finetune_cls, dry_run=dry_run, sets=set_
    )
    if res is None:
        return
    from glomssl.finetune.classifier.metrics import format_table
    from glomssl.runs import is_rank_zero

    if not is_rank_zero():
        return
    click.echo(
        f"{res['n_images']} images, {res['n_groups']} groups ({res['group'] or 'per image'}), "
        f"mode {res['mode']}, {res['label_fraction']:.0%} of the labels"
        + (f", {res['skipped']} unreadable skipped" if res["skipped"] else "")
    )
    rows = []
    if res.get("mean"):
        rows.append((f"{res['folds']} folds", res["mean"]))
    if res.get("final"):
        rows.append(("final val", res["final"]["val"]))
    rows.append(("chance", {"balanced_accuracy": res["chance_balanced_accuracy"]}))
    click.echo(format_table(rows))
    click.echo(
        f"results: {res['run']}/results.json"
        + (f"; model: {res['model']}" if res.get("model") else "")
    )
