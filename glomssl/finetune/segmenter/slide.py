"""``glomssl segment`` on whole slides: tissue tiles, one pass per tile, seamless, resumable.

Built on the shared slide layers (:mod:`glomssl.wsi`, :mod:`glomssl.tiling`,
:mod:`glomssl.annotations`). For each slide, in ``OUT/<slide name>/``:

1. the working resolution is a pyramid ``--level`` or ``--mpp`` (level 0 by default); tiles of
   ``--tile`` px overlapping by ``--overlap`` cover the tissue (Otsu on a thumbnail), and their
   *cores* partition the slide, so each pixel is decided by the tile where it lies most central
   (centre-crop stitching: no seams, no double counting);
2. every tile goes through the encoder-decoder ONCE and all requested classes' probabilities are
   written, as uint8 (probability x 255), into ``probabilities.u8``: a (K, H, W) file-backed canvas at
   the working resolution. ``tiles_done.txt`` gets the tile's index after its core is flushed, so a
   rerun of the same command after a crash (even ``kill -9``) skips finished tiles. Memory stays
   bounded: tiles stream in batches, the canvas lives on disk;
3. each class is thresholded and traced into polygons (with holes) in **level-0** pixels:
   ``<name>.geojson`` (QuPath: File > Import objects; each object named "<class> <id>" with its
   ``id`` as a measurement), ``<name>.xml`` (Aperio ImageScope, one layer per class, holes as
   negative regions), ``objects.csv`` (class, id, level-0 centroid and box, area in px and, when the
   slide records its resolution, in square microns; all from the object's pixels: centroid = mean of
   the pixel centres, area = pixel count x scale^2, holes under ``MIN_HOLE_PX`` working px filled)
   and a thumbnail overlay ``overview.png``. Outlines follow the working pixels' outer edges.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.errors import GlomsslError


def _done(path: Path) -> set[int]:
    if not path.is_file():
        return set()
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]  # only complete lines: one cut by a kill is redone
    return {int(line) for line in lines if line.strip().isdigit()}


def _objects(regions: list[Any], mpp: float | None) -> list[dict[str, Any]]:
    """One row per object: its pixels' centroid, box and area (pixel count x scale^2), level 0.

    Regions traced by ``mask_to_regions`` carry those pixel measures; any other region falls back
    to its polygon's centroid, box and area.
    """
    rows = []
    for i, r in enumerate(regions, 1):
        if r.pixels is not None:
            (cx, cy), (x0, y0, x1, y1), area = r.pixels.centroid, r.pixels.box, r.pixels.area
        else:
            (cx, cy), (x0, y0, x1, y1), area = r.centroid(), r.bbox(), r.area()
        rows.append({
            "class": r.name, "id": i, "x": round(cx, 1), "y": round(cy, 1), "x0": round(x0, 1),
            "y0": round(y0, 1), "x1": round(x1, 1), "y1": round(y1, 1), "area_px": round(area, 1),
            "area_um2": round(area * mpp * mpp, 2) if mpp else "",
        })  # fmt: skip
    return rows


def segment_slide(
    path: Path, out: Path, cfg: Any, model: Any, meta: dict[str, Any], idx: list[int],
    tile: int, overlap: int, device: str,
) -> dict[str, Any]:  # fmt: skip
    """Segment one slide into ``out`` (see the module docstring); returns its summary."""
    from glomssl.annotations import mask_to_regions, write_geojson, write_imagescope_xml
    from glomssl.engine import progress_line
    from glomssl.finetune.segmenter.infer import run_tiles
    from glomssl.fsutil import atomic_write_bytes, atomic_write_text
    from glomssl.tiling import CoreStitcher, read_tile, tile_grid, working_level
    from glomssl.wsi import open_any, slide_mpp

    slide = open_any(path, mpp=cfg.slide_mpp)
    try:  # tiffslide opens some broken files lazily: the first real read fails
        work = working_level(slide, mpp=cfg.mpp, level=cfg.level)
        tiles = tile_grid(slide, work, tile, overlap)
    except GlomsslError:
        raise
    except Exception as exc:
        raise GlomsslError(
            f"{path} is not a readable whole-slide image ({type(exc).__name__}: {exc}); check the file"
        ) from exc
    classes = [meta["classes"][i] for i in idx]
    out.mkdir(parents=True, exist_ok=True)
    state = {"slide": str(path), "classes": classes, "tile": tile, "overlap": overlap,
             "level": work.level, "scale": work.scale, "width": work.width, "height": work.height,
             "model": str(cfg.model), "threshold": cfg.threshold}  # fmt: skip
    spath = out / "segment_state.json"
    if spath.is_file():
        try:
            old = json.loads(spath.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
            raise GlomsslError(
                f"{spath} is damaged, so {out} cannot be resumed; choose a new --out to start over"
            ) from exc
        if old != state:
            raise GlomsslError(
                f"{out} holds a run of another model, slide or setting; choose a new --out to start over"
            )
    atomic_write_text(spath, json.dumps(state) + "\n")
    canvas = CoreStitcher(len(classes), work.height, work.width, path=out / "probabilities.u8")
    done_path = out / "tiles_done.txt"
    done = _done(done_path)
    todo = [t for t in tiles if t.index not in done]
    t0 = time.perf_counter()
    with open(done_path, "a", encoding="utf-8") as log:
        for s in range(0, len(todo), cfg.batch_size):
            chunk = todo[s : s + cfg.batch_size]
            probs = run_tiles(model, [read_tile(slide, work, t) for t in chunk], idx, device)
            for t, p in zip(chunk, probs):
                canvas.add(t, np.clip(np.rint(p * 255), 0, 255).astype(np.uint8))
            canvas.flush()
            log.write("".join(f"{t.index}\n" for t in chunk))
            log.flush()
            if not cfg.quiet:
                print(progress_line(f"{path.name}: tiles", len(done) + s + len(chunk),
                                    len(tiles), t0), flush=True)  # fmt: skip
    mpp0 = slide_mpp(slide)
    min_area = cfg.min_area_um2 / (mpp0 * mpp0) if mpp0 else cfg.min_area_um2
    cut = int(np.ceil(cfg.threshold * 255))
    regions = []
    for k, c in enumerate(classes):  # one class at a time: bounded memory
        mask = np.asarray(canvas.canvas[k]) >= cut
        regions += mask_to_regions(mask, c, scale=work.scale, min_area=min_area)
    for i, r in enumerate(regions, 1):  # the id of objects.csv, and a name QuPath shows
        r.properties.update({"id": i, "name": f"{r.name} {i}"})
    stem = path.stem
    write_geojson(out / f"{stem}.geojson", regions, classes)
    write_imagescope_xml(out / f"{stem}.xml", regions, classes, mpp=mpp0)
    rows = _objects(regions, mpp0)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["class", "id", "x", "y", "x0", "y0", "x1", "y1", "area_px",
                                        "area_um2"])  # fmt: skip
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(out / "objects.csv", buf.getvalue().encode("utf-8"))
    _overview(out / "overview.png", slide, canvas.canvas, classes, cut)
    counts = {c: sum(r["class"] == c for r in rows) for c in classes}
    areas = {c: round(sum(float(r["area_px"]) for r in rows if r["class"] == c) * (mpp0 or 1) ** 2,
                      2) for c in classes}  # fmt: skip
    summary = {"slide": str(path), "tiles": len(tiles), "tiles_recomputed": len(todo),
               "objects": counts, "area_um2" if mpp0 else "area_px": areas,
               "mpp": mpp0, "working_mpp": work.mpp, "level": work.level}  # fmt: skip
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _overview(path: Path, slide: Any, canvas: np.ndarray, classes: list[str], cut: int) -> None:
    """A thumbnail (longer side <= 2048 px) with every class's outline drawn."""
    from PIL import Image

    from glomssl.data.images import save_png
    from glomssl.finetune.segmenter.report import colour, overlay

    _, h, w = canvas.shape
    step = max(1, int(np.ceil(max(h, w) / 2048)))
    small = np.asarray(canvas[:, ::step, ::step]) >= cut  # (K, h', w')
    thumb = slide.get_thumbnail((small.shape[2], small.shape[1])).convert("RGB")
    img = np.asarray(thumb.resize((small.shape[2], small.shape[1]), Image.Resampling.BILINEAR))
    for k in range(len(classes)):
        img = overlay(img, small[k], colour(k))
    save_png(path, img)


