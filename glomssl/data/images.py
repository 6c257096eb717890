"""One implementation of each image operation every stage needs.

- :func:`load_rgb`: open any image as 8-bit RGB (16-bit/float stretched, transparency on white), with a
  pixel cap against decompression bombs; every failure is a :class:`GlomsslError` naming the file.
- :func:`image_ok`: a cheap header check (for start-up scans that skip and list unreadable files).
- :func:`centre_square`: centre-crop to a square and resize (the GAN's training data and projection
  must prepare images identically, so both call this).
- :func:`to_uint8`: network output in [-1, 1] -> uint8 HWC arrays.
- :func:`save_png`: write an array or PIL image as PNG atomically (temp file, then rename).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.errors import GlomsslError

#: Images with more pixels are refused as decompression bombs (PIL's own limit: twice its warning).
MAX_PIXELS = 178_956_970

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")


def _open_checked(path: str | os.PathLike[str]) -> Any:
    """PIL image opened lazily, refused above MAX_PIXELS before any pixel is decoded."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(path)
    w, h = im.size
    if w * h > MAX_PIXELS:
        im.close()
        raise Image.DecompressionBombError(f"{w}x{h} pixels is more than the {MAX_PIXELS} allowed")
    return im


def image_ok(path: str | os.PathLike[str]) -> str | None:
    """None when ``path`` looks like a readable image (header + size check), else the reason."""
    from PIL import Image

    try:
        with _open_checked(path) as im:
            im.verify()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


def load_rgb(path: str | os.PathLike[str], max_side: int | None = None) -> Any:
    """Open any image as an 8-bit RGB PIL image.

    16-bit and float images are stretched (0.5-99.5 percentiles) to 0..255; images with transparency
    are composed on white. ``max_side`` shrinks the image (box filter) so its longer side is at most that
    many pixels. Raises GlomsslError naming the file when it cannot be decoded or is a decompression bomb.
    """
    from PIL import Image

    try:
        with _open_checked(path) as im:
            im.load()
            source_format = im.format
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                a = np.asarray(im, dtype=np.float64)
                lo, hi = np.percentile(a, [0.5, 99.5]) if a.size else (0.0, 1.0)
                a = np.clip((a - lo) / max(hi - lo, 1e-9), 0.0, 1.0) * 255.0
                out = Image.fromarray(a.astype(np.uint8), mode="L").convert("RGB")
            elif im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                out = Image.new("RGB", rgba.size, (255, 255, 255))
                out.paste(rgba, mask=rgba.getchannel("A"))
            else:
                out = im.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise GlomsslError(f"{path} is not a readable image ({exc}); remove or replace it") from exc
    if max_side is not None and max(out.size) > max_side:
        s = max_side / max(out.size)
        size = (max(1, round(out.width * s)), max(1, round(out.height * s)))
        out = out.resize(size, Image.Resampling.BOX)
    out.info[SOURCE_FORMAT] = source_format  # conversion drops ``format``: kept for is_jpeg
    return out


#: The ``info`` key where :func:`load_rgb` keeps the file's format (``PIL.Image.format``).
SOURCE_FORMAT = "glomssl_source_format"
JPEG_FORMATS = frozenset({"JPEG", "MPO"})


def is_jpeg(img: Any) -> bool:
    """Whether PIL image ``img`` was decoded from a JPEG file: its own ``format``, or the one
    :func:`load_rgb` kept (a converted image has none). A JPEG saved again as PNG is not one."""
    return img.format in JPEG_FORMATS or img.info.get(SOURCE_FORMAT) in JPEG_FORMATS


def centre_square(img: Any, size: int, resample: Any = None) -> Any:
    """Centre-crop a PIL image to a square and resize it to ``size`` x ``size``.

    The default filter is Lanczos when shrinking and bicubic when enlarging; masks pass
    ``Image.Resampling.NEAREST`` so class ids survive.
    """
    from PIL import Image

    w, h = img.size
    s = min(w, h)
    if w != h:
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    if s != size:
        if resample is None:
            resample = Image.Resampling.LANCZOS if s > size else Image.Resampling.BICUBIC
        img = img.resize((size, size), resample)
    return img


def to_uint8(img: Any) -> np.ndarray:
    """Images in [-1, 1], (3, H, W) or (B, 3, H, W) tensors -> (H, W, 3) / (B, H, W, 3) uint8."""
    x = ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(dtype=_torch_uint8())
    if x.dim() == 3:
        return x.permute(1, 2, 0).cpu().numpy()  # type: ignore[no-any-return]
    return x.permute(0, 2, 3, 1).cpu().numpy()  # type: ignore[no-any-return]


def _torch_uint8() -> Any:
    import torch

    return torch.uint8


def save_png(path: str | os.PathLike[str], image: Any, fsync: bool = False) -> Path:
    """Write a uint8 array (H, W[, C]) or a PIL image as PNG, atomically; returns the path."""
    from PIL import Image

    from glomssl.fsutil import atomic_write_bytes

    im = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue(), fsync=fsync)
    return Path(path)
