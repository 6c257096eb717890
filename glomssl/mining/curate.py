"""Curation: keep light-microscopy tissue panels, drop everything else with a reason.

Two layers, as in Glo-In-One's mining chain (Yao et al.: mined figures -> panels -> a curator keeping
panels scored >= 0.7):

1. Cheap image statistics (no model). Each panel is measured on a thumbnail (long side
   ``STATS_SIDE``) and dropped with one reason code when it is
   ``tiny`` (shorter side below ``min_side``), ``blank`` (almost no contrast), a drawing
   (``chart`` with long axis lines, ``text`` of dark strokes on white, any other ``diagram`` made of
   a few flat colours), ``fluorescence`` (mostly dark background) or ``greyscale`` (no stain colour:
   electron micrographs, phase contrast). Drawings are told from photographs by two numbers: the share
   of non-background pixels whose neighbours have the same colour (drawings are flat, micrographs
   carry sensor noise and texture) and how much of the non-background is covered by its 8 most
   common colours (drawings use a small palette).
2. An optional learned scorer (:mod:`glomssl.mining.scorer`, ``glomssl curate train``) that keeps
   panels whose probability of showing glomerular tissue reaches ``threshold``.

``run_curate`` reads a FOLDER or MANIFEST and writes ``OUT/manifest.jsonl`` (kept rows, every
provenance field kept; images outside OUT are hard-linked into OUT/images/), ``OUT/rejected.jsonl`` (input row + absolute
``image`` path, ``reason``, ``detail`` and ``curate_score``), ``OUT/failures.jsonl`` (unreadable files) and ``OUT/curate.yaml``. Outputs
hold no timestamps, so a rerun writes identical files.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.errors import GlomsslError

STATS_SIDE = 256
REASONS = ("tiny", "blank", "chart", "text", "diagram", "fluorescence", "greyscale", "score")


@dataclasses.dataclass
class CurateConfig:
    """Options of ``glomssl curate`` (defaults tuned on drawn charts vs real PAS/H&E panels)."""

    input: str = ""
    out: str = ""
    scorer: str | None = None
    threshold: float = 0.7
    min_side: int = 64
    blank_std: float = 4.0
    graphic_flat: float = 0.55
    graphic_palette: float = 0.6
    paper_white: float = 0.6
    dark_fraction: float = 0.5
    grey_chroma: float = 8.0
    quiet: bool = False

    def validate(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise GlomsslError(f"--threshold {self.threshold} must lie in [0, 1]")
        if self.min_side < 1:
            raise GlomsslError(f"--min-side {self.min_side} must be a positive number of pixels")
        for name in ("graphic_flat", "graphic_palette", "paper_white", "dark_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise GlomsslError(f"config {name}: {v} must lie in [0, 1]")


def load_rgb(path: str | os.PathLike[str], max_side: int | None = None) -> Any:
    """Open any image as 8-bit RGB (16-bit and float images are stretched to 0..255).

    ``max_side`` shrinks the image (box filter) so its longer side is at most that many pixels.
    Raises GlomsslError naming the file when it cannot be decoded.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
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
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise GlomsslError(f"{path} is not a readable image ({exc}); remove or replace it") from exc
    if max_side is not None and max(out.size) > max_side:
        s = max_side / max(out.size)
        size = (max(1, round(out.width * s)), max(1, round(out.height * s)))
        out = out.resize(size, Image.Resampling.BOX)
    return out


def _max_run(mask: np.ndarray) -> np.ndarray:
    """Longest run of True along the last axis, per row. mask: (R, C) bool -> (R,) int."""
    r, c = mask.shape
    if c == 0:
        return np.zeros(r, dtype=np.int64)
    padded = np.zeros((r, c + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)  # +1 at run starts, -1 one past run ends
    rows_s, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)
    best = np.zeros(r, dtype=np.int64)
    np.maximum.at(best, rows_s, ends - starts)
    return best


