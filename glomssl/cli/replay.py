"""``glomssl replay``: an offline Open-i (search + images) on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import click

from glomssl.cli.common import config_options, drop_none, json_option, run_command, set_keys


@click.command()
@click.option("--data", "folder", required=True, type=click.Path(file_okay=False), help="Folder.")
@click.option("--port", type=int, default=None, help="TCP port on 127.0.0.1; 0 = any free [8765].")
@click.option("--latency", type=float, default=None, help="Seconds added to each request [0].")
@click.option("--max-page", type=int, default=None, help="Serve at most this many records a page.")
@click.option("--p429", type=float, default=None, help="Chance of a 429 answer [0].")
@click.option("--p500", type=float, default=None, help="Chance of a 500 answer [0].")
@click.option("--ptruncated", type=float, default=None, help="Chance of a truncated body [0].")
@click.option("--retry-after", type=int, default=None, help="Retry-After seconds of a 429 [1].")
@config_options
@json_option
def replay(
    config_file: str | None, set_: tuple[str, ...], dry_run: bool, as_json: bool, **kw: Any
) -> None:
    """Serve a folder (records.json + images) as an offline Open-i on 127.0.0.1 until Ctrl-C.
    Prints one line with its address (or, with --json, one JSON object: folder, records, url).

    \b
    Example:
      glomssl replay --data glomssl/assets/demo --port 8765 --latency 0.05
    """
    from glomssl.mining.replay import ReplayConfig, run_replay

    sets = set_keys(click.get_current_context().command, ReplayConfig, set_)
    overrides = drop_none(**kw, as_json=as_json or None)
    run_command(ReplayConfig, config_file, overrides, run_replay, dry_run=dry_run, sets=sets)
