"""``glomssl dedup``: drop exact, perceptual and embedding near-duplicates."""

from __future__ import annotations

from typing import Any

import click

from glomssl.cli.common import (
    config_options,
    csv_tuple,
    drop_none,
    emit,
    json_option,
    reasons_text,
    run_command,
)


@click.command()
@click.option("--input", "input_", required=True, help="Folder of images or a manifest.jsonl.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--embeddings", default=None, help="npz from `glomssl embed` (paths, embeddings).")
@click.option("--methods", default=None, help="Comma list of sha256,phash,embedding [all].")
@click.option("--phash-threshold", type=int, default=None, help="Max Hamming bits of 64 [6].")
@click.option("--cosine", type=float, default=None, help="Min embedding cosine [0.95].")
@click.option(
    "--nn-ratio",
    type=float,
    default=None,
    help="Embedding pairs must also be this fraction of the typical neighbour distance or closer "
    "[0.1; 0 = off].",
)
@click.option(
    "--max-embedding-drop",
    type=float,
    default=None,
    help="Refuse when embedding links alone would drop more than this share of rows [0.2].",
)
@click.option(
    "--force",
    is_flag=True,
    default=None,
    help="Accept a run that --max-embedding-drop would refuse.",
)
@click.option("--exact-max", type=int, default=None, help="Exact search up to N rows [20000].")
@click.option("--nlist", type=int, default=None, help="IVF lists beyond exact-max [0 = auto].")
@click.option("--nprobe", type=int, default=None, help="IVF lists per row [2].")
@click.option(
    "--keep", type=click.Choice(["largest", "best"]), default=None, help="Keeper [largest]."
)
@config_options
@json_option
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
def dedup(
    input_: str,
    methods: str | None,
    config_file: str | None,
    set_: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
    quiet: bool,
    **kw: Any,
) -> None:
    """Drop exact (sha256), perceptual-hash and embedding near-duplicates, keeping one per group.

    \b
    Example:
      glomssl dedup --input curated/manifest.jsonl --out corpus/ --embeddings emb.npz

    Writes OUT/manifest.jsonl (kept), OUT/dropped.jsonl (each dropped row, dup_of, reason) and
    OUT/skipped.jsonl (unreadable files, if any).
    """
    from glomssl.mining.dedup import DedupConfig, run_dedup

    methods_list = list(csv_tuple(methods) or ()) or None
    overrides = drop_none(**kw, input=input_, methods=methods_list, quiet=quiet or None)
    s = run_command(DedupConfig, config_file, overrides, run_dedup, dry_run=dry_run, sets=set_)
    if s is None:
        return
    line = (
        f"dedup: {s['input']} rows -> kept {s['kept']}, dropped {s['dropped']} in "
        f"{s['groups']} groups{reasons_text(s['reasons'])}, unreadable {s['skipped']}; "
        f"wrote {s['out']}/manifest.jsonl"
    )
    emit(s, line, as_json, quiet)