def image_stats(rgb: np.ndarray) -> dict[str, float]:
    """Statistics of an RGB thumbnail that separate micrographs from drawings and other modalities.

    rgb: (H, W, 3) uint8. Returns plain floats (JSON-ready), all in [0, 1] unless named otherwise.
    """
    a = rgb.astype(np.int16)  # (H, W, 3)
    lum = 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]  # (H, W)
    chroma = (a.max(axis=2) - a.min(axis=2)).astype(np.float64)  # (H, W)
    white = (lum >= 225) & (chroma <= 25)
    dark = lum <= 40
    ink = ~white  # foreground: anything that is not paper-white background
    n = lum.size
    n_ink = int(ink.sum())

    # flatness: a pixel is flat when its right and lower neighbours differ by <= 3 in every channel
    flat = np.zeros(lum.shape, dtype=bool)
    if lum.shape[0] > 1 and lum.shape[1] > 1:
        dx = np.abs(np.diff(a, axis=1)).max(axis=2)[:-1, :]  # (H-1, W-1)
        dy = np.abs(np.diff(a, axis=0)).max(axis=2)[:, :-1]  # (H-1, W-1)
        flat[:-1, :-1] = (dx <= 3) & (dy <= 3)
    # palette: colours quantised to 5 bits per channel
    q = (a >> 3).astype(np.int32)
    codes = (q[..., 0] << 10) | (q[..., 1] << 5) | q[..., 2]  # (H, W)
    all_counts = np.sort(np.bincount(codes.ravel(), minlength=1 << 15))[::-1]
    top1 = float(all_counts[0]) / n
    if n_ink:
        ink_counts = np.sort(np.bincount(codes[ink], minlength=1 << 15))[::-1]
        ink_top8 = float(ink_counts[:8].sum()) / n_ink
        ink_flat = float(flat[ink].mean())
        ink_grey = float((chroma[ink] <= 25).mean())
        fg = ink & ~dark
        fg_chroma = float(chroma[fg].mean()) if fg.any() else 0.0
    else:
        ink_top8 = ink_flat = ink_grey = 1.0
        fg_chroma = 0.0
    # thin marks: ink pixels touching paper-white within one pixel (lines and letters are all edge;
    # a tissue section on glass is a solid region whose pixels mostly have no white neighbour)
    near_white = white.copy()
    near_white[1:, :] |= white[:-1, :]
    near_white[:-1, :] |= white[1:, :]
    near_white[:, 1:] |= white[:, :-1]
    near_white[:, :-1] |= white[:, 1:]
    thin = float(near_white[ink].mean()) if n_ink else 1.0
    strokes = lum < 160
    h_run = float(_max_run(strokes).max(initial=0)) / lum.shape[1]
    v_run = float(_max_run(strokes.T).max(initial=0)) / lum.shape[0]
    means = a.reshape(-1, 3).mean(axis=0)
    bright = ~dark
    if bright.any():
        ch_means = a[bright].mean(axis=0)
        channels = int((ch_means >= 0.5 * ch_means.max()).sum()) if ch_means.max() > 0 else 0
    else:
        channels = 0
    return {
        "lum_mean": float(lum.mean()) / 255.0,
        "lum_std": float(lum.std()),  # in grey levels 0..255
        "lum_median": float(np.median(lum)) / 255.0,
        "white": float(white.mean()),
        "dark": float(dark.mean()),
        "ink": n_ink / n,
        "colour": float((chroma >= 25).mean()),
        "fg_chroma": fg_chroma,  # mean max-min channel spread of foreground, grey levels
        "top1": top1,
        "ink_top8": ink_top8,
        "ink_flat": ink_flat,
        "ink_grey": ink_grey,
        "ink_thin": thin,
        "h_run": h_run,
        "v_run": v_run,
        "r_mean": float(means[0]) / 255.0,
        "g_mean": float(means[1]) / 255.0,
        "b_mean": float(means[2]) / 255.0,
        "channels": float(channels),
    }


