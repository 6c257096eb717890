"""Tiny real image folders for the SSL tests (made here, no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def make_images(folder: Path, n: int = 8, size: int = 40, seed: int = 0) -> list[Path]:
    """``n`` RGB PNGs: half pink blobs on white, half purple speckle (two visually distinct kinds)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        if i % 2 == 0:
            r = size / 3 + rng.random() * 4
            blob = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r**2
            arr = np.full((size, size, 3), 240, np.uint8)
            arr[blob] = (220, 120, 170)
        else:
            arr = rng.integers(60, 200, (size, size, 3)).astype(np.uint8)
            arr[..., 1] //= 2
        p = folder / f"img_{i:03d}.png"
        Image.fromarray(arr).save(p)
        out.append(p)
    return out


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    make_images(folder)
    return folder


@pytest.fixture(scope="session")
def make_imgs():  # type: ignore[no-untyped-def]
    """The image maker, as a fixture (test folders here are not packages; no relative imports)."""
    return make_images
