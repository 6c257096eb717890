"""``glomssl replay``: an offline Open-i (search + images) on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import click

from glomssl.cli.common import config_options, drop_none, json_option, run_command


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


def set_keys(command: click.Command, config_cls: type, items: tuple[str, ...]) -> tuple[str, ...]:
    """``--set`` items with the option names of ``--help`` (``data=DIR``, ``json=true``,
    ``max-page=3`` or ``max_page=3``) rewritten to the config keys (``folder``, ``as_json``,
    ``max_page``); the config keys themselves (what ``--dry-run`` prints) stay accepted. Each value
    is coerced and bound-checked as its option's would be; an unknown key is a one-line error."""
    from glomssl.config import _check_number, _coerce, parse_sets
    from glomssl.errors import GlomsslError

    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    types = typing.get_type_hints(config_cls)
    names: dict[str, str] = {}  # accepted key -> config field
    labels: dict[str, str] = {}  # config field -> the option as --help shows it
    shown: list[str] = []  # the option names, in --help order, for the error message
    for param in command.params:
        if not isinstance(param, click.Option) or param.name not in fields:
            continue
        for flag in param.opts:
            if flag.startswith("--"):
                name = flag[2:]
                names[name] = names[name.replace("-", "_")] = param.name
                labels.setdefault(param.name, flag)
                shown.append(name)
    internal = [f for f in fields if f not in names]
    names.update({f: f for f in fields})
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            out.append(item)  # not KEY=VALUE: parse_sets says so
            continue
        field = names.get(key.strip())
        if field is None:
            also = f"; also the config keys {', '.join(internal)}" if internal else ""
            raise GlomsslError(
                f"--set {item!r}: unknown key {key.strip()!r}; {command.name} takes "
                f"{', '.join(shown)} (dashes or underscores){also}"
            )
        value = parse_sets([f"{field}={raw}"])[field]
        if value is not None:  # null: as if not given
            label = labels.get(field, "--" + field.replace("_", "-"))
            value = _coerce(field, value, types[field], label)
            _check_number(label, value, dict(fields[field].metadata))
        out.append(f"{field}={raw}")
    return tuple(out)