def classify_stats(
    stats: dict[str, float], width: int, height: int, cfg: CurateConfig
) -> tuple[str | None, str]:
    """Apply the statistics rules in order; return (reason or None when kept, human detail)."""
    if min(width, height) < cfg.min_side:
        return "tiny", f"{width}x{height} px, shorter side below {cfg.min_side}"
    if stats["lum_std"] < cfg.blank_std or stats["top1"] >= 0.98:
        return "blank", f"luminance std {stats['lum_std']:.1f}, top colour {stats['top1']:.2f}"
    # a drawing: flat areas of a few colours, on paper-white or in colour (a smooth greyscale
    # micrograph without white background is also flat and few-toned, so it is left to `greyscale`)
    # Anti-aliased, JPEG-compressed plots and text have no flat ink at all (every stroke pixel is an
    # edge), so a second test looks for marks on paper: mostly white, and the marks are thin (touch
    # the white) or largely grey (axes, letters). Real PAS/H&E crops stay below both (measured on
    # ../shared/data: white <= 0.60, thin <= 0.27, grey ink <= 0.34; exsclaim plots: white >= 0.65).
    on_paper = stats["white"] >= cfg.paper_white and (
        stats["ink_thin"] >= 0.25 or stats["ink_grey"] >= 0.45 or stats["white"] >= 0.85
    )
    graphic = (
        stats["ink"] < 0.005
        or on_paper
        or (
            stats["ink_flat"] >= cfg.graphic_flat
            and stats["ink_top8"] >= cfg.graphic_palette
            and (stats["white"] >= 0.25 or stats["colour"] >= 0.05)
        )
    )
    if graphic:
        detail = f"flat {stats['ink_flat']:.2f}, palette top-8 {stats['ink_top8']:.2f}"
        if stats["h_run"] >= 0.4 and stats["v_run"] >= 0.4:
            return "chart", f"{detail}, axis lines {stats['h_run']:.2f}/{stats['v_run']:.2f}"
        if stats["ink_grey"] >= 0.9 and stats["ink"] <= 0.35:
            return "text", f"{detail}, grey ink {stats['ink']:.2f} of the area"
        return "diagram", detail
    if stats["dark"] >= cfg.dark_fraction:
        return "fluorescence", (
            f"dark background {stats['dark']:.2f}, {int(stats['channels'])} bright channel(s)"
        )
    if stats["fg_chroma"] < cfg.grey_chroma and stats["colour"] < 0.02:
        return "greyscale", f"foreground chroma {stats['fg_chroma']:.1f} (no stain colour)"
    return None, "light-microscopy statistics"


