"""Dataclass configs with YAML load/merge.

Each command has one dataclass config whose defaults are the paper's recipe. The effective config is
``defaults <- user YAML file (--config) <- command-line options``; it is validated, written to the run
folder before work starts (``config.yaml``), and ``--dry-run`` prints it.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from glomssl.errors import GlomsslError

C = TypeVar("C")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Coerce a YAML/CLI value to the field's annotated type, or raise a one-line error."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(name, value, a)
            except GlomsslError as exc:
                errors.append(str(exc))
        raise GlomsslError(errors[0] if errors else f"config {name}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise GlomsslError(f"config {name}: {value!r} is not one of {choices}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise GlomsslError(f"config {name}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        out = [_coerce(name, v, inner) for v in value]
        return tuple(out) if origin is tuple else out
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise GlomsslError(f"config {name}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | str | float):
            raise GlomsslError(f"config {name}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except ValueError as exc:
            raise GlomsslError(f"config {name}: expected an integer, got {value!r}") from exc
        if f != int(f):
            raise GlomsslError(f"config {name}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise GlomsslError(f"config {name}: expected a number, got {value!r}") from exc
    if tp is str:
        if isinstance(value, dict | list):
            raise GlomsslError(f"config {name}: expected a string, got {value!r}")
        return str(value)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value)  # type: ignore[arg-type,type-var]
    return value


def from_dict(cls: type[C], data: dict[str, Any], where: str = "config") -> C:
    """Build a dataclass from a dict, rejecting unknown keys and coercing types."""
    if not isinstance(data, dict):
        raise GlomsslError(f"{where}: expected a mapping of options, got {type(data).__name__}")
    types_ = _field_types(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise GlomsslError(
            f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    kwargs = {k: _coerce(k, v, types_[k]) for k, v in data.items()}
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check()
    return obj


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise GlomsslError(f"config file {p} does not exist; check the --config path")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise GlomsslError(f"config file {p} is not valid YAML: {exc}".splitlines()[0]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GlomsslError(f"config file {p} must hold a mapping of option: value")
    return data


def build_config(
    cls: type[C],
    config_file: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> C:
    """Merge dataclass defaults <- YAML file <- overrides (None values in overrides are ignored)."""
    merged: dict[str, Any] = {}
    if config_file:
        merged.update(load_yaml(config_file))
    for k, v in (overrides or {}).items():
        if v is not None:
            merged[k] = v
    return from_dict(cls, merged, where=str(config_file) if config_file else "options")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data dict of a dataclass config (tuples become lists, paths strings)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, list | tuple):
            return [conv(x) for x in v]
        if isinstance(v, os.PathLike):
            return os.fspath(v)
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)  # type: ignore[no-any-return]


def to_yaml(cfg: Any) -> str:
    import yaml

    return str(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def save_config(cfg: Any, path: str | os.PathLike[str]) -> None:
    """Write the merged config as YAML, atomically."""
    from glomssl.fsutil import atomic_write_text

    atomic_write_text(path, to_yaml(cfg))
