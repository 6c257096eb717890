"""The miner's crash-safe state: one SQLite database (WAL) in the output folder.

Why SQLite: every change (a search page's records plus the search cursor, a figure's outcome plus its
HTTP attempts) is one transaction, so ``kill -9`` at any instant leaves either the state before or the
state after, never half of it. The manifests are *exported* from this database, ordered by the order
in which records were first found, with ``retrieved_at`` stored at download time; exporting twice
therefore writes byte-identical files.

Tables:
  ``meta``      key/value: the search parameters this folder belongs to, the search cursor and total.
  ``records``   one row per figure, keyed by (uid, image_id); ``seq`` is the discovery order;
                ``status`` is pending | done | failed_transient | failed_permanent.
  ``attempts``  every HTTP attempt made for a figure (time, status, outcome, detail).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from glomssl.errors import GlomsslError
from glomssl.manifest import write_jsonl, write_manifest
from glomssl.mining.download import DownloadResult
from glomssl.mining.openi import Figure

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL,
    image_id TEXT NOT NULL,
    img_large TEXT NOT NULL,
    url TEXT,
    pmcid TEXT,
    caption TEXT,
    license TEXT,
    meta_json TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    filename TEXT,
    sha256 TEXT,
    width INTEGER,
    height INTEGER,
    retrieved_at TEXT,
    UNIQUE (uid, image_id)
);
CREATE INDEX IF NOT EXISTS records_status ON records (status);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL,
    image_id TEXT NOT NULL,
    started_at REAL NOT NULL,
    http_status INTEGER,
    outcome TEXT NOT NULL,
    detail TEXT
);
"""

STATUSES = ("pending", "done", "failed_transient", "failed_permanent")


