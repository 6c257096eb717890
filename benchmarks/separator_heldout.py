"""Held-out evaluation of the panel separators (the decision rule of docs/experiments/panel-detector.md).

Sets:
- ``heldout`` (H, decides): 300 figures of glomssl.mining.synth.heldout (a layout generator never used in
  training), seeds [20251, i] for i from ``--first`` (0; H2, first drawn in the fifth session:
  300); panels are glomerulus crops of centre VUHSK, crops of the 12 aidpath PAS tiles and
  matplotlib charts, none of which any new training run sees.
- ``tuning`` (T, sets parameters): 200 figures of the training generator with seed 98 and the training
  panel pool (``--images``, see benchmarks/separator_pool.py).
- ``exsclaim`` (sanity check, only with --exsclaim): the 14 real figures of ../shared/data.
- ``relayout`` (R, a report, decides nothing): the 14 exsclaim layouts refilled with held-out
  content, ``--fills`` times each from fill ``--first`` (real layout geometry, synthetic panels;
  see relayout_set; fills 0-9 are R, fills 10-19 R2, first drawn in section 46).
- ``biomed`` (B, section 49): real biomedical figure layouts (benchmarks/data/sciint_layouts.txt,
  303 figures annotated by the Scientific Integrity Dataset, MIT licence beside it), every box
  refilled with held-out pictures, ``--fills`` times each from fill ``--first``; ``--part odd`` or
  ``even`` keeps one fixed half of the figures (odd: to look at, even: to decide on).
- ``strips`` (S, a probe of section 27): 200 long rows or columns of 3-20 pictures at full
  resolution, seeds [20271, i] for i from ``--first`` (see strip_set); ``strips512`` is the same
  figures scaled to a 512-px long side.

Each candidate ("classic", "yolo", "hybrid") runs through glomssl.mining.separate.Separator, exactly as
``glomssl separate`` does. ``--grid`` instead scores a grid of hybrid/yolo thresholds on the chosen set
from one detector pass (NMS at the lowest confidence, then filtered: greedy NMS keeps the same boxes).

Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import json
import math
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from glomssl.data.images import SOURCE_FORMAT
from glomssl.mining.boxes import prf1
from glomssl.mining.classic import ClassicParams, clean_boxes, ink_mask, whole_figure
from glomssl.mining.hybrid import HybridParams, hybrid_boxes
from glomssl.mining.separate import Separator
from glomssl.mining.synth import Fonts, load_pool, make_figure
from glomssl.mining.synth.heldout import (
    exsclaim_set as real_exsclaim,
)
from glomssl.mining.synth.heldout import (
    heldout_pools,
    layout_file_set,
    make_heldout_figure,
    relayout_set,
    strip_set,
)

ROOT = Path(__file__).resolve().parents[1]
Figures = tuple[list[Image.Image], list[list[tuple[int, int, int, int]]]]


def heldout_set(
    shared: Path, n: int, cache: Path | None, first: int = 0, scale: float = 1.0
) -> Figures:
    """H (figures ``first`` .. ``first + n - 1``): drawn once, cached as PNG + boxes.json when
    ``cache`` is given (a cache drawn at another ``scale`` is drawn again)."""
    if cache is not None and (cache / "boxes.json").is_file():
        meta = json.loads((cache / "boxes.json").read_text())
        drawn_at = meta[0].get("scale", 1.0) if meta else None
        if len(meta) >= n and meta[0]["file"] == f"{first:04d}.png" and drawn_at == scale:
            figs = [Image.open(cache / m["file"]).convert("RGB") for m in meta[:n]]
            return figs, [[tuple(b) for b in m["boxes"]] for m in meta[:n]]
    glom, tissue = heldout_pools(shared)
    fonts = Fonts()
    figs, truths, meta = [], [], []
    for i in range(first, first + n):
        fig, boxes = make_heldout_figure(
            np.random.default_rng([20251, i]), {"glom": glom, "tissue": tissue}, fonts,
            scale=scale,
        )  # fmt: skip
        figs.append(fig)
        truths.append(boxes)
        meta.append({"file": f"{i:04d}.png", "boxes": [list(b) for b in boxes]})
        if scale != 1.0:
            meta[-1]["scale"] = scale
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        for m, fig in zip(meta, figs):
            fig.save(cache / m["file"])
        (cache / "boxes.json").write_text(json.dumps(meta))
    return figs, truths


def tuning_set(n: int, images: list[str]) -> Figures:
    fonts = Fonts()
    pool = load_pool(images, 2000, 98) if images else []
    figs, truths = [], []
    for i in range(n):
        fig, boxes = make_figure(np.random.default_rng([98, i]), fonts, pool)
        figs.append(fig)
        truths.append(boxes)
    return figs, truths


def exsclaim_set(shared: Path) -> Figures:
    """The 14 real figures, read as ``glomssl separate`` reads files (JPEG ones known as JPEG)."""
    return real_exsclaim(shared)


def score(sep: Separator, figs: list[Image.Image], truths: list) -> dict:
    preds = []
    for start in range(0, len(figs), 8):
        preds += [[b for b, _ in p] for p in sep.split(figs[start : start + 8])]
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in prf1(preds, truths).items()}


def grid(sep: Separator, figs: list[Image.Image], truths: list, min_side: int = 24) -> list[dict]:
    """Score yolo confidences and hybrid parameter combinations from one detector pass."""
    arrs = [np.asarray(f) for f in figs]
    inks = [ink_mask(a, params=sep.classic) for a in arrs]
    dets: list = []
    for start in range(0, len(arrs), 8):
        dets += sep.detect(arrs[start : start + 8])

    def finish(raw: list) -> dict:
        preds = []
        for ink, boxes in zip(inks, raw):
            kept = clean_boxes(ink, boxes, min_side)
            preds.append([b for b, _ in kept] if len(kept) > 1 else [whole_figure(ink)[0]])
        return {
            k: round(v, 4)
            for k, v in prf1(preds, truths).items()
            if k in ("precision", "recall", "f1")
        }

    out = []
    for conf in (0.1, 0.15, 0.25, 0.35, 0.5):
        out.append(
            {
                "method": "yolo",
                "conf": conf,
                **finish([[d for d in ds if d[1] >= conf] for ds in dets]),
            }
        )
    base = vars(sep.hybrid)  # the weights' tuned setting; the grid varies it
    combos = itertools.product(
        (0.15, 0.25, 0.35), (0.0, 2.0), (0.0, 0.4, 0.6), (1.0, 0.0), (0.4, 0.6)
    )
    for conf, seam, split_conf, small, merge_conf in combos:
        p = HybridParams(**{**base, "conf": conf, "seam": seam, "split_conf": split_conf,
                            "small": small, "merge_conf": max(conf, merge_conf)})  # fmt: skip
        raw = [
            hybrid_boxes(a, ink, ds, min_side, p, sep.classic)
            for a, ink, ds in zip(arrs, inks, dets)
        ]
        out.append({"method": "hybrid", **vars(p), **finish(raw)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    default_shared = os.environ.get("GLOMSSL_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--shared-data", default=default_shared)
    ap.add_argument(
        "--set",
        choices=["heldout", "tuning", "exsclaim", "relayout", "biomed", "strips", "strips512"],
        default="heldout",
    )
    ap.add_argument("--fills", type=int, default=10, help="relayout, biomed: fills per layout [10]")
    ap.add_argument(
        "--part",
        choices=["all", "odd", "even"],
        default="all",
        help="biomed: the figures with odd or even IDs only [all]",
    )
    ap.add_argument(
        "--layouts",
        default=str(ROOT / "benchmarks" / "data" / "sciint_layouts.txt"),
        help="biomed: the layouts file [benchmarks/data/sciint_layouts.txt]",
    )
    ap.add_argument("--n", type=int, default=0, help="figures [300 heldout, 200 tuning and strips]")
    ap.add_argument("--cache", default=None, help="folder caching the drawn held-out figures")
    ap.add_argument(
        "--first",
        type=int,
        default=0,
        help="first held-out figure's seed index (heldout, strips), or first fill (relayout) [0]",
    )
    ap.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="heldout: draw each layout on a page this many times wider before the shrink to "
        "512 px (smaller panels, thinner gutters, tinier letters); a stress set [1]",
    )
    ap.add_argument(
        "--images", action="append", default=[], help="training panel pool (tuning set)"
    )
    ap.add_argument("--weights", default=None, help="detector weights [shipped]")
    ap.add_argument("--methods", default="classic,yolo,hybrid")
    ap.add_argument("--conf", type=float, default=None, help="detector confidence [per method]")
    ap.add_argument("--iou", type=float, default=None, help="detector NMS overlap [the default's]")
    ap.add_argument(
        "--hybrid", default="", help="hybrid parameters, e.g. member=0.6,merge_conf=0.4"
    )
    ap.add_argument("--grid", action="store_true", help="score a threshold grid instead")
    ap.add_argument(
        "--classic",
        choices=["v1", "v2", "seams", "thin"],
        default="v2",
        help="classic splitter: v1, v2 (the default: gutter-colour background) or seams "
        "(v2 + 1-px gutters and seams, `--seams`) or thin (v2 + guarded 1-px gutters, not "
        "shipped); also the hybrid's leaves [v2]",
    )
    ap.add_argument(
        "--strip",
        type=float,
        default=None,
        help="classic's narrowest gutter is at most 1/STRIP of the short side (0: off) [shipped]",
    )
    ap.add_argument(
        "--zoom",
        type=float,
        default=None,
        help="guided: re-separate returned panels this many times as long as high (0: off; "
        "section 36) [the weights' sidecar]",
    )
    ap.add_argument(
        "--zoom-hint",
        type=float,
        default=None,
        help="with --zoom: only long panels holding a figure-scale detector box at least this share "
        "inside (0: every one; section 37) [the weights' sidecar]",
    )
    ap.add_argument(
        "--zoom-cap",
        type=float,
        default=None,
        help="with --zoom-hint: at most this many more parts than hinting boxes (0: any; "
        "section 38) [the weights' sidecar]",
    )
    ap.add_argument(
        "--zoom-conf",
        type=float,
        default=None,
        help="with --zoom-hint: only detector boxes at least this confident hint (0: guided's "
        "own conf; section 39) [the weights' sidecar]",
    )
    ap.add_argument(
        "--zoom-letters",
        type=float,
        default=None,
        help="with --zoom: 1 undoes a zoom into one lettered panel's pictures (section 40) "
        "[the weights' sidecar]",
    )
    ap.add_argument("--exsclaim", action="store_true", help="also score the 14 exsclaim figures")
    ap.add_argument(
        "--stain",
        choices=("none", "pale", "fluo"),
        default="none",
        help="re-stain the set's pictures (not its charts): pale brown (faint IHC) or green on "
        "black (fluorescence); a stress set of section 31 [none]",
    )
    ap.add_argument(
        "--jpeg",
        type=int,
        default=0,
        help="save each figure as JPEG at this quality (1-95) and score the decoded copy, as "
        "figures mined from the web arrive; a stress set [0: off]",
    )
    ap.add_argument(
        "--charts",
        type=float,
        default=0.0,
        help="biomed: draw each box as a matplotlib chart with this probability (0-1), a stress "
        "set closer to figures that mix pictures and charts [0: pictures only]",
    )
    ap.add_argument(
        "--native",
        type=int,
        default=0,
        help="biomed: draw each figure at its layout's own size (long side capped at this many px, "
        "at least 512) and shrink it to 512 px with Lanczos, as a figure made for print and shown "
        "on the web is; a stress set [0: drawn at 512]",
    )
    ap.add_argument(
        "--chart-style",
        default="",
        help="biomed: draw the charts in this matplotlib style, e.g. ggplot (a grey plot panel "
        "with white grid lines, as ggplot2's default theme) or seaborn-v0_8-whitegrid; a stress "
        "set [plain]",
    )
    args = ap.parse_args()
    if args.native and not 512 <= args.native <= 8192:
        ap.error("--native must be a long side from 512 to 8192 px, or 0 for off")
    if args.chart_style:
        import matplotlib.style

        if args.chart_style not in matplotlib.style.available:
            ap.error(f"--chart-style {args.chart_style} is not a matplotlib style")
    if not (math.isfinite(args.charts) and 0.0 <= args.charts <= 1.0):
        ap.error("--charts must be a share between 0 and 1")
    if not (math.isfinite(args.scale) and 1.0 <= args.scale <= 4.0):
        ap.error("--scale must be between 1 and 4")
    if args.iou is not None and not 0.0 < args.iou <= 1.0:
        ap.error("--iou must be in (0, 1]")
    if not 0 <= args.jpeg <= 95:
        ap.error("--jpeg must be a quality 1-95, or 0 for off")
    if args.first < 0 or args.n < 0:
        ap.error("--first and --n must be >= 0")
    if args.strip is not None and not args.strip >= 0:
        ap.error("--strip must be >= 0 (0: off)")

    shared = Path(args.shared_data)
    if (args.set != "tuning" or args.exsclaim) and not (shared / "compound_figures").is_dir():
        ap.error(f"--shared-data {shared} holds no compound_figures/: pass the shared data folder")
    t0 = time.perf_counter()
    if args.set == "heldout":
        cache = Path(args.cache) if args.cache else None
        data = heldout_set(shared, args.n or 300, cache, args.first, args.scale)
    elif args.set == "exsclaim":
        data = exsclaim_set(shared)
    elif args.set == "relayout":
        if args.fills < 1:
            ap.error("--fills must be >= 1")
        data = relayout_set(shared, args.fills, args.first)
    elif args.set == "biomed":
        if args.fills < 1:
            ap.error("--fills must be >= 1")
        if not Path(args.layouts).is_file():
            ap.error(
                f"--layouts {args.layouts} is not a file: pass benchmarks/data/sciint_layouts.txt"
            )
        data = layout_file_set(
            Path(args.layouts),
            shared,
            args.fills,
            args.first,
            args.part,
            args.charts,
            args.native,
            args.chart_style,
        )
    elif args.set in ("strips", "strips512"):
        data = strip_set(
            shared, args.n or 200, 512 if args.set == "strips512" else 0, first=args.first
        )
    else:
        data = tuning_set(args.n or 200, args.images)
    if args.stain != "none":
        data = ([restain(f, b, args.stain) for f, b in zip(*data)], data[1])
    if args.jpeg:
        data = ([recompress(f, args.jpeg) for f in data[0]], data[1])
    result: dict = {"benchmark": "separator_heldout", "set": args.set, "n": len(data[0]),
                    "stain": args.stain, "jpeg": args.jpeg, "charts": args.charts, "native": args.native, "scale": args.scale, "chart_style": args.chart_style or None,
                    "first": args.first if args.set in ("heldout", "strips", "strips512", "relayout", "biomed") else None,
                    "part": args.part if args.set == "biomed" else None,
                    "panels": sum(len(t) for t in data[1]), "weights": args.weights or "shipped",
                    "draw_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    classic = {
        "v1": ClassicParams.v1(),
        "v2": ClassicParams(),
        "seams": ClassicParams.touching(),
        "thin": ClassicParams(thin=0.7),  # docs/experiments/panel-detector.md, section 8
    }[args.classic]
    if args.strip is not None:
        classic = dataclasses.replace(classic, strip=args.strip)
    result["classic_version"] = args.classic
    result["strip"] = classic.strip
    params = {k: float(v) for k, v in (kv.split("=") for kv in args.hybrid.split(",") if kv)}
    if args.grid:
        result["classic"] = score(Separator("classic", classic=classic), *data)
        detector = Separator("hybrid", weights=args.weights, conf=0.05, classic=classic)
        result["grid"] = grid(detector, *data)
        print(json.dumps(result))
        return
    exs = exsclaim_set(shared) if args.exsclaim else None
    for m in args.methods.split(","):
        sep = Separator(
            m,
            weights=args.weights,
            conf=args.conf,
            **({"iou": args.iou} if args.iou is not None else {}),
            hybrid=params,
            classic=classic,
            zoom=args.zoom,
            zoom_hint=args.zoom_hint,
            zoom_cap=args.zoom_cap,
            zoom_conf=args.zoom_conf,
            zoom_letters=args.zoom_letters,
        )
        result[m] = score(sep, *data)
        if exs is not None:
            result[f"exsclaim_{m}"] = score(sep, *exs)
        if m == "hybrid":
            result["hybrid_params"] = vars(sep.hybrid)
        elif m == "yolo":
            result["yolo_conf"] = sep.conf
        result[f"{m}_iou"] = sep.iou
        if m == "guided":
            result["guided_zoom"] = sep.zoom
            result["guided_zoom_hint"] = sep.zoom_hint
            result["guided_zoom_cap"] = sep.zoom_cap
            result["guided_zoom_conf"] = sep.zoom_conf
            result["guided_zoom_letters"] = sep.zoom_letters
    print(json.dumps(result))


def recompress(fig: Image.Image, quality: int) -> Image.Image:
    """``fig`` saved as a baseline JPEG at ``quality`` (4:2:0 chroma, as most web figures are) and
    decoded again, known as JPEG (as ``glomssl separate`` knows a .jpg file)."""
    buf = io.BytesIO()
    fig.convert("RGB").save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    out = Image.open(buf).convert("RGB")
    out.info[SOURCE_FORMAT] = "JPEG"
    return out


def restain(fig: Image.Image, boxes: list, mode: str) -> Image.Image:
    """``fig`` with each picture panel re-stained from its grey level g (0 white .. 1 black):
    ``pale``: white minus g x (90, 140, 180), a faint brown stain; ``fluo``: green-blue light on
    black, brightest where the stain was darkest. A panel whose mean grey is above 215 is taken for
    a chart (white with ink) and left as drawn. Boxes do not move."""
    a = np.asarray(fig.convert("RGB")).astype(np.float32)  # (H, W, 3)
    for x0, y0, x1, y1 in boxes:
        p = a[y0:y1, x0:x1]
        if p.size == 0 or p.mean() > 215:
            continue
        g = 1.0 - p.mean(axis=2, keepdims=True) / 255.0  # (h, w, 1) stain amount
        if mode == "pale":
            q = 255.0 - g * np.array([90.0, 140.0, 180.0])
        else:
            v = np.clip(g * 1.6 - 0.25, 0.0, 1.0)
            q = np.concatenate([0.25 * v, v, 0.45 * v], axis=2) * 255.0
        a[y0:y1, x0:x1] = np.clip(q, 0, 255)
    return Image.fromarray(a.astype(np.uint8))


if __name__ == "__main__":
    main()
