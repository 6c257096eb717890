"""Exported segmenters on disk, and tiled prediction of class probabilities for an image.

A trained segmenter is ``model.safetensors`` + ``model.json`` (``format: glomssl-segmenter``: the
registry name and keyword arguments that rebuild it, the classes, the working image size and input
scale, normalisation, and a summary of its training data). :func:`load_segmenter` refuses anything
else with a one-line error; nothing is unpickled.

:func:`predict_probs` runs ONE encoder-decoder pass per tile for every requested class (the dynamic
head evaluates only the requested heads) and stitches overlapping tiles with weights that ramp down
over the overlap (``blend``) or keep each pixel from the tile where it lies most central (``centre``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.errors import GlomsslError

SEGMENTER_FORMAT = "glomssl-segmenter"


def export_segmenter(model: Any, out_dir: str | os.PathLike[str], meta: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` + ``model.json`` (refuses non-finite weights)."""
    from glomssl.engine.trainer import check_finite_state
    from glomssl.runs import save_weights

    check_finite_state(model, f"the {model.name} segmenter")
    info = {
        "format": SEGMENTER_FORMAT,
        "model": model.name,
        "model_kwargs": model.build_kwargs,
        "classes": list(model.classes),
        "output": model.output,
        "stride": int(model.stride),
        **meta,
    }
    return save_weights(
        Path(out_dir) / "model.safetensors", model.state_dict(), info, kind="segmenter"
    )


def resolve_model_path(path: str | os.PathLike[str], flag: str = "--model") -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.is_file():
        raise GlomsslError(
            f"{flag} {path}: no model.safetensors there; pass a `glomssl finetune seg` run folder "
            "or its model.safetensors"
        )
    return p


def load_segmenter(
    path: str | os.PathLike[str], device: str = "cpu", flag: str = "--model"
) -> tuple[Any, dict[str, Any]]:
    """Rebuild a segmenter from a run folder or ``model.safetensors`` (eval mode on ``device``)."""
    from glomssl.models import create_model
    from glomssl.runs import load_weights

    wpath = resolve_model_path(path, flag)
    tensors, meta = load_weights(wpath, expect="segmenter", flag=flag)
    if meta.get("format") != SEGMENTER_FORMAT:
        raise GlomsslError(
            f"{flag} {wpath} is not a glomssl segmenter (its model.json does not say format: "
            f"{SEGMENTER_FORMAT}); pass the model.safetensors that `glomssl finetune seg` exported"
        )
    kwargs = meta.get("model_kwargs", {})
    classes = meta.get("classes")
    if not isinstance(meta.get("model"), str) or not isinstance(kwargs, dict):
        raise GlomsslError(
            f"{flag} {wpath}: its model.json lacks the network's name or settings (`model`, "
            "`model_kwargs`); restore the run's model.json or re-export it"
        )
    if not isinstance(classes, list) or not classes or len(set(map(str, classes))) != len(classes):
        raise GlomsslError(
            f"{flag} {wpath}: its model.json lists no classes (or repeats one); restore the run's "
            "model.json or re-export it"
        )
    try:
        model = create_model(meta["model"], **kwargs)
    except GlomsslError as exc:
        raise GlomsslError(f"{flag} {wpath}: its model.json does not build ({exc})") from exc
    built = [str(c) for c in getattr(model, "classes", classes)]
    if built != [str(c) for c in classes]:
        raise GlomsslError(
            f"{flag} {wpath}: its model.json names the classes {','.join(map(str, classes))} but "
            f"the network segments {','.join(built)}; restore the run's model.json or re-export it"
        )
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:  # a tensor of another shape (e.g. a different number of classes)
        raise GlomsslError(
            f"{flag} {wpath} does not match a {meta['model']} segmenter (its tensors have other "
            "shapes); re-export it with this glomssl version"
        ) from exc
    if missing or unexpected:
        raise GlomsslError(
            f"{flag} {wpath} does not match a {meta['model']} segmenter (missing {len(missing)}, "
            f"unexpected {len(unexpected)} weights); re-export it with this glomssl version"
        )
    return model.to(device).eval(), meta


def class_indices(meta: dict[str, Any], classes: Sequence[str] | None) -> list[int]:
    """Indices of the requested classes in the model's list (all when None)."""
    names = list(meta["classes"])
    if not classes:
        return list(range(len(names)))
    bad = [c for c in classes if c not in names]
    if bad:
        raise GlomsslError(
            f"--classes {bad[0]!r} is not a class of this model; it segments {','.join(names)}"
        )
    return [names.index(c) for c in classes]


