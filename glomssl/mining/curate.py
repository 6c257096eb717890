"""Curation: keep light-microscopy tissue panels, drop everything else with a reason.

Two layers, as in Glo-In-One's mining chain (Yao et al.: mined figures -> panels -> a curator keeping
panels scored >= 0.7):

1. Cheap image statistics (no model, :mod:`glomssl.mining.panel_stats`), measured on a thumbnail
   (long side ``STATS_SIDE``). A panel is dropped with one reason code when it is ``tiny``, ``blank``,
   a drawing (``chart``, ``text``, ``diagram``: flat colours, thin marks on paper, or smooth shading),
   ``fluorescence`` (dark background), ``false_colour`` (saturated colours of many hues: heat maps,
   element maps) or ``greyscale`` (no stain colour, or a grey image with a few coloured marks:
   electron micrographs, phase contrast).
2. An optional learned scorer (:mod:`glomssl.mining.scorer`, ``glomssl curate train``) that keeps
   panels whose probability of showing glomerular tissue reaches ``threshold``.

``run_curate`` reads a FOLDER or MANIFEST and writes ``OUT/manifest.jsonl`` (kept rows, every
provenance field kept; images outside OUT are hard-linked into OUT/images/), ``OUT/rejected.jsonl``
(input row + absolute ``image`` path, ``reason``, ``detail`` and ``curate_score``),
``OUT/skipped.jsonl`` (unreadable files, when there are any) and ``OUT/curate.yaml``. Outputs hold no
timestamps, so a rerun writes identical files. An empty input manifest gives empty outputs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.config import opt
from glomssl.data.images import load_rgb
from glomssl.errors import GlomsslError
from glomssl.mining.folder_stage import FeatureCache, Row
from glomssl.mining.panel_stats import REASONS, STATS_SIDE, classify_stats, image_stats

_CACHE_KIND = "curate-v2"  # v2: stats gained ink_smooth, ink_neutral, ink_vivid, vivid_hues


@dataclasses.dataclass
class CurateConfig:
    """Options of ``glomssl curate`` (defaults measured on drawn figures vs real PAS/H&E panels)."""

    input: str = ""
    out: str = ""
    scorer: str | None = None
    threshold: float = opt(0.7, ge=0, le=1)
    min_side: int = opt(64, ge=1)
    blank_std: float = opt(4.0, ge=0)
    graphic_flat: float = opt(0.55, ge=0, le=1)
    graphic_palette: float = opt(0.6, ge=0, le=1)
    paper_white: float = opt(0.6, ge=0, le=1)
    smooth_shading: float = opt(0.45, ge=0, le=1)
    dark_fraction: float = opt(0.5, ge=0, le=1)
    vivid_fraction: float = opt(0.1, ge=0, le=1)
    grey_chroma: float = opt(8.0, ge=0)
    grey_fraction: float = opt(0.55, ge=0, le=1)
    quiet: bool = False

    def validate(self) -> None:
        """Bounds are enforced by :func:`glomssl.config.check_values` (field metadata)."""


def _measure(
    image: Path, sha: str, cache: FeatureCache, want_features: bool
) -> tuple[int, int, dict[str, float], list[float] | None]:
    """(width, height, statistics, scorer features or None) of one image, from the cache if there."""
    hit = cache.get(_CACHE_KIND, sha)
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
        from glomssl.mining.panel_features import image_features

        feats = [float(v) for v in image_features(full)]
    m = {"w": width, "h": height, "stats": stats, "features": feats}
    cache.put(_CACHE_KIND, sha, json.dumps(m).encode())
    return width, height, stats, feats


def decide(
    cfg: CurateConfig,
    width: int,
    height: int,
    stats: dict[str, float],
    feats: list[float] | None,
    scorer: Any,
) -> tuple[str | None, str, float | None]:
    """The statistics rules, then the scorer: (reason or None when kept, detail, score or None)."""
    reason, detail = classify_stats(stats, width, height, cfg)
    score: float | None = None
    if reason is None and scorer is not None and feats is not None:
        score = float(scorer.score_features(np.asarray(feats)[None, :])[0])
        if score < cfg.threshold:
            reason, detail = "score", f"scorer {score:.3f} below threshold {cfg.threshold}"
    return reason, detail, score


def run_curate(cfg: CurateConfig) -> dict[str, Any]:
    """Curate a FOLDER or MANIFEST of panels into ``cfg.out``; return a summary dict.

    Every input file ends in exactly one of manifest.jsonl (kept), rejected.jsonl (reason, detail,
    score) or skipped.jsonl (unreadable). Deterministic: a rerun writes byte-identical files.
    """
    from glomssl.config import check_values, save_config
    from glomssl.fsutil import ensure_writable_dir
    from glomssl.manifest import write_jsonl, write_manifest
    from glomssl.mining.folder_stage import (
        check_not_overwriting,
        file_hash,
        output_row,
        progress_iter,
        read_input,
        write_skip_list,
    )

    check_values(cfg)
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
    pairs, src_dir, repeats = read_input(cfg.input, cfg.out, "curate")
    out_dir = ensure_writable_dir(cfg.out).resolve()
    save_config(cfg, out_dir / "curate.yaml")

    kept: list[Row] = []
    rejected: list[Row] = []
    skipped: list[dict[str, str]] = []
    counts: dict[str, int] = {r: 0 for r in REASONS}
    rehashed = 0
    with FeatureCache(out_dir / ".curate-cache.sqlite") as cache:
        for image, row in progress_iter(pairs, cfg.quiet, "curate"):
            try:
                sha, stale = file_hash(image, row)
                width, height, stats, feats = _measure(image, sha, cache, scorer is not None)
            except GlomsslError as exc:
                skipped.append({"path": str(image), "reason": str(exc)})
                continue
            rehashed += stale
            reason, detail, score = decide(cfg, width, height, stats, feats, scorer)
            if reason is None:
                new = output_row(row, image, out_dir, src_dir, sha, (width, height))
                if score is not None:
                    new["curate_score"] = round(score, 6)
                kept.append(new)
            else:
                counts[reason] += 1
                new = dict(row, image=str(image), reason=reason, detail=detail)
                new["curate_score"] = None if score is None else round(score, 6)
                rejected.append(new)
    if pairs and not kept and not rejected:
        write_skip_list(out_dir, skipped)
        raise GlomsslError(
            f"none of the {len(pairs)} images of {cfg.input} could be read (e.g. "
            f"{skipped[0]['reason']}); see {out_dir / 'skipped.jsonl'}"
        )
    write_manifest(out_dir / "manifest.jsonl", kept)
    write_jsonl(out_dir / "rejected.jsonl", rejected)
    write_skip_list(out_dir, skipped)
    return {
        "input": len(pairs),
        "kept": len(kept),
        "rejected": len(rejected),
        "skipped": len(skipped),
        "repeats": repeats,
        "rehashed": rehashed,
        "reasons": {k: v for k, v in counts.items() if v},
        "out": str(out_dir),
    }
