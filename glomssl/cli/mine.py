"""``glomssl mine``: Open-i search -> download -> separate -> curate -> dedup (thin: options -> config -> one call)."""

from __future__ import annotations

import click

from glomssl.cli.common import csv_tuple


@click.command()
@click.option("--query", required=True, help='Open-i search words, e.g. "glomerular OR glomeruli".')
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--endpoint", default=None, help="Open-i server [https://openi.nlm.nih.gov].")
@click.option("--image-type", default=None, help="Open-i `it` code, e.g. mc (microscopy).")
@click.option("--collection", default=None, help="Open-i `coll`: pmc, cxr, usc, hmd, mpx.")
@click.option("--license", "license_", default=None, help="Licence codes, e.g. by,bync.")
@click.option("--limit", type=int, default=None, help="Stop after this many figures.")
@click.option("--page-size", type=int, default=None, help="Records asked per search page [30].")
@click.option("--rate", type=float, default=None, help="Max requests/s overall [1.0]; 0 = no cap.")
@click.option("--workers", type=int, default=None, help="Parallel downloads [4].")
@click.option("--user-agent", default=None, help="User-Agent header (say who you are).")
@click.option("--stop-after", default=None, help="Stop after this stage (search, download, ...).")
@click.option("--skip", default=None, help="Comma-separated stages to skip.")
@click.option("--config", "config_file", default=None, help="YAML file of options.")
@click.option("--dry-run", is_flag=True, help="Print the merged config and exit.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
def mine(
    query: str,
    out: str,
    endpoint: str | None,
    image_type: str | None,
    collection: str | None,
    license_: str | None,
    limit: int | None,
    page_size: int | None,
    rate: float | None,
    workers: int | None,
    user_agent: str | None,
    stop_after: str | None,
    skip: str | None,
    config_file: str | None,
    dry_run: bool,
    quiet: bool,
) -> None:
    """Search Open-i and download checked figures into OUT (resumable: rerun to continue).

    \b
    Example:
      glomssl mine --query "glomerular OR glomeruli OR glomerulus" \\
          --image-type mc --out corpus/
    """
    from glomssl.config import build_config, to_yaml
    from glomssl.mining.pipeline import MineConfig, run_mine

    overrides = {
        "query": query,
        "out": out,
        "endpoint": endpoint,
        "image_type": image_type,
        "collection": collection,
        "license": csv_tuple(license_),
        "limit": limit,
        "page_size": page_size,
        "rate": rate,
        "workers": workers,
        "user_agent": user_agent,
        "stop_after": stop_after,
        "skip": csv_tuple(skip),
        "quiet": quiet or None,
    }
    cfg = build_config(MineConfig, config_file, overrides)
    if dry_run:
        click.echo(to_yaml(cfg), nl=False)
        return
    summary = run_mine(cfg)
    if not quiet:
        click.echo(summary.paragraph())
