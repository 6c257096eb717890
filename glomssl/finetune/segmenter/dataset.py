"""Torch side of the segmentation data: image/mask pairs as tensors, and per-task batches.

- :class:`SegDataset` loads a pair, shrinks it with an anti-aliasing filter to the working resolution
  (image: Lanczos, mask: nearest, so ids and 255 survive), then either augments it (training: one
  random draw for both, :func:`glomssl.data.transforms.paired_augment`) or takes the centre view
  (validation). Its randomness is a function of (seed, epoch, index), so runs repeat exactly.
- :class:`TaskBatchSampler` builds each epoch's batches the Glo-In-One v2 way: every batch holds images
  of ONE task (their per-task image pools), optionally topped up with a fixed share of synthetic pairs
  of the same task (``--synthetic-ratio``); ``mode="mixed"`` draws batches across tasks instead. Every
  batch has the full batch size (short pools are padded by repetition), and under DDP each rank takes
  every world-size-th batch of one shared plan.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from glomssl.data.transforms import PairedAugment, paired_augment
from glomssl.finetune.segmenter.data import SegItem, read_target, task_index


def load_pair(
    item: SegItem, classes: Sequence[str], short_side: int, threshold: int
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image and (H, W) uint8 mask, shrunk so the short side is <= ``short_side``."""
    from PIL import Image

    from glomssl.data.images import load_rgb

    img = load_rgb(item.image)
    mask = read_target(item, classes, threshold)
    w, h = img.size
    if min(w, h) > short_side:
        s = short_side / min(w, h)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        img = img.resize(size, Image.Resampling.LANCZOS)
        mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
    return np.asarray(img, dtype=np.uint8), np.asarray(mask, dtype=np.uint8)


def centre_view(img: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation view: centre square, resized to ``size`` (image Lanczos/bicubic, mask nearest)."""
    from PIL import Image

    from glomssl.data.images import centre_square

    im = centre_square(Image.fromarray(img), size)
    mk = centre_square(Image.fromarray(mask), size, Image.Resampling.NEAREST)
    return np.asarray(im, dtype=np.uint8), np.asarray(mk, dtype=np.uint8)


class SegDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Items -> {"image": (3, S, S) float in [0, 1], "mask": (S, S) long, "task": int, "index": int}.

    ``augment`` None gives the deterministic centre view (validation). Keys may be an index or an
    (index, epoch) pair (what :class:`TaskBatchSampler` yields), so workers see the epoch too.
    """

    def __init__(
        self,
        items: Sequence[SegItem],
        classes: Sequence[str],
        image_size: int,
        augment: PairedAugment | None,
        threshold: int = 127,
        seed: int = 0,
        cache: bool = False,
    ) -> None:
        self.items = list(items)
        self.classes = list(classes)
        self.size = image_size
        self.augment = augment
        self.threshold = threshold
        self.seed = seed
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None
        scale_max = augment.scale_max if augment is not None else 1.0
        self.short_side = int(np.ceil(image_size * scale_max))

    def __len__(self) -> int:
        return len(self.items)

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        out = load_pair(self.items[i], self.classes, self.short_side, self.threshold)
        if self.augment is None:
            out = centre_view(*out, self.size)
        if self.cache is not None:
            self.cache[i] = out
        return out

    def __getitem__(self, key: Any) -> dict[str, Any]:
        i, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple | list) else (int(key), 0)
        img, mask = self.pair(i)
        x = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).float() / 255.0
        m = torch.from_numpy(np.array(mask, copy=True)).long()  # (H, W)
        if self.augment is not None:
            g = torch.Generator().manual_seed(hash((self.seed, epoch, i)) & 0x7FFF_FFFF)
            x, m = paired_augment(x, m, self.size, self.augment, g)  # (3, S, S), (S, S)
        return {
            "image": x,
            "mask": m,
            "task": task_index(self.items[i], self.classes),
            "index": i,
        }


class TaskBatchSampler:
    """Per-epoch batches of one task each (or mixed), synthetic share, DDP-aware; see module doc."""

    def __init__(
        self,
        tasks: Sequence[int],
        synthetic: Sequence[bool],
        batch_size: int,
        ratio: float = 0.0,
        mode: str = "task",
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.tasks = np.asarray(tasks)
        self.synthetic = np.asarray(synthetic, dtype=bool)
        self.batch_size = int(batch_size)
        self.ratio = float(ratio)
        self.mode = mode
        self.seed = int(seed)
        self.rank, self.world = int(rank), int(world)
        self.epoch = 0
        if not (~self.synthetic).any():
            raise ValueError("TaskBatchSampler needs at least one real (non-synthetic) item")

    @property
    def sampler(self) -> TaskBatchSampler:
        """Lightning calls ``batch_sampler.sampler.set_epoch(epoch)``; we are our own sampler."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _pools(self, synthetic: bool) -> dict[int, np.ndarray]:
        idx = np.flatnonzero(self.synthetic == synthetic)
        if self.mode == "mixed":
            return {0: idx} if idx.size else {}
        return {int(t): idx[self.tasks[idx] == t] for t in np.unique(self.tasks[idx])}

    def plan(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` (every rank's), shuffled, each of exactly ``batch_size``."""
        rng = np.random.default_rng([self.seed, epoch])
        real, syn = self._pools(False), self._pools(True)
        batches: list[list[int]] = []
        for key, pool in real.items():
            spool = syn.get(key, np.empty(0, dtype=np.int64))
            n_syn = (
                min(self.batch_size - 1, round(self.ratio * self.batch_size)) if spool.size else 0
            )
            n_real = self.batch_size - n_syn
            perm = rng.permutation(pool)
            n_batches = int(np.ceil(len(perm) / n_real))
            need = n_batches * n_real - len(perm)
            if need:  # pad the last batch by repetition, so every batch is full
                perm = np.concatenate([perm, rng.choice(pool, size=need, replace=True)])
            sperm = rng.permutation(spool) if n_syn else spool
            for b in range(n_batches):
                batch = perm[b * n_real : (b + 1) * n_real].tolist()
                if n_syn:
                    start = (b * n_syn) % len(sperm)
                    take = np.take(sperm, range(start, start + n_syn), mode="wrap")
                    batch += take.tolist()
                batches.append(batch)
        order = rng.permutation(len(batches))
        batches = [batches[i] for i in order]
        if self.world > 1 and len(batches) % self.world:
            batches += batches[: self.world - len(batches) % self.world]
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        e = self.epoch
        for batch in self.plan(e)[self.rank :: self.world]:
            yield [(i, e) for i in batch]

    def __len__(self) -> int:
        return len(self.plan(self.epoch)[self.rank :: self.world])
