"""``glomssl dedup``: drop exact, perceptual and embedding near-duplicates."""

from __future__ import annotations

import click

from glomssl.cli.common import reasons_text


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
            f"{s['groups']} groups{reasons_text(s['reasons'])}, unreadable {s['failed']}; "
            f"wrote {s['out']}/manifest.jsonl"
        )
