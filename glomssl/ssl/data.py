"""Pretraining data: a FOLDER of images, a MANIFEST (e.g. a mined corpus), or whole-slide images.

Each item is two augmented views of one image. Inputs are resolved by the shared
:func:`glomssl.data.sources.resolve_sources`, so corrupt or unreadable images never stop a run: a quick
header check at start-up drops them (counted and listed in ``skipped.jsonl``), and an image that fails
later while decoding is skipped in the batch (the collate function drops it).
Slides are read on the fly with :class:`glomssl.wsi.SlidePatchSampler` (random tissue patches).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glomssl.data.sources import Sources


def load_rgb_tensor(
    path: str | os.PathLike[str], max_short_side: int | None = None
) -> torch.Tensor:
    """Decode an image to a uint8 tensor (3, H, W), optionally downscaled so the short side fits."""
    from PIL import Image

    from glomssl.data.images import load_rgb

    im = load_rgb(path)
    if max_short_side is not None and min(im.size) > max_short_side:
        s = max_short_side / min(im.size)
        size = (max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s)))
        im = im.resize(size, Image.Resampling.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # (3, H, W)


class ImageViewsDataset(torch.utils.data.Dataset):
    """Images from a list of files -> ``transform(image)`` (two views), or None if decoding fails.

    ``max_short_side`` pre-shrinks big images once (crops are later resized to the training size, so
    decoding at ~2x that size loses nothing); ``cache`` keeps decoded tensors per worker in memory.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        transform: Callable[[torch.Tensor], Any],
        max_short_side: int | None = None,
        cache: bool = False,
    ) -> None:
        self.paths = list(paths)
        self.transform = transform
        self.max_short_side = max_short_side
        self.cache = cache
        self._cache: dict[int, torch.Tensor] = {}
        self.failures = 0

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> torch.Tensor:
        """Image ``i`` as float (3, H, W) in [0, 1]."""
        t = self._cache.get(i)
        if t is None:
            t = load_rgb_tensor(self.paths[i], self.max_short_side)
            if self.cache:
                self._cache[i] = t
        return t.float().div_(255)

    def __getitem__(self, i: int) -> Any:
        try:
            img = self.image(i)
        except Exception:  # a file that passed the header check but fails to decode
            self.failures += 1
            return None
        return self.transform(img)


class SlideViewsDataset(torch.utils.data.Dataset):
    """Random tissue patches from whole-slide images; ``length`` patches make one epoch.

    Each index draws from its own random stream (seed, epoch, index), so workers never repeat patches.
    """

    def __init__(
        self,
        slides: Sequence[str | os.PathLike[str]],
        transform: Callable[[torch.Tensor], Any],
        patch_size: int = 224,
        level: int = 0,
        mpp: float | None = None,
        length: int = 1000,
        seed: int = 0,
    ) -> None:
        from glomssl.wsi import SlidePatchSampler

        self.sampler = SlidePatchSampler(list(slides), patch_size=patch_size, level=level, mpp=mpp)
        self.transform = transform
        self.length = length
        self.seed = seed
        self.epoch = 0
        self.failures = 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> Any:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        try:
            im = self.sampler.sample(rng)
        except Exception:
            self.failures += 1
            return None
        arr = np.asarray(im, dtype=np.uint8)
        return self.transform(torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255))


def collate_views(batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Stack (view0, view1) pairs, dropping items that failed to load (None).

    Fewer than two good items give None (the step is skipped): BatchNorm needs two samples.
    """
    good = [b for b in batch if b is not None]
    if len(good) < 2:
        return None
    return torch.stack([b[0] for b in good]), torch.stack([b[1] for b in good])


def build_dataset(
    sources: Sequence[str],
    transform: Callable[[torch.Tensor], Any],
    image_size: int,
    cache: bool = False,
    slide_level: int = 0,
    slide_mpp: float | None = None,
    slide_patch_size: int | None = None,
    patches_per_epoch: int = 1000,
    seed: int = 0,
) -> tuple[torch.utils.data.Dataset, Sources | None]:
    """The pretraining dataset for ``--data`` and, for image files, the resolved sources (with the
    unreadable files that were skipped)."""
    from glomssl.data.sources import resolve_sources

    src = resolve_sources(sources, "--data")
    if src.kind == "slides":
        ds = SlideViewsDataset(
            src.slides,
            transform,
            patch_size=slide_patch_size or image_size,
            level=slide_level,
            mpp=slide_mpp,
            length=patches_per_epoch,
            seed=seed,
        )
        return ds, None
    return ImageViewsDataset(src.paths, transform, max_short_side=2 * image_size, cache=cache), src