def run_segment_slides(cfg: Any) -> dict[str, Any]:
    """Every slide of ``cfg.input`` into ``cfg.out/<slide name>/``."""
    from glomssl.finetune.segmenter.infer import prepare_model
    from glomssl.fsutil import ensure_writable_dir

    if cfg.scale is not None:
        raise GlomsslError(
            "--scale resizes plain images; for slides choose the resolution with --mpp or --level"
        )
    model, meta, idx, tile, overlap, device = prepare_model(
        cfg.model, cfg.device, cfg.classes, cfg.tile, cfg.overlap
    )
    out = ensure_writable_dir(cfg.out)
    from glomssl.data.sources import resolve_sources

    if cfg.as_slides:
        slides = [Path(p) for p in cfg.input]
        for p in slides:
            if not p.is_file():
                raise GlomsslError(
                    f"--input {p} is not a file; --as-slides takes slide/image files"
                )
    else:
        slides = resolve_sources(cfg.input, what="--input").slides
    results = [segment_slide(Path(p), out / Path(p).stem, cfg, model, meta, idx, tile, overlap,
                             device) for p in slides]  # fmt: skip
    return {
        "out": str(out),
        "slides": len(results),
        "classes": [meta["classes"][i] for i in idx],
        "objects": sum(sum(r["objects"].values()) for r in results),
        "results": results,
    }
