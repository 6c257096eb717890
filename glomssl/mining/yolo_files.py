"""Read the YAML files a user hands to the panel detector, so ultralytics never runs code from them.

Ultralytics executes code found in the files it is given: a data set YAML's ``download:`` key is run
with ``exec`` (or as a shell command) and a model YAML's ``activation:`` is ``eval``-ed. glomssl reads
such files itself (``yaml.safe_load``), accepts only the keys a single-class data set or model
definition needs (a panel detector's, or the glomerulus detector's), checks that every path is local
and exists, and hands ultralytics a clean copy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from glomssl.errors import GlomsslError

DATA_KEYS = {"path", "train", "val", "test", "names", "nc"}
MODEL_KEYS = {
    "nc",
    "names",
    "scales",
    "scale",
    "backbone",
    "head",
    "depth_multiple",
    "width_multiple",
}
#: layers a panel detector definition may name (ultralytics' YOLO detection building blocks)
LAYERS = {
    "Conv", "Conv2", "DWConv", "GhostConv", "RepConv", "Focus", "C1", "C2", "C2f", "C3", "C3x",
    "C3k2", "C3Ghost", "RepC3", "C2PSA", "C2fPSA", "PSA", "A2C2f", "SPP", "SPPF", "SPPELAN", "ELAN1",
    "RepNCSPELAN4", "ADown", "AConv", "SCDown", "Bottleneck", "BottleneckCSP", "Concat", "Detect",
    "v10Detect", "nn.Upsample", "nn.Identity", "nn.MaxPool2d", "nn.AvgPool2d",
}  # fmt: skip


def _load_yaml(path: Path, what: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise GlomsslError(
            f"{what} {path} is not a readable YAML file ({exc})".splitlines()[0]
        ) from exc
    if not isinstance(data, dict):
        raise GlomsslError(f"{what} {path} is not a YAML mapping of keys; check the file")
    return data


def _check_keys(data: dict[str, Any], allowed: set[str], path: Path, what: str) -> None:
    extra = sorted(str(k) for k in data if k not in allowed)
    if extra:
        raise GlomsslError(
            f"{what} {path}: key {extra[0]!r} is not allowed (glomssl reads only "
            f"{', '.join(sorted(allowed))} and never runs a file's download or code); remove it"
        )


def _one_class(data: dict[str, Any], path: Path, what: str, kind: str = "panel") -> None:
    names = data.get("names")
    n = data.get("nc", len(names) if isinstance(names, list | dict) else None)
    if n != 1 or (names is not None and (not isinstance(names, list | dict) or len(names) != 1)):
        raise GlomsslError(
            f"{what} {path}: the {kind} detector has one class; set `names: {{0: {kind}}}`"
        )


def safe_data_yaml(path: str | os.PathLike[str], run: Path) -> Path:
    """Check a user's data set YAML and write the clean copy ultralytics gets into ``run``."""
    from glomssl.manifest import list_images

    src = Path(path)
    data = _load_yaml(src, "--data")
    _check_keys(data, DATA_KEYS, src, "--data")
    _one_class(data, src, "--data")
    root_value = data.get("path", "")
    if not isinstance(root_value, str | os.PathLike):
        raise GlomsslError(f"--data {src}: `path` must be a folder name, got {root_value!r}")
    root = Path(root_value or ".")
    root = root if root.is_absolute() else (src.resolve().parent / root)
    clean: dict[str, Any] = {"path": os.fspath(root.resolve()), "names": {0: "panel"}}
    for key in ("train", "val", "test"):
        value = data.get(key)
        if value is None:
            if key == "test":
                continue
            raise GlomsslError(f"--data {src}: `{key}:` is missing; name a folder of images")
        items = value if isinstance(value, list) else [value]
        resolved = []
        for item in items:
            if not isinstance(item, str) or "://" in item:
                raise GlomsslError(f"--data {src}: `{key}: {item!r}` is not a local path")
            p = (root / item).resolve()
            if not p.exists():
                raise GlomsslError(f"--data {src}: `{key}: {item}` does not exist ({p})")
            if p.is_dir() and not list_images(p):
                raise GlomsslError(
                    f"--data {src}: the `{key}` folder {p} holds no images; make a data set with "
                    "`glomssl separator synth --out DIR` and pass DIR/data.yaml"
                )
            resolved.append(os.fspath(p))
        clean[key] = resolved if isinstance(value, list) else resolved[0]
    as_list = {
        k: v if isinstance(v, list) else [v] for k, v in clean.items() if k in ("train", "val")
    }
    if set(as_list["val"]) & set(as_list["train"]):
        raise GlomsslError(
            f"--data {src}: `val:` names training images, so the validation scores would be "
            "scores on the training figures; make a set with validation figures, e.g. `glomssl "
            "separator synth --out DIR --n 500` (its last 10 % are validation)"
        )
    import yaml

    out = run / "dataset.yaml"
    out.write_text(yaml.safe_dump(clean, sort_keys=False), encoding="utf-8")
    return out


def _check_layer(entry: Any, src: Path, kind: str) -> None:
    if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[2], str)):
        raise GlomsslError(f"--model {src}: layer {entry!r} is not [from, repeats, module, args]")
    if entry[2] not in LAYERS:
        raise GlomsslError(
            f"--model {src}: layer module {entry[2]!r} is not one glomssl builds {kind} detectors "
            "from"
        )
    if not isinstance(entry[3], list) or not all(
        isinstance(a, int | float | str | bool | list) or a is None for a in entry[3]
    ):
        raise GlomsslError(f"--model {src}: arguments {entry[3]!r} must be plain values")


def safe_model_yaml(path: str | os.PathLike[str], out_dir: Path, kind: str = "panel") -> Path:
    """Check a model definition YAML and write its clean copy (same file name) into ``out_dir``.

    ``kind`` names the one class in errors: ``panel`` (``separator``) or ``glomerulus`` (``detect``).
    """
    src = Path(path)
    data = _load_yaml(src, "--model")
    _check_keys(data, MODEL_KEYS, src, "--model")
    _one_class(data, src, "--model", kind)
    for part in ("backbone", "head"):
        layers = data.get(part)
        if not isinstance(layers, list) or not layers:
            raise GlomsslError(f"--model {src}: `{part}:` must be a list of layers")
        for entry in layers:
            _check_layer(entry, src, kind)
    import yaml

    out_dir.mkdir(parents=True, exist_ok=True)
    name = src.name if src.name not in ("config.yaml", "dataset.yaml") else "model.yaml"
    out = out_dir / name
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out