def place_file(file: Path, rel: str, out_dir: Path) -> str:
    """Path of ``file`` relative to ``out_dir`` for an output manifest.

    Manifests may only point inside their own folder, so a file outside ``out_dir`` is hard-linked
    (copied where links are impossible, atomically) to ``out_dir/images/<rel>``, ``rel`` being its
    path relative to the input. An existing identical target is left alone, so reruns are no-ops.
    """
    import filecmp
    import shutil

    def relpath(p: Path) -> str:  # both sides absolute already; avoids a resolve() per row
        return Path(os.path.relpath(p, out_dir)).as_posix()

    file = Path(os.path.abspath(file))
    if file.is_relative_to(out_dir):
        return relpath(file)
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts or not parts:  # never write outside OUT/images
        from glomssl.fsutil import sha256_bytes

        rel = f"{sha256_bytes(rel.encode())[:12]}_{file.name}"
    target = out_dir / "images" / rel
    if target.is_file() and (target.samefile(file) or filecmp.cmp(target, file, shallow=False)):
        return relpath(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        os.link(file, tmp)
    except OSError:
        shutil.copyfile(file, tmp)
    os.replace(tmp, target)
    return relpath(target)


def output_row(row: dict[str, Any], image: Path, out_dir: Path, src_dir: Path) -> dict[str, Any]:
    """Copy of ``row`` for OUT/manifest.jsonl: ``path`` (and ``mask``) placed inside ``out_dir``."""
    new = dict(row)
    new["path"] = place_file(image, str(row["path"]), out_dir)
    if isinstance(row.get("mask"), str) and row["mask"]:
        new["mask"] = place_file(src_dir / row["mask"], str(row["mask"]), out_dir)
    return new


def check_not_overwriting(source: str | os.PathLike[str], out: str | os.PathLike[str]) -> None:
    """Refuse an --out whose manifest.jsonl would replace the input manifest (reruns would differ)."""
    src = Path(source)
    if src.is_file() and (Path(out) / "manifest.jsonl").resolve() == src.resolve():
        raise GlomsslError(
            f"--out {out} would overwrite the input manifest {src}; choose another output folder"
        )


def complete_rows(source: str | os.PathLike[str]) -> tuple[list[tuple[Path, dict[str, Any]]], Path]:
    """FOLDER or MANIFEST -> (absolute image path, full manifest row) pairs and the source folder.

    A folder's rows get ``sha256``/``width``/``height`` (hashing each file); unreadable files keep a
    bare row and are reported by the caller when it opens them.
    """
    from glomssl.fsutil import sha256_file
    from glomssl.manifest import list_images, load_image_list, read_manifest

    src = Path(source)
    if src.is_file():  # a manifest: validated rows; paths joined without a resolve() per row
        src_dir = src.resolve().parent
        rows = read_manifest(src)
        if not rows:
            raise GlomsslError(f"manifest {src} has no rows")
        base = str(src_dir)
        return [(Path(os.path.normpath(os.path.join(base, r["path"]))), r) for r in rows], src_dir
    if not src.is_dir():
        load_image_list(src)  # raises the standard one-line error for a wrong path
    files = list_images(src)
    if not files:
        raise GlomsslError(
            f"folder {src} holds no images; point --input at a folder of PNG/JPEG/TIFF"
        )
    src_dir = src.resolve()
    from PIL import Image

    out: list[tuple[Path, dict[str, Any]]] = []
    for f in files:
        # paths as listed, symlinks not followed: a folder of links keeps its own file names
        image = Path(os.path.abspath(f))
        row: dict[str, Any] = {
            "path": Path(os.path.relpath(image, os.path.abspath(src))).as_posix()
        }
        row["sha256"] = sha256_file(image)
        try:
            with Image.open(image) as im:
                row["width"], row["height"] = int(im.width), int(im.height)
        except (OSError, ValueError):
            pass
        out.append((image, row))
    return out, src_dir


def progress_iter(items: list[Any], quiet: bool, desc: str) -> Any:
    import sys

    if quiet or not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img")


class FeatureCache:
    """Per-image measurements keyed by (kind, sha256) in a SQLite file inside OUT.

    An interrupted ``curate`` or ``dedup`` run resumes where it stopped: images measured before are
    not opened again. Values are deterministic functions of the file bytes, so cached and fresh
    results are identical and so are the output files. Commits every 256 entries (WAL journal).
    """

    def __init__(self, path: Path) -> None:
        import sqlite3

        try:
            self.db = sqlite3.connect(path)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS cache (kind TEXT, sha256 TEXT, value BLOB, "
                "PRIMARY KEY (kind, sha256))"
            )
        except sqlite3.DatabaseError as exc:
            raise GlomsslError(f"cache {path} is damaged ({exc}); delete it and rerun") from exc
        self.pending = 0

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.commit()
        self.db.close()

    def get(self, kind: str, key: str | None) -> bytes | None:
        if not key:
            return None
        row = self.db.execute(
            "SELECT value FROM cache WHERE kind = ? AND sha256 = ?", (kind, key)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, kind: str, key: str | None, value: bytes) -> None:
        if not key:
            return
        self.db.execute("INSERT OR REPLACE INTO cache VALUES (?, ?, ?)", (kind, key, value))
        self.pending += 1
        if self.pending >= 256:
            self.db.commit()
            self.pending = 0


def _measure(
    image: Path, row: dict[str, Any], cache: FeatureCache, want_features: bool
) -> tuple[int, int, dict[str, float], list[float] | None]:
    """(width, height, statistics, scorer features or None) of one image, from the cache if there."""
    import json

    key = row.get("sha256")
    hit = cache.get("curate-v1", key)
    if hit is not None:
        m = json.loads(hit)
        if m["features"] is not None or not want_features:
            return int(m["w"]), int(m["h"]), m["stats"], m["features"]
    full = load_rgb(image)
    width, height = full.size
    thumb = full
    if max(full.size) > STATS_SIDE:
        from PIL import Image

        s = STATS_SIDE / max(full.size)
        size = (max(1, round(width * s)), max(1, round(height * s)))
        thumb = full.resize(size, Image.Resampling.BOX)
    stats = image_stats(np.asarray(thumb))
    feats = None
    if want_features:
        from glomssl.mining.scorer import image_features

        feats = [float(v) for v in image_features(full)]
    m = {"w": width, "h": height, "stats": stats, "features": feats}
    cache.put("curate-v1", key, json.dumps(m).encode())
    return width, height, stats, feats


def _decide(
    cfg: CurateConfig,
    row: dict[str, Any],
    image: Path,
    width: int,
    height: int,
    stats: dict[str, float],
    feats: list[float] | None,
    scorer: Any,
    out_dir: Path,
    src_dir: Path,
    kept: list[dict[str, Any]],
    rejected: list[dict[str, Any]],
    counts: dict[str, int],
) -> None:
    """Apply the statistics rules, then the scorer, and file the row as kept or rejected."""
    reason, detail = classify_stats(stats, width, height, cfg)
    score: float | None = None
    if reason is None and scorer is not None and feats is not None:
        score = float(scorer.score_features(np.asarray(feats)[None, :])[0])
        if score < cfg.threshold:
            reason, detail = "score", f"scorer {score:.3f} below threshold {cfg.threshold}"
    if reason is None:
        new = output_row(row, image, out_dir, src_dir)
        if score is not None:
            new["curate_score"] = round(score, 6)
        kept.append(new)
    else:
        counts[reason] += 1
        new = dict(row, image=str(image), reason=reason, detail=detail)
        new["curate_score"] = None if score is None else round(score, 6)
        rejected.append(new)


def run_curate(cfg: CurateConfig) -> dict[str, Any]:
    """Curate a FOLDER or MANIFEST of panels into ``cfg.out``; return a summary dict.

    Every input ends in exactly one of manifest.jsonl (kept), rejected.jsonl (reason, detail, score)
    or failures.jsonl (unreadable). Deterministic: a rerun writes byte-identical files.
    """
    from glomssl.config import save_config
    from glomssl.fsutil import ensure_writable_dir
    from glomssl.manifest import write_jsonl, write_manifest

    cfg.validate()
    if not cfg.input:
        raise GlomsslError("curate needs --input FOLDER|MANIFEST")
    if not cfg.out:
        raise GlomsslError("curate needs --out DIR")
    scorer = None
    if cfg.scorer:
        from glomssl.mining.scorer import load_scorer

        scorer = load_scorer(cfg.scorer)
    check_not_overwriting(cfg.input, cfg.out)
    pairs, src_dir = complete_rows(cfg.input)
    out_dir = ensure_writable_dir(cfg.out).resolve()
    save_config(cfg, out_dir / "curate.yaml")

    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    counts: dict[str, int] = {r: 0 for r in REASONS}
    with FeatureCache(out_dir / ".curate-cache.sqlite") as cache:
        for image, row in progress_iter(pairs, cfg.quiet, "curate"):
            try:
                width, height, stats, feats = _measure(image, row, cache, scorer is not None)
            except GlomsslError as exc:
                failures.append({"path": row.get("path", str(image)), "error": str(exc)})
                continue
            _decide(
                cfg,
                row,
                image,
                width,
                height,
                stats,
                feats,
                scorer,
                out_dir,
                src_dir,
                kept,
                rejected,
                counts,
            )
    write_manifest(out_dir / "manifest.jsonl", kept)
    write_jsonl(out_dir / "rejected.jsonl", rejected)
    write_jsonl(out_dir / "failures.jsonl", failures)
    return {
        "input": len(pairs),
        "kept": len(kept),
        "rejected": len(rejected),
        "failed": len(failures),
        "reasons": {k: v for k, v in counts.items() if v},
        "out": str(out_dir),
    }
