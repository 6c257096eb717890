"""``glomssl curate`` (+ ``curate train``): keep light-microscopy tissue panels.

Thin, like every glomssl command: check options -> build a dataclass config -> call one library
function (:func:`glomssl.mining.curate.run_curate`, :func:`glomssl.mining.scorer.run_train_scorer`,
:func:`glomssl.mining.dedup.run_dedup`) -> print a short result.
"""

from __future__ import annotations

import click

from glomssl.cli import CommandGroup
from glomssl.cli.common import reasons_text
from glomssl.errors import GlomsslError


@click.group(cls=CommandGroup, invoke_without_command=True)
@click.option("--input", "input_", default=None, help="Folder of panels or a manifest.jsonl.")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--scorer", default=None, help="Scorer JSON from `glomssl curate train`.")
@click.option("--threshold", type=float, default=None, help="Keep panels scoring >= this [0.7].")
@click.option(
    "--min-side", type=int, default=None, help="Drop panels whose shorter side is below [64]."
)
@click.option("--config", "config_file", default=None, help="YAML file of options.")
@click.option("--dry-run", is_flag=True, help="Print the merged config and exit.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
@click.pass_context
def curate(
    ctx: click.Context,
    input_: str | None,
    out: str | None,
    scorer: str | None,
    threshold: float | None,
    min_side: int | None,
    config_file: str | None,
    dry_run: bool,
    quiet: bool,
) -> None:
    """Keep light-microscopy tissue panels; drop charts, text, diagrams, blank, fluorescence,
    greyscale (EM) and tiny panels with a reason; optionally score the rest with a trained scorer.

    \b
    Example:
      glomssl curate --input panels/manifest.jsonl --out curated/ --scorer scorer.json

    Writes OUT/manifest.jsonl (kept), OUT/rejected.jsonl (reason, detail, score), OUT/failures.jsonl.
    """
    if ctx.invoked_subcommand is not None:
        return
    from glomssl.config import build_config, to_yaml
    from glomssl.mining.curate import CurateConfig, run_curate

    overrides = {
        "input": input_,
        "out": out,
        "scorer": scorer,
        "threshold": threshold,
        "min_side": min_side,
        "quiet": quiet or None,
    }
    cfg = build_config(CurateConfig, config_file, overrides)
    if dry_run:
        click.echo(to_yaml(cfg), nl=False)
        return
    if not cfg.input or not cfg.out:
        raise GlomsslError("curate needs --input FOLDER|MANIFEST and --out DIR (or `curate train`)")
    s = run_curate(cfg)
    if not quiet:
        click.echo(
            f"curate: {s['input']} panels -> kept {s['kept']}, rejected {s['rejected']}"
            f"{reasons_text(s['reasons'])}, unreadable {s['failed']}; wrote {s['out']}/manifest.jsonl"
        )


@curate.command("train")
@click.option("--positives", required=True, help="Folder of images to keep (e.g. glomeruli).")
@click.option("--negatives", required=True, help="Folder of images to drop (other tissue, charts).")
@click.option("--out", default=None, help="Scorer file to write (.json) [scorer.json].")
@click.option(
    "--model", type=click.Choice(["logreg", "mlp"]), default=None, help="Classifier [logreg]."
)
@click.option("--val-fraction", type=float, default=None, help="Held-out share for metrics [0.2].")
@click.option("--seed", type=int, default=None, help="Split and MLP seed [0].")
@click.option("--config", "config_file", default=None, help="YAML file of options.")
@click.option("--dry-run", is_flag=True, help="Print the merged config and exit.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
def train(
    positives: str,
    negatives: str,
    out: str | None,
    model: str | None,
    val_fraction: float | None,
    seed: int | None,
    config_file: str | None,
    dry_run: bool,
    quiet: bool,
) -> None:
    """Train the curation scorer from a folder of positives and a folder of negatives.

    \b
    Example:
      glomssl curate train --positives glomeruli/ --negatives other/ --out scorer.json
    """
    from glomssl.config import build_config, to_yaml
    from glomssl.mining.scorer import ScorerTrainConfig, run_train_scorer

    overrides = {
        "positives": positives,
        "negatives": negatives,
        "out": out,
        "model": model,
        "val_fraction": val_fraction,
        "seed": seed,
        "quiet": quiet or None,
    }
    cfg = build_config(ScorerTrainConfig, config_file, overrides)
    if dry_run:
        click.echo(to_yaml(cfg), nl=False)
        return
    s = run_train_scorer(cfg)
    if not quiet:
        held = s.get("heldout")
        metric = (
            f"held-out accuracy {held['accuracy']:.3f} on {held['n']}"
            if held
            else "no held-out split"
        )
        click.echo(
            f"curate train: {s['positives']} positives, {s['negatives']} negatives "
            f"({s['skipped']} unreadable skipped); {metric}; wrote {s['out']}"
        )
