"""One slide through the chain: detect -> crop -> classify -> segment -> write.

Detection resumes tile by tile from the run queue. Crops are cut at a fixed physical size
(``crop_um`` microns, saved at ``crop_px`` pixels) centred on each glomerulus; the classifier and the
segmenter see a view of each crop that matches their training crops (a square of ``view_context``
glomerulus diameters). Crops, classification and segmentation run in chunks, so memory does not grow
with the number of glomeruli; a crop already on disk (atomic writes: complete) is not cut again.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.errors import GlomsslError
from glomssl.slidechain.outputs import DETECTION_CLASS, Glomerulus
from glomssl.slidechain.queue import RunQueue, SlideJob

CHUNK = 64  # glomeruli cropped, classified and segmented together
NO_MPP_CONTEXT = 1.6  # crop side in glomerulus diameters when the slide's resolution is unknown


@dataclass
class Context:
    """What every slide of a worker needs: options, models, the queue, where to log."""

    cfg: Any  # WsiConfig
    detector: Any  # glomssl.detect.model.Detector
    queue: RunQueue
    classifier: Any = None  # steps.ClassifierStep
    segmenter: Any = None  # steps.SegmenterStep
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)

    @property
    def classes(self) -> list[str]:
        return list(self.classifier.classes) if self.classifier else [DETECTION_CLASS]


def open_for_chain(path: str, slide_mpp: float | None) -> Any:
    from glomssl.wsi import open_any

    return open_any(path, mpp=slide_mpp)


def detect_slide(ctx: Context, job: SlideJob, slide: Any) -> tuple[Any, list[list[float]], dict]:
    """(working level, all kept tile rows, tile counts), resuming from the queue's finished tiles."""
    from glomssl.detect.slide import detect_tiles
    from glomssl.engine import progress_line
    from glomssl.tiling import tile_grid, working_level
    from glomssl.wsi import tissue_mask

    cfg = ctx.cfg
    if cfg.level is not None:
        work = working_level(slide, level=cfg.level)
    else:
        work = working_level(slide, mpp=cfg.mpp or ctx.detector.mpp)
    try:
        tissue, down = tissue_mask(slide)
    except GlomsslError:
        raise
    except Exception as exc:  # a corrupt slide can fail on its thumbnail already
        raise unreadable_slide(job, exc) from exc
    if not tissue.any():
        raise GlomsslError(f"slide {job.path} shows no tissue (blank, or not a brightfield stain)")
    tiles = tile_grid(slide, work, cfg.tile, cfg.overlap, tissue=tissue, tissue_down=down)
    done = ctx.queue.done_tiles(job)
    todo = [t for t in tiles if t.index not in done]
    rows = [r for t in tiles if t.index in done for r in done[t.index]]
    t0 = time.perf_counter()
    last = [t0]
    count = [0]

    def on_tile(t: Any, kept: list[list[float]]) -> None:
        ctx.queue.save_tile(job, t.index, kept)
        count[0] += 1
        now = time.perf_counter()
        if not cfg.quiet and (now - last[0] > 5 or count[0] == len(todo)):
            last[0] = now
            ctx.log(progress_line(f"wsi {job.name}: tiles", count[0], len(todo), t0))

    conf = cfg.conf if cfg.conf is not None else ctx.detector.conf

    def predict(batch: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        return ctx.detector.predict(batch, conf=conf)  # type: ignore[no-any-return]

    try:
        rows += detect_tiles(slide, work, todo, predict, cfg.batch, on_tile)
    except GlomsslError:
        raise
    except Exception as exc:  # a truncated or corrupt slide fails while tiles are read
        raise unreadable_slide(job, exc) from exc
    counts = {"tiles": len(tiles), "tiles_resumed": len(tiles) - len(todo)}
    return work, rows, counts


def unreadable_slide(job: SlideJob, exc: Exception) -> GlomsslError:
    """The one-line error of a slide whose pixels cannot be decoded."""
    what = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return GlomsslError(
        f"slide {job.path} could not be read ({what}); check or copy the file again"
    )


def crop_window(slide: Any, g: Glomerulus, mpp: float | None, crop_um: float) -> tuple[float, ...]:
    """(x0, y0, side) of a glomerulus's crop in level-0 pixels."""
    cx, cy, r = g.circle
    side = crop_um / mpp if mpp else 2 * r * NO_MPP_CONTEXT
    return cx - side / 2, cy - side / 2, side


def read_crop(slide: Any, x0: float, y0: float, side: float, px: int) -> Any:
    """The level-0 square (x0, y0, side) as a ``px``-pixel RGB PIL image (white outside)."""
    from PIL import Image

    level = int(slide.get_best_level_for_downsample(max(1.0, side / px)))
    down = float(slide.level_downsamples[level])
    n = max(1, int(math.ceil(side / down)))
    rgb = read_on_white(slide, level, int(round(x0)), int(round(y0)), n)
    return rgb.resize((px, px), Image.Resampling.LANCZOS) if n != px else rgb


def read_on_white(slide: Any, level: int, x0: int, y0: int, n: int) -> Any:
    """The ``n`` x ``n`` square of pyramid ``level`` at level-0 (x0, y0), as RGB on white.

    As :func:`glomssl.tiling.read_tile`, only the part on the slide is read, composited on white and
    pasted onto a white canvas; here on every side, since a crop may start left of or above the
    slide. Readers do not agree on what lies outside (tiffslide pads with opaque black).
    """
    from PIL import Image

    down = float(slide.level_downsamples[level])
    lw, lh = (int(v) for v in slide.level_dimensions[level])
    out = Image.new("RGB", (n, n), (255, 255, 255))
    # the square in pixels of the level (a reader maps level-0 x to int(x / down) of the level)
    lx, ly = math.floor(x0 / down), math.floor(y0 / down)
    ax0, ay0 = max(lx, 0), max(ly, 0)
    ax1, ay1 = min(lx + n, lw), min(ly + n, lh)
    if ax1 <= ax0 or ay1 <= ay0:
        return out
    # an origin on the slide is read exactly as asked; one beyond its top or left edge from 0
    loc = (x0 if lx >= 0 else 0, y0 if ly >= 0 else 0)
    region = slide.read_region(loc, level, (ax1 - ax0, ay1 - ay0))
    white = Image.new("RGBA", region.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, region.convert("RGBA")).convert("RGB")
    out.paste(rgb, (ax0 - lx, ay0 - ly))
    return out


def view_of(crop: Any, g: Glomerulus, side: float, context: float) -> tuple[Any, float, float]:
    """The centred view of a crop the models see, and its level-0 offset within the crop box."""
    px = crop.width
    s = px / side  # crop px per level-0 px
    _, _, r = g.circle
    v = min(px, max(8, int(round(2 * r * context * s))))
    o = (px - v) // 2
    return crop.crop((o, o, o + v, o + v)), o / s, s


def finish_glomeruli(
    ctx: Context,
    job: SlideJob,
    slide: Any,
    gloms: list[Glomerulus],
    folder: Path,
    mpp: float | None,
) -> None:
    """Crop, classify and segment the glomeruli (chunk by chunk), filling them in place."""
    from glomssl.annotations import mask_to_regions
    from glomssl.data.images import save_png

    cfg = ctx.cfg
    if not (cfg.crops or ctx.classifier or ctx.segmenter):
        return
    crop_dir = folder / "crops"
    for start in range(0, len(gloms), CHUNK):
        chunk = gloms[start : start + CHUNK]
        views, offsets = [], []
        for g in chunk:
            x0, y0, side = crop_window(slide, g, mpp, cfg.crop_um)
            crop = read_crop(slide, x0, y0, side, cfg.crop_px)
            if cfg.crops:
                path = crop_dir / f"{job.name}_{g.id:05d}.png"
                if not path.is_file():
                    save_png(path, crop)
                g.crop = str(path.relative_to(folder))
            view, off, s = view_of(crop, g, side, cfg.view_context)
            views.append(view)
            offsets.append((x0 + off, y0 + off, s))
        if ctx.classifier is not None:
            probs = ctx.classifier.classify(views)
            for g, p in zip(chunk, probs):
                g.probs = [float(v) for v in p]
                g.cls = ctx.classifier.classes[int(np.argmax(p))]
        if ctx.segmenter is not None:
            masks = ctx.segmenter.segment([np.asarray(v, dtype=np.uint8) for v in views])
            for g, m, (ox, oy, s) in zip(chunk, masks, offsets):
                g.contour = mask_to_regions(m, "segmentation", scale=1 / s, offset=(ox, oy))
                g.mask_area_px = float(m.sum()) / (s * s)


def process_slide(ctx: Context, job: SlideJob) -> dict[str, Any]:
    """Run one slide through the chain and write its outputs; its summary (a GlomsslError skips it)."""
    import json

    from glomssl.detect.slide import merge_rows
    from glomssl.fsutil import atomic_write_text
    from glomssl.slidechain.outputs import (
        class_summary,
        write_annotations,
        write_overview,
        write_table,
    )
    from glomssl.wsi import slide_mpp

    cfg = ctx.cfg
    t0 = time.perf_counter()
    slide = open_for_chain(job.path, cfg.slide_mpp)
    try:
        mpp = slide_mpp(slide)
        work, rows, counts = detect_slide(ctx, job, slide)
        t_detect = time.perf_counter() - t0
        merged = merge_rows(rows, work, cfg.nms_iou, slide.dimensions)
        gloms = [
            Glomerulus(i + 1, tuple(float(v) for v in b), float(s))  # type: ignore[arg-type]
            for i, (b, s) in enumerate(zip(merged.boxes, merged.scores))
        ]
        folder = Path(cfg.out) / job.name
        folder.mkdir(parents=True, exist_ok=True)
        try:
            finish_glomeruli(ctx, job, slide, gloms, folder, mpp)
        except GlomsslError:
            raise
        except Exception as exc:
            raise GlomsslError(
                f"slide {job.path}: cutting glomeruli failed ({type(exc).__name__}: {exc})".splitlines()[
                    0
                ]
            ) from exc
        classes = ctx.classes
        xml, gj = write_annotations(folder, job.name, gloms, classes, mpp)
        table = write_table(folder / "glomeruli.csv", gloms, classes, mpp)
        write_overview(folder / "overview.png", slide, gloms, classes)
        w0, h0 = slide.dimensions
        summary: dict[str, Any] = {
            "slide": job.path,
            "name": job.name,
            "width": int(w0),
            "height": int(h0),
            "mpp": mpp,
            "working_mpp": work.mpp,
            "working_level": work.level,
            "working_scale": work.scale,
            **counts,
            **class_summary(gloms, classes, mpp),
            "classes": classes,
            "classifier": ctx.classifier.path if ctx.classifier else None,
            "segmenter": ctx.segmenter.path if ctx.segmenter else None,
            "detector": ctx.detector.path,
            "conf": cfg.conf if cfg.conf is not None else ctx.detector.conf,
            "seconds": round(time.perf_counter() - t0, 2),
            "detect_seconds": round(t_detect, 2),
            "files": {"xml": str(xml), "geojson": str(gj), "table": str(table)},
        }
        atomic_write_text(
            folder / "summary.json", json.dumps(summary, indent=2, default=str) + "\n"
        )
        return summary
    finally:
        slide.close()
