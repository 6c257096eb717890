"""Dataclass configs with YAML load, deep merge, dotted overrides and one validation layer.

Each command has one dataclass config whose defaults are the paper's recipe. The effective config is
``defaults <- user YAML file (--config) <- --set key.sub=value items <- command-line options``, merged
deeply (a nested section given in two places keeps the keys of both). It is validated before any work
starts, written to the run folder (``config.yaml``), and ``--dry-run`` prints it.

Validation happens in two layers, both in :func:`from_dict`:

1. :func:`check_values` (generic, every config): every float must be finite (NaN and inf are refused
   everywhere), and fields declared with :func:`opt` are checked against their bounds; the error names
   the option as ``--name`` (or ``section.key`` for nested keys) and says what range it takes.
2. the config's own ``validate()`` for rules that tie several options together. ``validate()`` only
   checks; it never changes the config.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from glomssl.errors import GlomsslError

C = TypeVar("C")

_BOUNDS = ("ge", "gt", "le", "lt")


def opt(
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    finite: bool = True,
) -> Any:
    """A dataclass field with bounds that :func:`check_values` enforces (ge >=, gt >, le <=, lt <).

    ``opt(0.05, gt=0)`` is a positive number defaulting to 0.05; ``opt(None, ge=1)`` an optional integer
    of at least 1. Bounds apply to every element of a list-valued field.
    """
    meta: dict[str, Any] = {k: v for k, v in zip(_BOUNDS, (ge, gt, le, lt)) if v is not None}
    if not finite:
        meta["finite"] = False
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def option_name(name: str, prefix: str = "") -> str:
    """How an error names a config key: ``--max-steps`` at the top level, ``augment.blur`` nested."""
    return f"{prefix}{name}" if prefix else "--" + name.replace("_", "-")


def _range_text(meta: dict[str, Any]) -> str:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " and ".join(f"{words[k]} {meta[k]:g}" for k in _BOUNDS if k in meta)


def _check_number(label: str, v: Any, meta: dict[str, Any]) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return
    if isinstance(v, float) and not math.isfinite(v) and meta.get("finite", True):
        raise GlomsslError(f"{label} {v} is not a finite number; give a finite value")
    bad = (
        ("ge" in meta and not v >= meta["ge"])
        or ("gt" in meta and not v > meta["gt"])
        or ("le" in meta and not v <= meta["le"])
        or ("lt" in meta and not v < meta["lt"])
    )
    if bad:
        raise GlomsslError(
            f"{label} must be {_range_text(meta)}, got {v if isinstance(v, int) else format(v, 'g')}"
        )


def check_values(obj: Any, prefix: str = "") -> None:
    """Refuse non-finite floats anywhere in a (nested) dataclass config and enforce :func:`opt` bounds."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        label = option_name(f.name, prefix)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            check_values(v, prefix=f"{prefix}{f.name}.")
            continue
        meta = dict(f.metadata)
        for item in v if isinstance(v, list | tuple) else [v]:
            _check_number(label, item, meta)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, value: Any, tp: Any, label: str | None = None) -> Any:
    """Coerce a YAML/CLI value to the field's annotated type, or raise a one-line error that
    names the option as ``label`` (``--max-steps``, ``augment.blur``)."""
    label = label or f"config {name}"
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
                return _coerce(name, value, a, label)
            except GlomsslError as exc:
                errors.append(str(exc))
        raise GlomsslError(errors[0] if errors else f"{label}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise GlomsslError(f"{label}: {value!r} is not one of {choices}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        elif isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]  # one item: ``--set hidden=64`` and ``hidden: 64`` read as numbers
        if not isinstance(value, list | tuple):
            raise GlomsslError(f"{label}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        out = [_coerce(name, v, inner, label) for v in value]
        return tuple(out) if origin is tuple else out
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise GlomsslError(f"{label}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | str | float):
            raise GlomsslError(f"{label}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except ValueError as exc:
            raise GlomsslError(f"{label}: expected an integer, got {value!r}") from exc
        # int(nan) and int(inf) would raise ValueError and OverflowError
        if not math.isfinite(f) or f != int(f):
            raise GlomsslError(f"{label}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise GlomsslError(f"{label}: expected a number, got {value!r}") from exc
    if tp is str:
        if isinstance(value, dict | list):
            raise GlomsslError(f"{label}: expected a string, got {value!r}")
        return str(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise GlomsslError(f"{label}: expected a section of key: value lines, got {value!r}")
        return from_dict(tp, value, f"config section {name}", f"{name}.")  # type: ignore[arg-type,type-var]
    return value


def from_dict(cls: type[C], data: dict[str, Any], where: str = "config", prefix: str = "") -> C:
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
    kwargs = {k: _coerce(k, v, types_[k], option_name(k, prefix)) for k, v in data.items()}
    obj = cls(**kwargs)
    check_values(obj, prefix)
    check = getattr(obj, "validate", None)
    if callable(check):
        check()
    return obj


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if p.is_dir():
        raise GlomsslError(f"--config {p} is a folder; pass a YAML file of option: value")
    if not p.is_file():
        raise GlomsslError(f"config file {p} does not exist; check the --config path")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GlomsslError(
            f"cannot read config file {p} ({exc}); pass a UTF-8 YAML file of option: value"
        ) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GlomsslError(f"config file {p} is not valid YAML: {exc}".splitlines()[0]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GlomsslError(f"config file {p} must hold a mapping of option: value")
    return data


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``; nested mappings merge key by key; None values are ignored."""
    out = dict(base)
    for k, v in update.items():
        if v is None:
            continue
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_sets(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``("augment.blur=0.2", "lr=0.1")`` -> ``{"augment": {"blur": 0.2}, "lr": 0.1}`` (YAML values)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = [p.strip() for p in key.split(".")]
        if not sep or not all(parts):
            raise GlomsslError(f"--set {item!r} must look like key=value or section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise GlomsslError(f"--set {item!r}: {p} is given both as a value and a section")
            node = nxt
        node[parts[-1]] = value
    return out


def build_config(
    cls: type[C],
    config_file: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    sets: dict[str, Any] | None = None,
) -> C:
    """Merge defaults <- YAML file <- ``sets`` (dotted --set items) <- overrides, deeply.

    None values in ``overrides`` (options the user did not give) are ignored.
    """
    merged: dict[str, Any] = load_yaml(config_file) if config_file else {}
    merged = deep_merge(merged, sets or {})
    merged = deep_merge(merged, overrides or {})
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
