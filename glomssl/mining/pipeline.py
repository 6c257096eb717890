"""``glomssl mine``: run the mining stages in order, resumably, into one output folder.

The stages are the plain list :data:`glomssl.mining.stages.STAGES` (search, download, separate,
curate, dedup). ``OUT/manifest.jsonl`` is the last stage's manifest with paths rewritten relative to
``OUT``. Every stage resumes from the state it left in ``OUT`` (SQLite, files), so running the same
command after a crash continues where it stopped, and after completion changes nothing. An OS lock on
``OUT/.mine.lock`` keeps two miners out of one folder; nothing in ``OUT`` (not even
``config.yaml``) is written before the lock is held. Every option, including every later stage's
``stage_options``, is checked before the first request. Finding nothing, or curating nothing, is a
result: empty manifests are written, the later stages are skipped, and the summary says so.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glomssl import __version__
from glomssl.errors import GlomsslError
from glomssl.mining import stages
from glomssl.mining.stages import MineContext, StageResult

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
    endpoint_id: str | None = None  # the server's identity recorded in OUT [the endpoint URL]

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
        names = [name for name, _ in stages.STAGES]
        for st in ((self.stop_after,) if self.stop_after else ()) + tuple(self.skip):
            if st not in names:
                raise GlomsslError(f"unknown stage {st!r}; stages are {', '.join(names)}")
        stages.check_stage_options(self.stage_options)

    def search_key(self) -> dict[str, Any]:
        """The options that define WHICH records a folder holds (a rerun must not change them)."""
        return {
            "query": self.query,
            "endpoint": self.endpoint_id or self.endpoint.rstrip("/"),
            "image_type": self.image_type,
            "collection": self.collection,
            "license": list(self.license),
        }


@dataclass
class MineSummary:
    """The result of :func:`run_mine`."""

    out: Path
    query: str
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
    empty: str | None = None  # why the corpus is empty ("0 figures found for ..."), else None

    def paragraph(self) -> str:
        """The one-line summary ``glomssl mine`` prints."""
        if self.found == 0:
            return (
                f"0 figures found for {self.query!r}; wrote empty manifests in {self.out} "
                f"({self.requests} HTTP requests in {self.seconds:.1f} s)."
            )
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
        for s in self.stages:
            if s.note:
                text += f" {s.note[0].upper()}{s.note[1:]}."
        if self.empty:
            text += f" {self.empty[0].upper()}{self.empty[1:]}; the later stages were skipped."
        if self.manifest is not None:
            text += f" Manifest: {self.manifest}."
        return text

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json`` (paths as strings, stages by name)."""
        d = dataclasses.asdict(self)
        d["out"] = str(self.out)
        d["manifest"] = None if self.manifest is None else str(self.manifest)
        d["stages"] = [
            {"name": s.name, "skipped": s.skipped, "counts": s.counts} for s in self.stages
        ]
        d["seconds"] = round(self.seconds, 2)
        return d


def _n_rows(path: Path | None) -> int:
    if path is None or not path.is_file():
        return 0
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def why_empty(out: Path, results: list[StageResult]) -> str | None:
    """The first stage that turned rows into none, as a sentence (None when nothing emptied)."""
    words = {
        "download": "downloaded {0} of {1} figures (reasons in {2})",
        "separate": "separation found {0} panels in {1} figures",
        "curate": "curation kept {0} of {1} (reasons in {2})",
        "dedup": "de-duplication kept {0} of {1} (reasons in {2})",
    }
    side = {"download": "failures.jsonl", "curate": "rejected.jsonl", "dedup": "dropped.jsonl"}
    prev: Path | None = None
    for res in results:
        if res.manifest is None:
            continue
        n_in, n_out = _n_rows(prev), _n_rows(res.manifest)
        if res.name in words and n_out == 0 and (prev is not None and n_in > 0):
            listing = res.manifest.parent / side.get(res.name, "")
            return words[res.name].format(0, n_in, listing)
        prev = res.manifest
    return None


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


def _refuse_foreign_folder(out: Path) -> None:
    """A ``manifest.jsonl`` without mine's ``state.sqlite`` beside it is another command's output
    (``separate``, ``curate`` ...), which ``mine`` would overwrite with its own."""
    if (out / "manifest.jsonl").is_file() and not (out / "state.sqlite").is_file():
        raise GlomsslError(
            f"--out {out} holds another command's manifest.jsonl, which `glomssl mine` did not "
            "write; choose a new or empty folder"
        )


def run_mine(cfg: MineConfig) -> MineSummary:
    """Run the mining stages in order (resumable). Returns a summary; raises GlomsslError."""
    from glomssl.config import save_config
    from glomssl.fsutil import ensure_writable_dir, folder_lock
    from glomssl.mining.download import HttpClient, RetryPolicy
    from glomssl.mining.openi import OpenIClient
    from glomssl.mining.store import MineStore

    cfg.validate()
    t0 = time.monotonic()
    _refuse_foreign_folder(Path(cfg.out))
    out = ensure_writable_dir(cfg.out, "--out")
    http = HttpClient(
        cfg.user_agent,
        rate=cfg.rate,
        timeout_s=cfg.timeout_s,
        retry=RetryPolicy(max_retries=cfg.max_retries, base_s=cfg.backoff_s),
    )
    plan = list(stages.STAGES)
    names = [name for name, _ in plan]
    last = names.index(cfg.stop_after) if cfg.stop_after else len(names) - 1
    results: list[StageResult] = []
    with folder_lock(out, "mine"), MineStore(out / "state.sqlite") as store:
        store.bind_search(cfg.search_key())
        save_config(dataclasses.replace(cfg, quiet=False), out / "config.yaml")
        attempts0 = store.n_attempts()
        progress = _make_progress(cfg)
        ctx = MineContext(cfg, out, store, OpenIClient(cfg.endpoint, http), progress)
        try:
            for name, fn in plan[: last + 1]:
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
            query=cfg.query,
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
            empty=why_empty(out, results),
        )