class MineStore:
    """SQLite state of one ``--out`` folder. Use from one thread (the pipeline's main thread)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise GlomsslError(
                f"{self.path} is not a usable miner state database ({exc}); "
                "use a fresh --out folder or remove that file"
            ) from exc

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> MineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions -------------------------------------------------------------------------
    def _tx(self) -> sqlite3.Connection:
        """``with store._tx() as db:`` runs one BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""
        return _Tx(self.db)  # type: ignore[return-value]

    # -- meta ---------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def bind_search(self, search_key: dict[str, Any]) -> None:
        """Tie this folder to one search; a different search in the same folder is an error."""
        text = json.dumps(search_key, sort_keys=True)
        old = self.get_meta("search_key")
        if old is None:
            self.set_meta("search_key", text)
        elif old != text:
            raise GlomsslError(
                f"{self.path.parent} was mined with other search options ({old}); "
                "use a new --out folder for a new search"
            )

    # -- search -------------------------------------------------------------------------------
    def add_page(
        self,
        figures: list[Figure],
        urls: list[str | None],
        first_index: int,
        next_m: int,
        total: int,
        limit: int | None,
    ) -> tuple[int, int]:
        """Insert a page's figures and advance the cursor in ONE transaction.

        Returns (new figures, duplicates). A figure already known (a duplicate listing) is ignored;
        with ``limit`` no more than ``limit`` figures are ever kept, and the cursor then points at
        the first record not taken (``first_index`` is the page's ``min``), so a later run with a
        larger ``--limit`` continues exactly there.
        """
        new = dup = 0
        with self._tx() as db:
            have = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
            for i, (fig, url) in enumerate(zip(figures, urls, strict=True)):
                if limit is not None and have >= limit:
                    next_m = first_index + i
                    break
                cur = db.execute(
                    "INSERT OR IGNORE INTO records (uid, image_id, img_large, url, pmcid, caption,"
                    " license, meta_json, status, reason) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        fig.uid,
                        fig.image_id,
                        fig.img_large,
                        url,
                        fig.pmcid,
                        fig.caption,
                        fig.license,
                        json.dumps(fig.metadata(), sort_keys=True),
                        "pending" if url else "failed_permanent",
                        None if url else "image path is not on the --endpoint server",
                    ),
                )
                if cur.rowcount:
                    new += 1
                    have += 1
                else:
                    dup += 1
            for k, v in (("search_next_m", next_m), ("search_total", total)):
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, str(v)))
        return new, dup

    def count(self, status: str | None = None) -> int:
        if status is None:
            return int(self.db.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        q = "SELECT COUNT(*) FROM records WHERE status=?"
        return int(self.db.execute(q, (status,)).fetchone()[0])

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self.db.execute("SELECT status, COUNT(*) FROM records GROUP BY status"):
            out[str(status)] = int(n)
        return out

    # -- download -----------------------------------------------------------------------------
    def todo(self) -> list[tuple[tuple[str, str], str, str]]:
        """(key, img_large, url at discovery) of figures still to fetch: pending ones and last run's
        transient failures."""
        rows = self.db.execute(
            "SELECT uid, image_id, img_large, url FROM records"
            " WHERE status IN ('pending', 'failed_transient') ORDER BY seq"
        ).fetchall()
        return [((str(u), str(i)), str(img), str(url)) for u, i, img, url in rows]

    def record_result(self, res: DownloadResult) -> None:
        """Store one figure's outcome and all its attempts in one transaction."""
        uid, image_id = res.key
        with self._tx() as db:
            db.executemany(
                "INSERT INTO attempts (uid, image_id, started_at, http_status, outcome, detail)"
                " VALUES (?,?,?,?,?,?)",
                [
                    (uid, image_id, a.started_at, a.status, a.outcome, a.detail)
                    for a in res.attempts
                ],
            )
            db.execute(
                "UPDATE records SET status=?, reason=?, filename=?, sha256=?, width=?, height=?,"
                " retrieved_at=? WHERE uid=? AND image_id=?",
                (
                    res.status,
                    res.reason or None,
                    res.filename,
                    res.sha256,
                    res.width,
                    res.height,
                    res.retrieved_at,
                    uid,
                    image_id,
                ),
            )

    def n_attempts(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0])

    # -- export -------------------------------------------------------------------------------
    def _rows(self, where: str) -> Iterator[sqlite3.Row]:
        self.db.row_factory = sqlite3.Row
        try:
            yield from self.db.execute(f"SELECT * FROM records WHERE {where} ORDER BY seq")
        finally:
            self.db.row_factory = None

    def manifest_rows(self, query: str, prefix: str = "") -> list[dict[str, Any]]:
        """One manifest row per good figure, ``path`` = ``prefix + filename``."""
        rows = []
        for r in self._rows("status='done'"):
            row: dict[str, Any] = {
                "path": prefix + r["filename"],
                "sha256": r["sha256"],
                "width": r["width"],
                "height": r["height"],
                "uid": r["uid"],
                "image_id": r["image_id"],
                "pmcid": r["pmcid"],
                "url": r["url"],
                "caption": r["caption"],
                "license": r["license"] or None,
                "source": "openi",
                "query": query,
                "retrieved_at": r["retrieved_at"],
            }
            row.update(json.loads(r["meta_json"]))
            rows.append(row)
        return rows

    def failure_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "uid": r["uid"],
                "image_id": r["image_id"],
                "url": r["url"] or r["img_large"],
                "reason": r["reason"],
                "permanent": r["status"] == "failed_permanent",
            }
            for r in self._rows("status IN ('failed_transient', 'failed_permanent')")
        ]

    def export(self, figures_dir: Path, query: str) -> tuple[int, int]:
        """Write figures/manifest.jsonl and figures/failures.jsonl (atomically, deterministic)."""
        n_ok = write_manifest(figures_dir / "manifest.jsonl", self.manifest_rows(query))
        n_bad = write_jsonl(figures_dir / "failures.jsonl", self.failure_rows())
        return n_ok, n_bad


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT/ROLLBACK around a block (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