def check_tile(tile: int, overlap: int, stride: int) -> None:
    if tile % stride:
        raise GlomsslError(
            f"--tile {tile} is not divisible by the network's stride {stride}; use a multiple of "
            f"{stride} (e.g. {max(stride, tile // stride * stride)})"
        )
    if overlap < 0 or (overlap and overlap >= tile // 2):
        raise GlomsslError(f"--overlap {overlap} must be >= 0 and less than half of --tile {tile}")


def tile_starts(length: int, tile: int, step: int) -> list[int]:
    """Tile offsets covering ``length`` with tiles of ``tile`` every ``step`` (last one flush)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    return [*starts, length - tile]


def tile_weights(tile: int, overlap: int, mode: str = "blend") -> np.ndarray:
    """(tile, tile) stitching weights: linear ramps over the overlap, or a hard centre crop."""
    if overlap <= 0:
        return np.ones((tile, tile), np.float32)
    d = np.minimum(np.arange(tile), np.arange(tile)[::-1]).astype(np.float32)  # distance to edge
    if mode == "centre":
        ramp = np.where(d >= overlap / 2, 1.0, 1e-3).astype(np.float32)
    else:
        ramp = np.clip((d + 0.5) / overlap, 1e-3, 1.0).astype(np.float32)
    return np.outer(ramp, ramp)


def _pad_to(img: np.ndarray, h: int, w: int) -> np.ndarray:
    ph, pw = h - img.shape[0], w - img.shape[1]
    if ph <= 0 and pw <= 0:
        return img
    widths = ((0, max(ph, 0)), (0, max(pw, 0)), (0, 0))
    if ph < img.shape[0] and pw < img.shape[1]:
        return np.pad(img, widths, mode="reflect")
    return np.pad(img, widths, mode="edge")


def run_tiles(model: Any, tiles: list[np.ndarray], idx: Sequence[int], device: str) -> np.ndarray:
    """(N, t, t, 3) uint8 tiles -> (N, K, t, t) float32 probabilities in one batch."""
    import torch

    x = torch.from_numpy(np.stack(tiles)).to(device).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                p = model.probabilities(x, list(idx))
        else:
            p = model.probabilities(x, list(idx))
    return p.float().cpu().numpy()  # type: ignore[no-any-return]


def predict_probs(
    model: Any,
    img: np.ndarray,
    idx: Sequence[int],
    tile: int,
    overlap: int,
    batch_size: int = 4,
    device: str = "cpu",
    mode: str = "blend",
) -> np.ndarray:
    """(H, W, 3) uint8 image -> (K, H, W) float32 probabilities of the classes ``idx``.

    An image that fits in one tile is padded to a multiple of the stride and run in one pass; a larger
    one is cut into ``tile`` x ``tile`` tiles overlapping by ``overlap`` and stitched.
    """
    stride = int(model.stride)
    h, w = img.shape[:2]
    if h <= tile and w <= tile:
        ph, pw = -(-h // stride) * stride, -(-w // stride) * stride
        return run_tiles(model, [_pad_to(img, ph, pw)], idx, device)[0, :, :h, :w]
    check_tile(tile, overlap, stride)
    img = _pad_to(img, max(h, tile), max(w, tile))
    hp, wp = img.shape[:2]
    acc = np.zeros((len(idx), hp, wp), np.float32)
    norm = np.zeros((hp, wp), np.float32)
    wt = tile_weights(tile, overlap, mode)
    step = tile - overlap
    coords = [(y, x) for y in tile_starts(hp, tile, step) for x in tile_starts(wp, tile, step)]
    for s in range(0, len(coords), batch_size):
        chunk = coords[s : s + batch_size]
        probs = run_tiles(model, [img[y : y + tile, x : x + tile] for y, x in chunk], idx, device)
        for (y, x), p in zip(chunk, probs):
            acc[:, y : y + tile, x : x + tile] += p * wt
            norm[y : y + tile, x : x + tile] += wt
    return (acc / np.maximum(norm, 1e-12))[:, :h, :w]


def rescale_probs(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(K, h, w) -> (K, H, W) bilinear, for predictions made on a resized image; size = (H, W)."""
    import torch
    from torch.nn import functional as F

    if probs.shape[1:] == size:
        return probs
    t = torch.from_numpy(probs)[None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0].numpy()  # type: ignore[no-any-return]


def predict_image(
    model: Any,
    img: np.ndarray,
    idx: Sequence[int],
    scale: float,
    tile: int,
    overlap: int,
    batch_size: int = 4,
    device: str = "cpu",
    mode: str = "blend",
) -> np.ndarray:
    """Resize by ``scale`` (anti-aliased), predict tiled, return (K, H, W) at the original size."""
    from PIL import Image

    h, w = img.shape[:2]
    if abs(scale - 1.0) > 1e-6:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = np.asarray(Image.fromarray(img).resize(size, Image.Resampling.LANCZOS))
    probs = predict_probs(model, img, idx, tile, overlap, batch_size, device, mode)
    return rescale_probs(probs, (h, w))


def prepare_model(
    model_path: str, device_name: str, classes: list[str], tile: int | None, overlap: int | None
) -> tuple[Any, dict[str, Any], list[int], int, int, str]:
    """Load a segmenter; resolve its classes, tile, overlap and device (one-line errors)."""
    from glomssl.engine import resolve_device

    device = resolve_device(device_name)
    model, meta = load_segmenter(model_path, device)
    idx = class_indices(meta, classes)
    size = tile or int(meta.get("image_size", 512))
    ov = overlap if overlap is not None else (size // 8) // 2 * 2
    check_tile(size, ov, int(meta.get("stride", model.stride)))
    return model, meta, idx, size, ov, device
