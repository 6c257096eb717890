"""``glomssl mine``: Open-i search -> download -> separate -> curate -> dedup (thin: options -> config
-> one call -> one summary line or, with ``--json``, one JSON object)."""

from __future__ import annotations

from typing import Any

import click

from glomssl.cli.common import config_options, csv_tuple, drop_none, emit, json_option, run_command


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
@config_options
@json_option
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
def mine(
    license_: str | None,
    skip: str | None,
    config_file: str | None,
    set_: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
    quiet: bool,
    **kw: Any,
) -> None:
    """Search Open-i and download checked figures into OUT, then split, curate and de-duplicate
    them (resumable: rerun to continue). Finding nothing is a result: empty manifests, exit 0.

    \b
    Example:
      glomssl mine --query "glomerular OR glomeruli OR glomerulus" \\
          --image-type mc --out corpus/
    """
    from glomssl.mining.pipeline import MineConfig, run_mine

    overrides = drop_none(
        **kw, license=csv_tuple(license_), skip=csv_tuple(skip), quiet=quiet or None
    )
    summary = run_command(MineConfig, config_file, overrides, run_mine, dry_run=dry_run, sets=set_)
    if summary is not None:
        emit(summary.as_dict(), summary.paragraph(), as_json, quiet)
