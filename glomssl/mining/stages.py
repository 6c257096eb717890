"""The stages of ``glomssl mine``, in the order they run: search -> download -> separate -> curate ->
dedup (:data:`STAGES`, a plain list).

``search`` (Open-i pages -> SQLite records) and ``download`` (records -> checked image files +
``figures/manifest.jsonl`` and ``figures/failures.jsonl``) keep their state in ``OUT/state.sqlite``.
The later stages each read the previous stage's manifest and write their own folder inside ``OUT``:
``panels/`` (compound figures split into panels), ``curated/`` (light-microscopy tissue panels kept,
``rejected.jsonl`` with reasons) and ``dedup/`` (near-duplicates dropped, ``dropped.jsonl`` says in
favour of which row). A later stage whose input manifest and options are unchanged since it last
finished is skipped (its fingerprint is kept in ``state.sqlite``), so re-running a finished ``mine``
does nothing; an empty input manifest gives an empty output manifest without running the stage.
Options per later stage come from ``stage_options`` in a ``--config`` YAML file, e.g.::

    stage_options:
      separate: {method: classic}
      curate: {scorer: scorer.json, threshold: 0.7}
      dedup: {cosine: 0.97}

and are checked (:func:`check_stage_options`) before the first request is sent.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from glomssl.errors import GlomsslError


class MineOptions(Protocol):
    """The options the stages read (``glomssl.mining.pipeline.MineConfig`` has them all); a protocol,
    so this module never imports the pipeline that imports it."""

    query: str
    page_size: int
    image_type: str | None
    collection: str | None
    license: tuple[str, ...]
    limit: int | None
    workers: int
    max_bytes: int
    max_pixels: int
    stage_options: dict[str, Any]
    quiet: bool


@dataclass
class StageResult:
    name: str
    manifest: Path | None = None
    counts: dict[str, Any] = field(default_factory=dict)  # numbers, and a stage's ``reasons``
    skipped: bool = False
    note: str | None = None  # a sentence for mine's summary (e.g. panels re-cut)


@dataclass
class MineContext:
    """What stages share: the config, the output folder, the open state and the HTTP clients."""

    cfg: MineOptions
    out: Path
    store: Any  # MineStore
    client: Any  # OpenIClient
    progress: Any  # tqdm bar (disabled when quiet or not a terminal)
    manifest: Path | None = None  # the latest stage's output manifest


def search_stage(ctx: MineContext) -> StageResult:
    """Fetch search pages from the stored cursor on; each page is committed with the cursor.

    Resumes at ``search_next_m``; ends at ``total`` or when ``--limit`` figures are known.
    """
    cfg, store = ctx.cfg, ctx.store
    start = int(store.get_meta("search_next_m", "1"))
    total = store.get_meta("search_total")
    new = dup = requests = bad = 0
    if total is not None and start > int(total):
        return StageResult("search", counts={"new": 0, "duplicates": 0, "requests": 0})
    if cfg.limit is not None and store.count() >= cfg.limit:
        return StageResult("search", counts={"new": 0, "duplicates": 0, "requests": 0})
    ctx.progress.set_description("search")
    pager = ctx.client.iter_pages(
        cfg.query, start, cfg.page_size, cfg.image_type, cfg.collection, cfg.license
    )
    for page in pager:
        requests += page.attempts  # retries of a page are requests too
        if page.total == 0:
            if store.count() == 0:  # no hits at all; a later empty answer is not "done"
                store.set_meta("search_total", "0")
            break
        urls = [ctx.client.image_url(f.img_large) for f in page.figures]
        next_m = max(page.max + 1, start)
        n, d = store.add_page(page.figures, urls, page.min, next_m, page.total, cfg.limit)
        new, dup, bad = new + n, dup + d, bad + len(page.invalid)
        ctx.progress.total = store.count()
        ctx.progress.set_postfix_str(f"found={store.count()}/{page.total}")
        if cfg.limit is not None and store.count() >= cfg.limit:
            break
    counts = {"new": new, "duplicates": dup, "requests": requests, "malformed": bad}
    return StageResult("search", counts=counts)


def download_stage(ctx: MineContext) -> StageResult:
    """Download pending (and last run's transient-failed) figures with a bounded worker pool,
    store each outcome in one transaction, then export the manifests from SQLite.

    Image URLs are built from the record's path on the current ``--endpoint``, so a server that
    moved (a local replay on another port) is still reached.
    """
    from glomssl.mining.download import download_many

    cfg, store = ctx.cfg, ctx.store
    figures = ctx.out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for stale in figures.glob(".*.tmp"):  # temp files of a killed run; never counted
        stale.unlink(missing_ok=True)
    jobs = [(key, ctx.client.image_url(img) or url) for key, img, url in store.todo()]
    bar = ctx.progress
    bar.set_description("download")
    bar.total = store.count()
    bar.n = store.count("done") + store.count("failed_permanent")
    bar.refresh()
    got = failed = 0
    t0 = time.monotonic()
    results = download_many(
        ctx.client.http, jobs, figures, cfg.workers, cfg.max_bytes, cfg.max_pixels
    )
    for res in results:
        store.record_result(res)
        if res.status == "done":
            got += 1
        else:
            failed += 1
        bar.update(1)
        rate = (got + failed) / max(time.monotonic() - t0, 1e-6)
        bar.set_postfix_str(
            f"found={bar.total} downloaded={store.count('done')} failed={failed} rate={rate:.1f}/s"
        )
    n_ok, n_bad = store.export(figures, cfg.query)
    return StageResult(
        "download",
        manifest=figures / "manifest.jsonl",
        counts={"downloaded": got, "failed": failed, "manifest_rows": n_ok, "failures": n_bad},
    )


# ----------------------------------------------------------------------------- folder stages


@dataclass(frozen=True)
class FolderStage:
    """A later stage: one library command run from the previous manifest into ``OUT/<folder>``."""

    name: str
    folder: str
    load: Callable[[], tuple[type, Callable[[Any], dict[str, Any]]]]  # -> (config class, run)

    def __call__(self, ctx: MineContext) -> StageResult:
        return _run_folder_stage(ctx, self)


def _separate() -> tuple[type, Callable[[Any], dict[str, Any]]]:
    from glomssl.mining.separate import SeparateConfig, run_separate

    return SeparateConfig, run_separate


def _curate() -> tuple[type, Callable[[Any], dict[str, Any]]]:
    from glomssl.mining.curate import CurateConfig, run_curate

    return CurateConfig, run_curate


def _dedup() -> tuple[type, Callable[[Any], dict[str, Any]]]:
    from glomssl.mining.dedup import DedupConfig, run_dedup

    return DedupConfig, run_dedup


#: Set by ``mine`` itself for every folder stage; not allowed in ``stage_options``.
_OWN_KEYS = ("input", "out", "quiet")


def _fingerprint(manifest: Path, options: dict[str, Any]) -> str:
    h = hashlib.sha256(manifest.read_bytes())
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _run_folder_stage(ctx: MineContext, stage: FolderStage) -> StageResult:
    """Run one folder-to-folder stage on the latest manifest, unless it is already up to date."""
    from glomssl.config import build_config
    from glomssl.manifest import write_manifest
    from glomssl.mining.folder_stage import manifest_is_empty

    if ctx.manifest is None or not Path(ctx.manifest).is_file():
        return StageResult(stage.name, skipped=True)
    out = ctx.out / stage.folder
    target = out / "manifest.jsonl"
    options = dict(ctx.cfg.stage_options.get(stage.name, {}))
    key = f"stage:{stage.name}:fingerprint"
    fp = _fingerprint(Path(ctx.manifest), options)
    config_cls, run = stage.load()
    cfg: Any = build_config(
        config_cls,
        None,
        {**options, "input": str(ctx.manifest), "out": str(out), "quiet": ctx.cfg.quiet},
    )
    note = _recut_if_stale(stage, cfg, out)
    if target.is_file() and ctx.store.get_meta(key) == fp:
        return StageResult(stage.name, manifest=target, counts={"up_to_date": 1})
    if manifest_is_empty(Path(ctx.manifest)):  # nothing came in: an empty result, not an error
        out.mkdir(parents=True, exist_ok=True)
        write_manifest(target, [])
        ctx.store.set_meta(key, fp)
        return StageResult(
            stage.name, manifest=target, counts={"input": 0}, skipped=True, note=note
        )
    ctx.progress.set_description(stage.name)
    summary = run(cfg)
    ctx.store.set_meta(key, fp)
    return StageResult(stage.name, manifest=target, counts=_summary_counts(summary), note=note)


def _recut_if_stale(stage: FolderStage, cfg: Any, out: Path) -> str | None:
    """Panels cut with other settings than this run's (a changed option, or a default this version
    of glomssl changed) are moved aside, never mixed with new ones nor deleted: the folder becomes
    ``panels.before-<time>`` and every figure is cut again (later stages follow, as their input
    changed). Returns the sentence for mine's summary, or None when nothing was moved."""
    if stage.name != "separate":
        return None
    from glomssl.mining.separate import cut_with_other_settings

    if cut_with_other_settings(cfg) is None:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = out.with_name(f"{out.name}.before-{stamp}")
    k = 1
    while aside.exists():
        k += 1
        aside = out.with_name(f"{out.name}.before-{stamp}-{k}")
    os.replace(out, aside)
    return (
        f"the panels in {out} had been cut with other separation settings than this run's (a "
        f"changed option or default), so that folder was moved to {aside.name} and every figure "
        "was cut again"
    )


