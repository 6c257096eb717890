"""Click commands ``glomssl mine`` and ``glomssl replay`` (thin: options -> config -> one call)."""

from __future__ import annotations

import click

from glomssl.errors import GlomsslError


def _csv(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


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
        "license": _csv(license_),
        "limit": limit,
        "page_size": page_size,
        "rate": rate,
        "workers": workers,
        "user_agent": user_agent,
        "stop_after": stop_after,
        "skip": _csv(skip),
        "quiet": quiet or None,
    }
    cfg = build_config(MineConfig, config_file, overrides)
    if dry_run:
        click.echo(to_yaml(cfg), nl=False)
        return
    summary = run_mine(cfg)
    if not quiet:
        click.echo(summary.paragraph())


@click.command()
@click.option("--data", "folder", required=True, type=click.Path(file_okay=False), help="Folder.")
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--latency", type=float, default=0.0, show_default=True, help="Seconds per request.")
@click.option("--max-page", type=int, default=None, help="Serve at most this many records a page.")
@click.option("--p429", type=float, default=0.0, show_default=True, help="Chance of a 429.")
@click.option("--p500", type=float, default=0.0, show_default=True, help="Chance of a 500.")
@click.option("--ptruncated", type=float, default=0.0, show_default=True, help="Truncated bodies.")
@click.option("--retry-after", type=int, default=1, show_default=True, help="Retry-After seconds.")
def replay(
    folder: str,
    port: int,
    latency: float,
    max_page: int | None,
    p429: float,
    p500: float,
    ptruncated: float,
    retry_after: int,
) -> None:
    """Serve a folder (records.json + images) as an offline Open-i on 127.0.0.1 until Ctrl-C.

    \b
    Example:
      glomssl replay --data glomssl/data/demo --port 8765 --latency 0.05
    """
    from glomssl.mining.replay import Faults, serve

    if latency < 0 or retry_after < 0 or (max_page is not None and max_page < 1):
        raise GlomsslError("--latency, --retry-after must be >= 0 and --max-page >= 1")
    if not all(0.0 <= p <= 1.0 for p in (p429, p500, ptruncated)) or p429 + p500 + ptruncated > 1:
        raise GlomsslError("--p429/--p500/--ptruncated are probabilities summing to at most 1")
    if not 0 <= port <= 65535:
        raise GlomsslError(f"--port {port} must be between 0 and 65535")
    faults = Faults(
        latency_s=latency,
        max_page=max_page,
        p_429=p429,
        p_500=p500,
        p_truncated=ptruncated,
        retry_after_s=retry_after,
    )
    serve(folder, port, faults)
