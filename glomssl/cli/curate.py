"""``glomssl curate`` (+ ``curate train``): keep light-microscopy tissue panels.

Thin, like every glomssl command: check options -> build a dataclass config -> call one library
function (:func:`glomssl.mining.curate.run_curate`, :func:`glomssl.mining.scorer.run_train_scorer`)
-> print one summary line (or, with ``--json``, one JSON object).
"""

from __future__ import annotations

from typing import Any

import click

from glomssl.cli import CommandGroup
from glomssl.cli.common import (
    config_options,
    drop_none,
    emit,
    json_option,
    reasons_text,
    run_command,
)
from glomssl.errors import GlomsslError


@click.group(cls=CommandGroup, invoke_without_command=True)
@click.option("--input", "input_", default=None, help="Folder of panels or a manifest.jsonl.")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--scorer", default=None, help="Scorer JSON from `glomssl curate train`.")
@click.option("--threshold", type=float, default=None, help="Keep panels scoring >= this [0.7].")
@click.option(
    "--min-side", type=int, default=None, help="Drop panels whose shorter side is below [64]."
)
@config_options
@json_option
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
@click.pass_context
def curate(
    ctx: click.Context,
    input_: str | None,
    config_file: str | None,
    set_: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
    quiet: bool,
    **kw: Any,
) -> None:
    """Keep light-microscopy tissue panels; drop charts, text, diagrams, blank, fluorescence,
    false-colour maps, greyscale (EM) and tiny panels with a reason; optionally score the rest with
    a trained scorer.

    \b
    Example:
      glomssl curate --input panels/manifest.jsonl --out curated/ --scorer scorer.json

    Writes OUT/manifest.jsonl (kept), OUT/rejected.jsonl (reason, detail, score) and
    OUT/skipped.jsonl (unreadable files, if any).
    """
    if ctx.invoked_subcommand is not None:
        return
    from glomssl.mining.curate import CurateConfig, run_curate

    def run(cfg: CurateConfig) -> dict[str, Any]:
        if not cfg.input or not cfg.out:
            raise GlomsslError(
                "curate needs --input FOLDER|MANIFEST and --out DIR (or `curate train`)"
            )
        return run_curate(cfg)

    overrides = drop_none(**kw, input=input_, quiet=quiet or None)
    s = run_command(CurateConfig, config_file, overrides, run, dry_run=dry_run, sets=set_)
    if s is None:
        return
    line = (
        f"curate: {s['input']} panels -> kept {s['kept']}, rejected {s['rejected']}"
        f"{reasons_text(s['reasons'])}, unreadable {s['skipped']}; wrote {s['out']}/manifest.jsonl"
    )
    emit(s, line, as_json, quiet)


@curate.command("train")
@click.option("--positives", required=True, help="Folder of images to keep (e.g. glomeruli).")
@click.option("--negatives", required=True, help="Folder of images to drop (other tissue, charts).")
@click.option("--out", default=None, help="Scorer file to write (.json) [scorer.json].")
@click.option(
    "--model", type=click.Choice(["logreg", "mlp"]), default=None, help="Classifier [logreg]."
)
@click.option("--val-fraction", type=float, default=None, help="Held-out share for metrics [0.2].")
@click.option(
    "--drawn-negatives",
    type=int,
    default=None,
    help="Drawn non-tissue panels (charts, false-colour maps, grey EM with insets ...) added to "
    "the negatives [see docs/curate.md].",
)
@click.option("--seed", type=int, default=None, help="Split, drawing and MLP seed [0].")
@config_options
@json_option
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
def train(
    config_file: str | None,
    set_: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
    quiet: bool,
    **kw: Any,
) -> None:
    """Train the curation scorer from a folder of positives and a folder of negatives.

    \b
    Example:
      glomssl curate train --positives glomeruli/ --negatives other/ --out scorer.json
    """
    from glomssl.mining.scorer import ScorerTrainConfig, run_train_scorer

    overrides = drop_none(**kw, quiet=quiet or None)
    s = run_command(
        ScorerTrainConfig, config_file, overrides, run_train_scorer, dry_run=dry_run, sets=set_
    )
    if s is None:
        return
    held = s.get("heldout")
    metric = (
        f"held-out balanced accuracy {held['balanced_accuracy']:.3f} (accuracy "
        f"{held['accuracy']:.3f}, majority baseline {held['majority_baseline']:.3f}) on {held['n']}"
        if held
        else "no held-out split"
    )
    line = (
        f"curate train: {s['positives']} positives, {s['negatives']} negatives + "
        f"{s['drawn_negatives']} drawn ({s['skipped']} unreadable skipped); {metric}; "
        f"wrote {s['out']}"
    )
    emit(s, line, as_json, quiet)
