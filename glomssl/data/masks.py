"""Segmentation masks: read, check and convert them, one way for every stage.

A mask is a 2-D uint8 array of class ids the size of its image. :data:`IGNORE` (255) marks pixels that
were not annotated: losses and metrics skip them. Masks arrive in two kinds:

- **class-id masks** (greyscale "L", palette "P" whose index is the class id, or RGB with equal
  channels): pixel value = class id, checked against ``num_classes``;
- **binary masks** as painting tools and QuPath export them (0 and 255 grey, anti-aliased edges, or
  RGB where any coloured/bright pixel is foreground): thresholded at ``threshold`` (default 127) into
  0 / 1. :func:`read_mask` with ``binary=True`` reads them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from glomssl.errors import GlomsslError

#: The "not annotated" value: ignored by every loss and metric.
IGNORE = 255


def _load_array(path: str | os.PathLike[str]) -> np.ndarray:
    from PIL import Image

    from glomssl.data.images import _open_checked

    try:
        with _open_checked(path) as im:
            im.load()
            if im.mode == "P":
                return np.asarray(im, dtype=np.uint8)  # palette index = class id
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(im).astype(np.int64).clip(0, 255).astype(np.uint8)
            if im.mode in ("RGBA", "LA"):
                im = im.convert(im.mode[:-1] if im.mode == "LA" else "RGB")
            if im.mode not in ("L", "RGB", "1"):
                im = im.convert("RGB")
            return np.asarray(im.convert("L") if im.mode == "1" else im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise GlomsslError(f"mask {path} is not a readable image ({exc}); re-export it") from exc


def binarize(arr: np.ndarray, threshold: int = 127) -> np.ndarray:
    """Foreground (1) where a grey mask exceeds ``threshold``, or where any RGB channel does."""
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return (arr > threshold).astype(np.uint8)


def read_mask(
    path: str | os.PathLike[str],
    num_classes: int | None = None,
    binary: bool = False,
    threshold: int = 127,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read a mask as (H, W) uint8 class ids (``IGNORE`` kept as is).

    ``binary`` thresholds grey/RGB masks at ``threshold`` into 0/1 (255 never survives a binary read:
    a painted white pixel means foreground). Otherwise the mask must hold class ids: RGB masks need
    equal channels, and every id must be below ``num_classes`` (or IGNORE). ``size`` (width, height)
    checks it against its image. Every problem is a one-line error naming the file and the fix.
    """
    arr = _load_array(path)
    if binary:
        m = binarize(arr, threshold)
    else:
        if arr.ndim == 3:
            if not (
                np.array_equal(arr[..., 0], arr[..., 1])
                and np.array_equal(arr[..., 0], arr[..., 2])
            ):
                raise GlomsslError(
                    f"mask {path} is a colour image; save class ids as a greyscale or indexed PNG "
                    "(pixel value = class id), or mark the task binary so it is thresholded"
                )
            arr = arr[..., 0]
        m = arr.astype(np.uint8)
        if num_classes is not None:
            bad = np.unique(m[(m >= num_classes) & (m != IGNORE)])
            if bad.size:
                raise GlomsslError(
                    f"mask {path} holds class id {int(bad[0])}, but there are only {num_classes} "
                    f"classes (ids 0..{num_classes - 1}, {IGNORE} = not annotated); fix the mask"
                )
    if size is not None and (m.shape[1], m.shape[0]) != tuple(size):
        raise GlomsslError(
            f"mask {path} is {m.shape[1]}x{m.shape[0]} but its image is {size[0]}x{size[1]}; "
            "masks must have their image's size"
        )
    return m


def is_binary_mask_file(path: str | os.PathLike[str]) -> bool:
    """True when a mask looks like a painting-tool binary export (values beyond 0/1/IGNORE)."""
    arr = _load_array(Path(path))
    vals = np.unique(arr)
    return bool(vals.size > 0 and (vals.max() > 1) and not set(vals.tolist()) <= {0, 1, IGNORE})
