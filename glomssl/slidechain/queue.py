"""The resumable work queue of a ``glomssl wsi`` run: one SQLite file in the output folder.

Tables:

- ``meta``: the run's *fingerprint* (every option that changes results: detector weights hash,
  resolution, tiling, thresholds, classifier and segmenter). A folder holding another run's results is
  refused instead of being mixed with this one.
- ``slides``: one row per slide (path, output name, status ``pending | running | done | skipped``,
  the one-line reason of a skip, the result summary, the process that holds it).
- ``tiles``: the detections of every finished tile, committed one tile at a time, so a crash or a
  ``kill -9`` loses at most the tile in progress and a rerun skips finished slides and tiles.

Several worker processes (``--devices N``) share one queue file: a slide is claimed inside an
``IMMEDIATE`` transaction, and a ``running`` slide whose process is gone is claimed again. Nodes of a
cluster never share a file: each ``--shard i/n`` has its own.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glomssl.errors import GlomsslError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS slides (
    id INTEGER PRIMARY KEY,
    path TEXT UNIQUE NOT NULL,
    name TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    result TEXT,
    owner TEXT,
    updated REAL
);
CREATE TABLE IF NOT EXISTS tiles (
    slide INTEGER NOT NULL,
    tile INTEGER NOT NULL,
    rows TEXT NOT NULL,
    PRIMARY KEY (slide, tile)
);
"""


@dataclass
class SlideJob:
    id: int
    path: str
    name: str


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(owner: str | None) -> bool:
    """Whether the process named by ``owner`` (host:pid) still runs (other hosts: assume it does)."""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


class RunQueue:
    """The slides and finished tiles of one run (or shard), in ``path`` (SQLite)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise GlomsslError(
                f"{self.path} is not a glomssl run queue ({exc}); use a new --out folder"
            ) from exc

    def close(self) -> None:
        self.db.close()

    # -- fingerprint -------------------------------------------------------------------------------
    def check_fingerprint(self, fingerprint: dict[str, Any], out: str) -> None:
        """Store the fingerprint on first use; refuse a different one later (another run's folder).

        A run in which nothing succeeded (no slide done, none being worked on, no finished tiles of a
        slide still to do; e.g. every slide was skipped for lack of a resolution) holds no results
        to protect: it takes the new options, its skipped slides' stale tiles and crops are dropped.
        """
        text = json.dumps(fingerprint, sort_keys=True)
        row = self.db.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
        if row is None:
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('fingerprint', ?)", (text,))
            return
        old = json.loads(row[0])
        if old == fingerprint:
            return
        if self._restart(text, out):
            return
        diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        raise GlomsslError(
            f"--out {out} holds another run's results (different {', '.join(diff)}); pass a "
            "new --out folder, or the same options to resume that run"
        )

    def _restart(self, text: str, out: str) -> bool:
        """Give a run in which nothing succeeded the fingerprint ``text``; False if something did."""
        import shutil

        self.db.execute("BEGIN IMMEDIATE")
        try:
            rows = self.db.execute("SELECT id, name, status, owner FROM slides").fetchall()
            with_tiles = {int(r[0]) for r in self.db.execute("SELECT DISTINCT slide FROM tiles")}
            for sid, _, status, owner in rows:
                if (
                    status == "done"
                    or (status == "running" and _alive(owner))
                    or (status != "skipped" and sid in with_tiles)
                ):
                    self.db.execute("ROLLBACK")
                    return False
            self.db.execute("DELETE FROM tiles")
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (text,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        for _, name, status, _ in rows:
            if status == "skipped":  # crops cut with the old options must not be reused
                shutil.rmtree(Path(out) / name / "crops", ignore_errors=True)
        return True

    # -- slides ------------------------------------------------------------------------------------
    def add_slides(self, items: list[tuple[str, str]]) -> None:
        """Queue (path, output name) pairs; slides already queued keep their state."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for path, name in items:
                self.db.execute(
                    "INSERT OR IGNORE INTO slides (path, name, updated) VALUES (?, ?, ?)",
                    (path, name, time.time()),
                )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def claim(self) -> SlideJob | None:
        """The next pending slide (or one whose process died), marked as ours; None when none."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            job = None
            for sid, path, name, status, owner in self.db.execute(
                "SELECT id, path, name, status, owner FROM slides "
                "WHERE status IN ('pending', 'running') ORDER BY id"
            ).fetchall():
                if status == "running" and _alive(owner):
                    continue
                self.db.execute(
                    "UPDATE slides SET status='running', owner=?, updated=? WHERE id=?",
                    (_owner(), time.time(), sid),
                )
                job = SlideJob(sid, path, name)
                break
            self.db.execute("COMMIT")
            return job
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def finish(self, job: SlideJob, result: dict[str, Any]) -> None:
        self.db.execute(
            "UPDATE slides SET status='done', result=?, reason=NULL, updated=? WHERE id=?",
            (json.dumps(result, default=str), time.time(), job.id),
        )

    def skip(self, job: SlideJob, reason: str) -> None:
        """Record why a slide cannot be processed (one line); its tiles are kept for a later retry."""
        self.db.execute(
            "UPDATE slides SET status='skipped', reason=?, updated=? WHERE id=?",
            (reason.splitlines()[0] if reason else "unknown", time.time(), job.id),
        )

    def release(self, job: SlideJob) -> None:
        """Give a claimed slide back (interrupted): the next run continues it."""
        self.db.execute(
            "UPDATE slides SET status='pending', owner=NULL, updated=? WHERE id=? AND status='running'",
            (time.time(), job.id),
        )

    def retry_skipped(self, names: set[str]) -> None:
        """Queue again the skipped slides among ``names`` (the user passed them again)."""
        for name in names:
            self.db.execute(
                "UPDATE slides SET status='pending', reason=NULL WHERE name=? AND status='skipped'",
                (name,),
            )

    def slides(self) -> list[dict[str, Any]]:
        out = []
        for path, name, status, reason, result in self.db.execute(
            "SELECT path, name, status, reason, result FROM slides ORDER BY id"
        ):
            out.append(
                {
                    "slide": path,
                    "name": name,
                    "status": status,
                    "reason": reason,
                    "result": json.loads(result) if result else None,
                }
            )
        return out

    # -- tiles -------------------------------------------------------------------------------------
    def done_tiles(self, job: SlideJob) -> dict[int, list[list[float]]]:
        return {
            int(t): json.loads(rows)
            for t, rows in self.db.execute("SELECT tile, rows FROM tiles WHERE slide=?", (job.id,))
        }

    def save_tile(self, job: SlideJob, tile: int, rows: list[list[float]]) -> None:
        """Commit one finished tile's detections (autocommit: durable when this returns).

        Values are stored exactly (JSON floats round-trip), so a resumed slide gives the same
        output as one never interrupted.
        """
        self.db.execute(
            "INSERT OR REPLACE INTO tiles VALUES (?, ?, ?)",
            (job.id, int(tile), json.dumps([[float(v) for v in r] for r in rows])),
        )
