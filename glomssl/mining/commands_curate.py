"""Click commands ``glomssl curate`` (+ ``curate train``) and ``glomssl dedup``.

Thin, like every glomssl command: check options -> build a dataclass config -> call one library
function (:func:`glomssl.mining.curate.run_curate`, :func:`glomssl.mining.scorer.run_train_scorer`,
:func:`glomssl.mining.dedup.run_dedup`) -> print a short result.
"""

from __future__ import annotations

import click

from glomssl.errors import GlomsslError


def _reasons(counts: dict[str, int]) -> str:
    parts = [f"{k} {v}" for k, v in counts.items() if v]
    return f" ({', '.join(parts)})" if parts else ""


@click.group(invoke_without_command=True)
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
            f"{_reasons(s['reasons'])}, unreadable {s['failed']}; wrote {s['out']}/manifest.jsonl"
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


@click.command()
@click.option("--input", "input_", required=True, help="Folder of images or a manifest.jsonl.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--embeddings", default=None, help="npz from `glomssl embed` (paths, embeddings).")
@click.option("--methods", default=None, help="Comma list of sha256,phash,embedding [all].")
@click.option("--phash-threshold", type=int, default=None, help="Max Hamming bits of 64 [6].")
@click.option("--cosine", type=float, default=None, help="Min embedding cosine [0.95].")
@click.option("--exact-max", type=int, default=None, help="Exact search up to N rows [20000].")
@click.option("--nlist", type=int, default=None, help="IVF lists beyond exact-max [0 = auto].")
@click.option("--nprobe", type=int, default=None, help="IVF lists per row [2].")
@click.option(
    "--keep", type=click.Choice(["largest", "best"]), default=None, help="Keeper [largest]."
)
@click.option("--config", "config_file", default=None, help="YAML file of options.")
@click.option("--dry-run", is_flag=True, help="Print the merged config and exit.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
def dedup(
    input_: str,
    out: str,
    embeddings: str | None,
    methods: str | None,
    phash_threshold: int | None,
    cosine: float | None,
    exact_max: int | None,
    nlist: int | None,
    nprobe: int | None,
    keep: str | None,
    config_file: str | None,
    dry_run: bool,
    quiet: bool,
) -> None:
    """Drop exact (sha256), perceptual-hash and embedding near-duplicates, keeping one per group.

    \b
    Example:
      glomssl dedup --input curated/manifest.jsonl --out corpus/ --embeddings emb.npz

    Writes OUT/manifest.jsonl (kept) and OUT/dropped.jsonl (each dropped row, dup_of, reason).
    """
    from glomssl.config import build_config, to_yaml
    from glomssl.mining.dedup import DedupConfig, run_dedup

    overrides = {
        "input": input_,
        "out": out,
        "embeddings": embeddings,
        "methods": methods,
        "phash_threshold": phash_threshold,
        "cosine": cosine,
        "exact_max": exact_max,
        "nlist": nlist,
        "nprobe": nprobe,
        "keep": keep,
        "quiet": quiet or None,
    }
    cfg = build_config(DedupConfig, config_file, overrides)
    if dry_run:
        click.echo(to_yaml(cfg), nl=False)
        return
    s = run_dedup(cfg)
    if not quiet:
        click.echo(
            f"dedup: {s['input']} rows -> kept {s['kept']}, dropped {s['dropped']} in "
            f"{s['groups']} groups{_reasons(s['reasons'])}, unreadable {s['failed']}; "
            f"wrote {s['out']}/manifest.jsonl"
        )
