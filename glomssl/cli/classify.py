"""``glomssl classify``: classify crops with an exported classifier (calls
:func:`glomssl.finetune.classifier.infer.run_classify`)."""

from __future__ import annotations

from typing import Any

import click

from glomssl.cli.common import config_options, drop_none, run_command


@click.command("classify")
@click.option("--model", required=True, help="`finetune cls` run folder or model.safetensors.")
@click.option("--input", required=True, help="Folder of crops, manifest, or labels CSV.")
@click.option("--out", required=True, help="predictions.jsonl to write.")
@click.option("--evaluate", default=None, help="Labels CSV/manifest: score the predictions.")
@click.option("--batch-size", type=int, default=None, help="Images per batch [64].")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N [auto].")
@config_options
@click.option("--quiet", is_flag=True, default=None, help="No progress lines.")
def classify(config_file: str | None, set_: tuple[str, ...], dry_run: bool, **kw: Any) -> None:
    """Classify glomerulus crops: one JSON line per image with the class and probabilities.

    \b
    Example (external validation: predict a folder and score it against its labels):
      glomssl classify --model runs/cls --input crops/ --out preds.jsonl --evaluate labels.csv
    """
    from glomssl.finetune.classifier.infer import ClassifyConfig, run_classify

    res = run_command(
        ClassifyConfig, config_file, drop_none(**kw), run_classify, dry_run=dry_run, sets=set_
    )
    if res is None:
        return
    counts = ", ".join(f"{c} {n}" for c, n in res["predicted"].items())
    click.echo(
        f"classified {res['n']} images ({counts}) -> {res['out']}"
        + (f"; {res['skipped']} unreadable skipped" if res["skipped"] else "")
    )
    m = res.get("metrics")
    if m:
        from glomssl.finetune.classifier.metrics import format_table

        click.echo(
            format_table(
                [("evaluated", m), ("chance", {"balanced_accuracy": m["chance_balanced_accuracy"]})]
            )
        )