def _summary_counts(summary: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a stage's summary for ``mine``'s: ints stay ints, floats (dedup's
    ``embedding_threshold``, a cosine) stay floats, and a ``reasons`` mapping of counts is kept;
    paths, lists, None and ``seconds`` are left out."""

    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    counts: dict[str, Any] = {}
    for k, v in summary.items():
        if k == "seconds":
            continue
        if number(v):
            counts[k] = v
        elif k == "reasons" and isinstance(v, dict) and all(number(c) for c in v.values()):
            counts[k] = dict(v)
    return counts


StageFn = Callable[[MineContext], StageResult]

#: Every stage of ``glomssl mine``, in the order it runs.
STAGES: list[tuple[str, StageFn]] = [
    ("search", search_stage),
    ("download", download_stage),
    ("separate", FolderStage("separate", "panels", _separate)),
    ("curate", FolderStage("curate", "curated", _curate)),
    ("dedup", FolderStage("dedup", "dedup", _dedup)),
]
STAGE_NAMES: tuple[str, ...] = tuple(name for name, _ in STAGES)


def check_stage_options(stage_options: Any) -> None:
    """Build every later stage's config from ``stage_options`` (placeholders for input and out), so a
    bad option fails before the first request; raise a one-line GlomsslError naming the stage."""
    from glomssl.config import build_config

    if not isinstance(stage_options, dict) or not all(
        isinstance(v, dict) for v in stage_options.values()
    ):
        raise GlomsslError("stage_options must map a stage name to a mapping of its options")
    stages = {name: fn for name, fn in STAGES if isinstance(fn, FolderStage)}
    unknown = sorted(set(stage_options) - set(stages))
    if unknown:
        raise GlomsslError(
            f"stage_options for unknown stage(s) {', '.join(unknown)}; "
            f"stages with options are {', '.join(stages)}"
        )
    for name, options in stage_options.items():
        own = sorted(set(options) & set(_OWN_KEYS))
        if own:
            raise GlomsslError(
                f"stage_options.{name}: {', '.join(own)} is set by `glomssl mine` itself; remove it"
            )
        config_cls, _ = stages[name].load()
        try:
            build_config(config_cls, None, {**options, "input": ".", "out": ".", "quiet": True})
        except GlomsslError as exc:
            raise GlomsslError(f"stage_options.{name}: {exc}") from exc
