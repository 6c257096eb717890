"""``glomssl mine`` as a pipeline of named, resumable stages run in order.

Stages today: ``search`` (Open-i pages -> SQLite records) and ``download`` (records -> checked image
files + ``figures/manifest.jsonl`` and ``figures/failures.jsonl``). Later stages (separate, curate,
dedup) append themselves with :func:`register_stage`; each reads the previous stage's manifest and
returns its own. ``OUT/manifest.jsonl`` is the final stage's manifest with paths rewritten relative to
``OUT``. Every stage resumes from the state it left in ``OUT`` (SQLite, files), so running the same
command after a crash continues where it stopped, and after completion changes nothing.

Adding a stage: write ``def my_stage(ctx: MineContext) -> StageResult`` (read ``ctx.manifest``, write
files under ``ctx.out``, return the manifest you wrote; the manifest must live in a folder that
contains its images, paths relative to it), call ``register_stage("my", my_stage)`` at import time of
your module, and add the module's name to :data:`STAGE_MODULES`; its options come from
``cfg.stage_options["my"]`` (settable from a ``--config`` YAML file).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glomssl import __version__
from glomssl.errors import GlomsslError

DEFAULT_USER_AGENT = (
    f"glomssl/{__version__} (open-source kidney-pathology research miner; "
    "https://github.com/glomssl/glomssl; polite: 1 request/s)"
)


@dataclass
class MineConfig:
    """Options of ``glomssl mine``. Defaults are polite for the real Open-i server."""

    query: str = "glomerular OR glomeruli OR glomerulus"
    out: str = "corpus"
    endpoint: str = "https://openi.nlm.nih.gov"
    image_type: str | None = None
    collection: str | None = None
    license: tuple[str, ...] = ()
    limit: int | None = None
    page_size: int = 30
    rate: float = 1.0  # requests per second over all workers; 0 = no cap (local servers only)
    workers: int = 4
    user_agent: str = DEFAULT_USER_AGENT
    timeout_s: float = 30.0
    max_retries: int = 4
    backoff_s: float = 0.5
    max_bytes: int = 20 << 20
    max_pixels: int = 40_000_000
    stop_after: str | None = None
    skip: tuple[str, ...] = ()
    quiet: bool = False
    stage_options: dict[str, Any] = field(default_factory=dict)  # per later stage, by stage name

    def validate(self) -> None:
        """Raise a one-line GlomsslError for any bad option."""
        from glomssl.mining.openi import COLLECTIONS, IMAGE_TYPES, LICENSES, MAX_PAGE

        if not self.query.strip():
            raise GlomsslError("--query is empty; give search words, e.g. 'glomerulus'")
        if not self.endpoint.startswith(("http://", "https://")):
            raise GlomsslError(f"--endpoint {self.endpoint!r} must start with http:// or https://")
        if self.image_type is not None and self.image_type not in IMAGE_TYPES:
            known = ", ".join(f"{k} ({v})" for k, v in IMAGE_TYPES.items())
            raise GlomsslError(
                f"--image-type {self.image_type!r} is not an Open-i type; use {known}"
            )
        if self.collection is not None and self.collection not in COLLECTIONS:
            raise GlomsslError(
                f"--collection {self.collection!r} unknown; use {', '.join(COLLECTIONS)}"
            )
        bad = [c for c in self.license if c not in LICENSES]
        if bad:
            raise GlomsslError(
                f"--license {','.join(bad)} unknown; use some of {','.join(LICENSES)}"
            )
        if self.rate < 0:
            raise GlomsslError(
                f"--rate {self.rate} is negative; give requests per second (0 = no cap)"
            )
        if self.limit is not None and self.limit < 1:
            raise GlomsslError(f"--limit {self.limit} must be at least 1")
        if not 1 <= self.page_size <= MAX_PAGE:
            raise GlomsslError(f"--page-size {self.page_size} must be between 1 and {MAX_PAGE}")
        if not 1 <= self.workers <= 64:
            raise GlomsslError(f"--workers {self.workers} must be between 1 and 64")
        for name in ("timeout_s", "backoff_s"):
            if getattr(self, name) <= 0:
                raise GlomsslError(f"{name} must be positive")
        if self.max_retries < 0 or self.max_bytes < 1 or self.max_pixels < 1:
            raise GlomsslError("max_retries must be >= 0, max_bytes and max_pixels >= 1")
        names = stage_names()
        if not isinstance(self.stage_options, dict) or not all(
            isinstance(v, dict) for v in self.stage_options.values()
        ):
            raise GlomsslError("stage_options must map a stage name to a mapping of its options")
        unknown = sorted(set(self.stage_options) - set(names))
        if unknown:
            raise GlomsslError(f"stage_options for unknown stage(s) {', '.join(unknown)}")
        for s in ((self.stop_after,) if self.stop_after else ()) + tuple(self.skip):
            if s not in names:
                raise GlomsslError(f"unknown stage {s!r}; stages are {', '.join(names)}")

    def search_key(self) -> dict[str, Any]:
        """The options that define WHICH records a folder holds (a rerun must not change them)."""
        return {
            "query": self.query,
            "endpoint": self.endpoint.rstrip("/"),
            "image_type": self.image_type,
            "collection": self.collection,
            "license": list(self.license),
        }


@dataclass
class StageResult:
    name: str
    manifest: Path | None = None
    counts: dict[str, int] = field(default_factory=dict)
    skipped: bool = False


@dataclass
class MineContext:
    """What stages share: the config, the output folder, the open state and the HTTP clients."""

    cfg: MineConfig
    out: Path
    store: Any  # MineStore
    client: Any  # OpenIClient
    progress: Any  # tqdm bar (disabled when quiet or not a terminal)
    manifest: Path | None = None  # the latest stage's output manifest


StageFn = Callable[[MineContext], StageResult]
_STAGES: list[tuple[str, StageFn]] = []


def register_stage(name: str, fn: StageFn, after: str | None = None) -> None:
    """Add (or replace) a stage; appended at the end unless ``after`` names an existing stage."""
    for i, (n, _) in enumerate(_STAGES):
        if n == name:
            _STAGES[i] = (name, fn)
            return
    if after is None:
        _STAGES.append((name, fn))
    else:
        idx = stage_names().index(after)
        _STAGES.insert(idx + 1, (name, fn))


#: Modules that register further stages when imported (e.g. "glomssl.mining.separate_stage").
STAGE_MODULES: list[str] = ["glomssl.mining.stages"]


def load_stage_modules() -> None:
    """Import :data:`STAGE_MODULES` so their stages register (lazily: they may be heavy)."""
    import importlib

    for name in STAGE_MODULES:
        importlib.import_module(name)


def stage_names() -> list[str]:
    load_stage_modules()
    return [n for n, _ in _STAGES]


def search_stage(ctx: MineContext) -> StageResult:
    """Fetch search pages from the stored cursor on; each page is committed with the cursor.

    Resumes at ``search_next_m``; ends at ``total`` or when ``--limit`` figures are known.
    """
    cfg, store = ctx.cfg, ctx.store
    start = int(store.get_meta("search_next_m", "1"))
    total = store.get_meta("search_total")
    new = dup = pages = bad = 0
    if total is not None and start > int(total):
        return StageResult("search", counts={"new": 0, "duplicates": 0, "requests": 0})
    if cfg.limit is not None and store.count() >= cfg.limit:
        return StageResult("search", counts={"new": 0, "duplicates": 0, "requests": 0})
    ctx.progress.set_description("search")
    pager = ctx.client.iter_pages(
        cfg.query, start, cfg.page_size, cfg.image_type, cfg.collection, cfg.license
    )
    for page in pager:
        pages += 1
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
    counts = {"new": new, "duplicates": dup, "requests": pages, "malformed": bad}
    return StageResult("search", counts=counts)


def download_stage(ctx: MineContext) -> StageResult:
    """Download pending (and last run's transient-failed) figures with a bounded worker pool,
    store each outcome in one transaction, then export the manifests from SQLite."""
    from glomssl.mining.download import download_many

    cfg, store = ctx.cfg, ctx.store
    figures = ctx.out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for stale in figures.glob(".*.tmp"):  # temp files of a killed run; never counted
        stale.unlink(missing_ok=True)
    jobs = store.todo()
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


register_stage("search", search_stage)
register_stage("download", download_stage)


@dataclass
class MineSummary:
    """The result of :func:`run_mine`."""

    out: Path
    stages: list[StageResult]
    found: int
    done: int
    failed_permanent: int
    failed_transient: int
    pending: int
    downloaded_now: int
    duplicates: int
    malformed: int
    requests: int
    seconds: float
    manifest: Path | None

    def paragraph(self) -> str:
        ran = ", ".join(s.name for s in self.stages if not s.skipped) or "none"
        text = (
            f"Mined {self.out}: {self.found} figures found by the search, {self.done} downloaded and "
            f"checked ({self.downloaded_now} new in this run), {self.failed_permanent} failed for good "
            f"and {self.failed_transient} failed transiently (run again to retry them)"
        )
        if self.pending:
            text += f", {self.pending} not yet fetched"
        if self.duplicates:
            text += f"; {self.duplicates} duplicate listings were mined once"
        if self.malformed:
            text += f"; {self.malformed} malformed records (no uid, image id or imgLarge) skipped"
        text += f". Stages run: {ran}; {self.requests} HTTP requests in {self.seconds:.1f} s."
        if self.manifest is not None:
            text += f" Manifest: {self.manifest}."
        return text


def _make_progress(cfg: MineConfig) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=0,
        unit="fig",
        desc="mine",
        disable=True if cfg.quiet else None,  # None: only on a terminal
        file=sys.stderr,
        dynamic_ncols=True,
    )


def finalize_manifest(ctx: MineContext) -> Path | None:
    """Copy the last stage's manifest to OUT/manifest.jsonl with paths relative to OUT."""
    from glomssl.manifest import read_manifest, relpath, resolve, write_manifest

    if ctx.manifest is None:
        return None
    rows = []
    for row in read_manifest(ctx.manifest):
        new = dict(row)
        new["path"] = relpath(resolve(ctx.manifest, row), ctx.out)
        rows.append(new)
    target = ctx.out / "manifest.jsonl"
    write_manifest(target, rows)
    return target


@contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold an OS lock on ``OUT/.mine.lock`` so two miners never share a folder (released by the
    OS even on ``kill -9``)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no guard
        yield
        return
    with open(out / ".mine.lock", "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise GlomsslError(
                f"another `glomssl mine` is working in {out}; wait for it or use another --out"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def run_mine(cfg: MineConfig) -> MineSummary:
    """Run the mining stages in order (resumable). Returns a summary; raises GlomsslError."""
    from glomssl.config import save_config
    from glomssl.fsutil import ensure_writable_dir
    from glomssl.mining.download import HttpClient, RetryPolicy
    from glomssl.mining.openi import OpenIClient
    from glomssl.mining.store import MineStore

    cfg.validate()
    t0 = time.monotonic()
    out = ensure_writable_dir(cfg.out, "--out")
    save_config(dataclasses.replace(cfg, quiet=False), out / "config.yaml")
    http = HttpClient(
        cfg.user_agent,
        rate=cfg.rate,
        timeout_s=cfg.timeout_s,
        retry=RetryPolicy(max_retries=cfg.max_retries, base_s=cfg.backoff_s),
    )
    names = stage_names()
    last = names.index(cfg.stop_after) if cfg.stop_after else len(names) - 1
    results: list[StageResult] = []
    with _exclusive(out), MineStore(out / "state.sqlite") as store:
        store.bind_search(cfg.search_key())
        attempts0 = store.n_attempts()
        progress = _make_progress(cfg)
        ctx = MineContext(cfg, out, store, OpenIClient(cfg.endpoint, http), progress)
        try:
            for name, fn in _STAGES[: last + 1]:
                if name in cfg.skip:
                    results.append(StageResult(name, skipped=True))
                    continue
                res = fn(ctx)
                results.append(res)
                if res.manifest is not None:
                    ctx.manifest = res.manifest
        finally:
            progress.close()
        manifest = finalize_manifest(ctx)
        counts = store.counts()
        search_counts = next((r.counts for r in results if r.name == "search"), {})
        dl_counts = next((r.counts for r in results if r.name == "download"), {})
        return MineSummary(
            out=out,
            stages=results,
            found=store.count(),
            done=counts["done"],
            failed_permanent=counts["failed_permanent"],
            failed_transient=counts["failed_transient"],
            pending=counts["pending"],
            downloaded_now=dl_counts.get("downloaded", 0),
            duplicates=search_counts.get("duplicates", 0),
            malformed=search_counts.get("malformed", 0),
            requests=search_counts.get("requests", 0) + store.n_attempts() - attempts0,
            seconds=time.monotonic() - t0,
            manifest=manifest,
        )
