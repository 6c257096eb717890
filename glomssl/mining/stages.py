"""The later stages of ``glomssl mine``: separate -> curate -> dedup.

Each stage reads the previous stage's manifest and writes its own folder inside ``OUT``:
``panels/`` (compound figures split into panels), ``curated/`` (light-microscopy tissue panels kept,
``rejected.jsonl`` with reasons) and ``dedup/`` (near-duplicates dropped, ``dropped.jsonl`` says in
favour of which row). A stage whose input manifest and options are unchanged since it last finished is
skipped (its fingerprint is kept in ``state.sqlite``), so re-running a finished ``mine`` does nothing.
Options per stage come from ``stage_options`` in a ``--config`` YAML file, e.g.::

    stage_options:
      separate: {method: classic}
      curate: {scorer: scorer.json, threshold: 0.7}
      dedup: {cosine: 0.97}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glomssl.config import build_config
from glomssl.mining.pipeline import MineContext, StageResult, register_stage

RunFn = Callable[[Any], dict[str, Any]]


def _fingerprint(manifest: Path, options: dict[str, Any]) -> str:
    h = hashlib.sha256(manifest.read_bytes())
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _run_stage(
    ctx: MineContext, name: str, folder: str, config_cls: type, run: RunFn
) -> StageResult:
    """Run one folder-to-folder stage on the latest manifest, unless it is already up to date."""
    if ctx.manifest is None or not Path(ctx.manifest).is_file():
        return StageResult(name, skipped=True)
    out = ctx.out / folder
    target = out / "manifest.jsonl"
    options = dict(ctx.cfg.stage_options.get(name, {}))
    key = f"stage:{name}:fingerprint"
    fp = _fingerprint(Path(ctx.manifest), options)
    if target.is_file() and ctx.store.get_meta(key) == fp:
        return StageResult(name, manifest=target, counts={"up_to_date": 1})
    ctx.progress.set_description(name)
    cfg: Any = build_config(
        config_cls,
        None,
        {**options, "input": str(ctx.manifest), "out": str(out), "quiet": ctx.cfg.quiet},
    )
    summary = run(cfg)
    ctx.store.set_meta(key, fp)
    counts = {
        k: int(v) for k, v in summary.items() if isinstance(v, int | float) and k != "seconds"
    }
    return StageResult(name, manifest=target, counts=counts)


def separate_stage(ctx: MineContext) -> StageResult:
    """Split compound figures into panels (shipped YOLO weights by default)."""
    from glomssl.mining.separate import SeparateConfig, run_separate

    return _run_stage(ctx, "separate", "panels", SeparateConfig, run_separate)


def curate_stage(ctx: MineContext) -> StageResult:
    """Keep light-microscopy tissue panels (image statistics, optional learned scorer)."""
    from glomssl.mining.curate import CurateConfig, run_curate

    return _run_stage(ctx, "curate", "curated", CurateConfig, run_curate)


def dedup_stage(ctx: MineContext) -> StageResult:
    """Drop exact, perceptual-hash and embedding near-duplicates."""
    from glomssl.mining.dedup import DedupConfig, run_dedup

    return _run_stage(ctx, "dedup", "dedup", DedupConfig, run_dedup)


register_stage("separate", separate_stage, after="download")
register_stage("curate", curate_stage, after="separate")
register_stage("dedup", dedup_stage, after="curate")
