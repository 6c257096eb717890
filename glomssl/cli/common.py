"""Helpers shared by the command modules: option sets, config building, one output style.

Every command follows one pattern: check options -> build one dataclass config (defaults <- ``--config``
YAML <- ``--set key.sub=value`` <- options) -> call ONE library function -> print one plain summary line
(or, with ``--json``, one JSON object for machines).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C")


def drop_none(**kw: Any) -> dict[str, Any]:
    """The options the user actually gave (click passes None for the others)."""
    return {k: v for k, v in kw.items() if v is not None}


def csv_tuple(value: str | None) -> tuple[str, ...] | None:
    """``"a, b,c"`` -> ``("a", "b", "c")``; None stays None."""
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def reasons_text(counts: dict[str, int]) -> str:
    """`` (chart 3, text 2)`` for the non-zero counts, or an empty string."""
    parts = [f"{k} {v}" for k, v in counts.items() if v]
    return f" ({', '.join(parts)})" if parts else ""


def config_options(
    fn: F,
    set_help: str = "Override one config key, dotted for nested ones (--dry-run lists the keys); "
    "repeatable.",
) -> F:
    """``--config FILE``, ``--set KEY=VALUE`` (repeatable, dotted keys) and ``--dry-run``."""
    fn = click.option("--dry-run", is_flag=True, help="Print the merged config and exit.")(fn)
    fn = click.option("--set", "set_", multiple=True, metavar="KEY=VALUE", help=set_help)(fn)
    return config_file_option(fn)


# a YAML file of options (a folder is click's one-line error, before the command runs)
config_file_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML file of options (command-line options win).",
)


def hardware_options(fn: F) -> F:
    """The one set of hardware options every training command takes (see glomssl.engine)."""
    opts = [
        click.option(
            "--accelerator", type=click.Choice(["auto", "cpu", "gpu"]), default=None, help="[auto]"
        ),
        click.option("--devices", type=int, default=None, help="Devices per node [1]."),
        click.option("--num-nodes", type=int, default=None, help="Nodes [1]."),
        click.option(
            "--strategy", default=None, help="auto, ddp, ddp_spawn or ddp_find_unused [auto]."
        ),
        click.option(
            "--precision",
            default=None,
            help="auto, 32, bf16-mixed or 16-mixed [auto: bf16-mixed on GPUs with bf16, else 32].",
        ),
    ]
    for deco in reversed(opts):
        fn = deco(fn)
    return fn


HARDWARE_KEYS = ("accelerator", "devices", "num_nodes", "strategy", "precision")


def hardware_overrides(kw: dict[str, Any]) -> dict[str, Any]:
    """Move the hardware options out of ``kw`` (in place) into a nested ``hardware`` section."""
    hw = {k: kw.pop(k) for k in HARDWARE_KEYS if k in kw}
    return {k: v for k, v in hw.items() if v is not None}


def build(
    config_cls: type[C],
    config_file: str | None,
    overrides: dict[str, Any],
    sets: tuple[str, ...] = (),
) -> C:
    """Merge defaults <- YAML file <- ``--set`` items <- options, validate, return the config."""
    from glomssl.config import build_config, parse_sets

    return build_config(config_cls, config_file, overrides, sets=parse_sets(sets))


def run_command(
    config_cls: type[C],
    config_file: str | None,
    overrides: dict[str, Any],
    fn: Callable[[C], Any],
    *,
    dry_run: bool = False,
    sets: tuple[str, ...] = (),
) -> Any:
    """Build the config; with ``dry_run`` print it and return None, else return ``fn(config)``."""
    from glomssl.config import to_yaml

    cfg = build(config_cls, config_file, overrides, sets)
    if dry_run:
        click.echo(to_yaml(cfg), nl=False)
        return None
    return fn(cfg)


def echo_json(result: Any) -> None:
    """One JSON line (for the commands whose summary is meant for machines)."""
    click.echo(json.dumps(result, default=str))


def json_option(fn: F) -> F:
    """``--json``: print one JSON object instead of the plain summary line (parameter ``as_json``)."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON object instead of the summary line."
    )(fn)


def emit(result: Any, line: str, as_json: bool, quiet: bool = False) -> None:
    """The one output style: ``line`` (one plain sentence) or, with ``--json``, ``result`` as one
    JSON object; nothing when ``quiet`` (``--json`` wins over ``--quiet``). Warnings in
    ``result["warnings"]`` go to stderr as ``warning: ...`` lines in plain mode."""
    if as_json:
        echo_json(result)
        return
    if quiet:
        return
    for w in result.get("warnings", []) if isinstance(result, dict) else []:
        click.echo(f"warning: {w}", err=True)
    click.echo(line)


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

    def field_of(param: click.Parameter) -> str | None:
        """The config field an option sets (``input_`` sets ``input``), or None."""
        name = param.name or ""
        for cand in (name, name.rstrip("_")):
            if isinstance(param, click.Option) and cand in fields:
                return cand
        return None

    for param in command.params:
        field = field_of(param)
        if field is None:
            continue
        for flag in param.opts:
            if flag.startswith("--"):
                name = flag[2:]
                names[name] = names[name.replace("-", "_")] = field
                labels.setdefault(field, flag)
                shown.append(name)
    required = {  # a --set of one of these could never take effect
        f for p in command.params if p.required and (f := field_of(p)) is not None
    }
    internal = [f for f in fields if f not in names]
    names.update({f: f for f in fields})
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            out.append(item)  # not KEY=VALUE: parse_sets says so
            continue
        field = names.get(key.strip())
        if field in required:
            raise GlomsslError(
                f"--set {item!r}: {labels[field]} is required and typed options win over --set; "
                f"give {labels[field]} on the command line instead"
            )
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
