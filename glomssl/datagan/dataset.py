"""Training data of the GAN: folders / manifests (map-style) or whole-slide images (patches on the fly).

Images are prepared exactly as projection prepares them (:func:`glomssl.data.images.centre_square`), so a
projected real image and the training images share one geometry. Unreadable files are skipped and listed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.utils.data as tud

from glomssl.datagan.train_config import GanTrainConfig
from glomssl.errors import GlomsslError


def _to_square(img: Any, size: int) -> Any:
    """Centre-crop a PIL image to a square and resize it to ``size`` (shared with projection)."""
    from glomssl.data.images import centre_square

    return centre_square(img, size)


class ImageDataset:
    """Images from folders/manifests as uint8 tensors (3, R, R); x-flipped at random with mirror.

    ``skipped`` lists (path, reason) of the files left out because they cannot be read."""

    def __init__(
        self,
        paths: list[Path],
        resolution: int,
        mirror: bool,
        skipped: list[tuple[str, str]] | None = None,
    ) -> None:
        self.paths = paths
        self.resolution = resolution
        self.mirror = mirror
        self.skipped = skipped or []

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        import numpy as np

        from glomssl.data.images import load_rgb

        img = _to_square(load_rgb(self.paths[i]), self.resolution)
        x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)  # (3, R, R) uint8
        if self.mirror and torch.rand(()) < 0.5:
            x = x.flip(2)
        return x


class SlideDataset:
    """Endless random tissue patches from whole-slide images, as uint8 tensors (3, R, R)."""

    def __init__(self, cfg: GanTrainConfig, slides: list[str | os.PathLike[str]]) -> None:
        from glomssl.wsi import SlidePatchSampler

        self.sampler = SlidePatchSampler(
            slides, patch_size=cfg.resolution, level=cfg.slide_level, mpp=cfg.slide_mpp
        )
        self.resolution = cfg.resolution
        self.mirror = cfg.mirror
        self.seed = cfg.seed

    def stream(self, seed: int) -> Any:
        import numpy as np

        rng = np.random.default_rng(seed)
        while True:
            img = _to_square(self.sampler.sample(rng), self.resolution)
            x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)  # (3, R, R)
            if self.mirror and rng.random() < 0.5:
                x = x.flip(2)
            yield x


def make_dataset(cfg: GanTrainConfig) -> ImageDataset | SlideDataset:
    """Folders/manifests -> ImageDataset; slides -> SlideDataset.

    Every image's header is checked up front (glomssl.data.images.image_ok: readable, not a
    decompression bomb); unreadable files are left out and listed in ``dataset.skipped``."""
    from glomssl.data.images import image_ok
    from glomssl.manifest import load_image_list
    from glomssl.wsi import is_slide_path

    slides: list[str | os.PathLike[str]] = [
        d for d in cfg.data if is_slide_path(d) and Path(d).is_file()
    ]
    if slides and len(slides) != len(cfg.data):
        raise GlomsslError(
            "--data mixes slides with folders/manifests; train on one kind at a time"
        )
    if slides:
        return SlideDataset(cfg, slides)
    paths: list[Path] = []
    for src in cfg.data:
        if Path(src).is_file() and not _starts_as_manifest(Path(src)):
            raise GlomsslError(
                f'--data {src} is not a glomssl manifest (JSONL, one {{"path": ...}} per line); '
                "pass a folder of images, a manifest or whole-slide images"
            )
        # never the run's own grids (reals.png, fakes-*.png), with --out inside a --data folder
        own = load_image_list(src, exclude=[cfg.out] if cfg.out else [], command="gan train")
        paths.extend(p for p, _row in own)
    good: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for p in paths:
        reason = image_ok(p)
        if reason is None:
            good.append(p)
        else:
            skipped.append((str(p), reason))
    if not good:
        first = f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise GlomsslError(
            f"--data {', '.join(cfg.data)} holds no readable image{first}; check the path"
        )
    return ImageDataset(good, cfg.resolution, cfg.mirror, skipped)


def _starts_as_manifest(path: Path) -> bool:
    """Whether the first non-empty line of ``path`` is a JSON object, as a manifest's rows are (a
    CSV or an image passed to --data is not; a manifest with one bad line is reported by line)."""
    try:
        with open(path, "rb") as fh:
            while raw := fh.readline(1 << 20):  # bounded: a binary file may hold no newline
                if raw.strip():
                    return isinstance(json.loads(raw.decode("utf-8")), dict)
    except (OSError, ValueError):  # ValueError: UnicodeDecodeError and JSONDecodeError
        return False
    return True  # empty: reported as a manifest without rows


def _report_skipped(ds: Any, run: Path) -> None:
    """RUN/skipped.jsonl lists the unreadable training images (rewritten each start); one line says
    how many."""
    from glomssl.fsutil import atomic_write_text

    skipped = getattr(ds, "skipped", [])
    target = run / "skipped.jsonl"
    if not skipped:
        target.unlink(missing_ok=True)
        return
    rows = "".join(json.dumps({"path": p, "reason": r}) + "\n" for p, r in skipped)
    atomic_write_text(target, rows)
    n = len(skipped) + len(ds)  # a warning, shown with --quiet too (quiet drops the progress bar)
    print(
        f"gan train: skipped {len(skipped)} of {n} images that cannot be read (listed in {target})",
        file=sys.stderr,
    )


class _InfiniteShard:
    """Endless shuffled indices, one shard per process (each epoch a new seeded permutation)."""

    def __init__(self, n: int, rank: int, world: int, seed: int) -> None:
        self.n, self.rank, self.world, self.seed = n, rank, world, seed

    def __iter__(self) -> Any:
        import numpy as np

        epoch = 0
        while True:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            if self.n < self.world:
                perm = np.resize(perm, self.world)
            yield from perm[self.rank :: self.world].tolist()
            epoch += 1


class _SlideStream(tud.IterableDataset):  # type: ignore[type-arg]
    """Per-process, per-worker seeded stream of slide patches."""

    def __init__(self, ds: SlideDataset, rank: int) -> None:
        super().__init__()
        self.ds, self.rank = ds, rank

    def __iter__(self) -> Any:
        info = tud.get_worker_info()
        wid = info.id if info is not None else 0
        return self.ds.stream(self.ds.seed * 100003 + self.rank * 101 + wid)


def build_loader(ds: Any, batch: int, cfg: GanTrainConfig, rank: int, world: int) -> Any:
    """A DataLoader that never ends: per-process shards of folder data, or per-worker slide streams."""
    if isinstance(ds, SlideDataset):
        return tud.DataLoader(_SlideStream(ds, rank), batch_size=batch, num_workers=cfg.workers)
    sampler = _InfiniteShard(len(ds), rank, world, cfg.seed)
    return tud.DataLoader(
        ds,
        batch_size=batch,
        sampler=sampler,  # type: ignore[arg-type]
        num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0,
        drop_last=True,
    )


def infinite_batches(loader: Any) -> Any:
    while True:
        yield from loader


def iter_images(ds: Any, n: int, seed: int = 0) -> Any:
    """The first ``n`` images (uint8 (3, R, R)) of a random order of a dataset or a slide stream."""
    import numpy as np

    if isinstance(ds, SlideDataset):
        stream = ds.stream(seed)
        for _ in range(n):
            yield next(stream)
        return
    order = np.random.default_rng(seed).permutation(len(ds))
    for i in np.resize(order, n) if n > len(ds) else order[:n]:
        yield ds[int(i)]


def real_grid(ds: Any, n: int, path: Path) -> None:
    """Save an n x n grid of training images (what D sees before augmentation) as PNG."""
    import numpy as np
    from PIL import Image

    from glomssl.fsutil import atomic_open

    x = torch.stack(list(iter_images(ds, n * n)))  # (n*n, 3, R, R)
    r = x.shape[-1]
    grid = x.reshape(n, n, 3, r, r).permute(0, 3, 1, 4, 2).reshape(n * r, n * r, 3)
    with atomic_open(path, "wb") as fh:
        Image.fromarray(np.ascontiguousarray(grid.numpy())).save(fh, format="PNG")
