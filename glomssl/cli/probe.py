"""``glomssl probe``: linear and kNN probes of embeddings with group-aware splits."""

from __future__ import annotations

import json
import math
from typing import Any

import click

from glomssl.cli.common import config_options, drop_none, run_command


@click.command("probe")
@click.option("--embeddings", required=True, help=".npz written by glomssl embed.")
@click.option("--labels", required=True, help="CSV (image/path, label, ...) or JSONL manifest.")
@click.option("--group", default=None, help="Column no split may share, e.g. slide [slide].")
@click.option(
    "--label-fraction",
    "label_fractions",
    type=float,
    multiple=True,
    help="Repeatable [.01 .05 .1 .25 1].",
)
@click.option("--folds", type=int, default=None, help="Grouped folds per repeat [5].")
@click.option("--repeats", type=int, default=None, help="Repeats with new fold splits [3].")
@click.option("--knn-k", type=int, default=None, help="Neighbours of the kNN probe [20].")
@click.option("--seed", type=int, default=None, help="Split seed [0].")
@click.option("--out", default=None, help="Write the report as JSON here.")
@config_options
def probe(
    label_fractions: tuple[float, ...],
    config_file: str | None,
    set_: tuple[str, ...],
    dry_run: bool,
    **kw: Any,
) -> None:
    """Linear and kNN probes with group-aware splits; prints a table.

    Example: glomssl probe --embeddings crops.npz --labels labels.csv --group slide --label-fraction 0.1
    """
    from glomssl.errors import GlomsslError
    from glomssl.ssl.probe import ProbeConfig, format_table, run_probe

    for f in label_fractions:  # named as typed (the config key is label_fractions)
        if not math.isfinite(f) or not 0 < f <= 1:
            raise GlomsslError(
                f"--label-fraction {f:g} must be a fraction in (0, 1], e.g. 0.1 for 10% of the labels"
            )
    over = drop_none(**kw)
    if label_fractions:
        over["label_fractions"] = list(label_fractions)
    report = run_command(ProbeConfig, config_file, over, run_probe, dry_run=dry_run, sets=set_)
    if report is None:
        return
    for note in report.get("notes", []):
        click.echo(f"note: {note}", err=True)
    click.echo(
        f"{report['n_images']} images, {report['n_groups']} groups, classes "
        + json.dumps(report["classes"])
    )
    click.echo(format_table(report))
