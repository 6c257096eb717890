"""Shared set-up of the GAN and label-factory tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread avoids OpenMP oversubscription on a busy CI machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    """Eight non-square RGB images: pink blobs on white (a stand-in for H&E patches)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(8):
        a = np.full((40, 48, 3), 235, np.uint8)
        y, x = rng.integers(5, 30, 2)
        a[y : y + 10, x : x + 12] = (200, 80, 160)
        Image.fromarray(a).save(folder / f"p{i}.png")
    return folder
