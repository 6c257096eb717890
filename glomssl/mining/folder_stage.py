"""What the folder-to-folder stages (``curate``, ``dedup``) share: input rows, output placement, cache.

* :func:`read_input` resolves ``--input`` (FOLDER | MANIFEST) through the one source resolver
  (:func:`glomssl.data.sources.resolve_sources`): a file listed twice is kept once, an empty manifest
  is an empty result (not an error), and a folder's images under ``--out`` (the stage's own output,
  when it lies inside the input folder) are left out.
* :func:`file_hash` hashes the bytes: a manifest's ``sha256`` is never trusted for grouping or caching
  (a stale hash would make a different image look like a duplicate, or reuse its measurements).
* :func:`place_file` / :func:`output_row`: an output manifest only points inside its own folder;
  files from elsewhere (symlinks followed) are hard-linked or copied into ``OUT/images``.
* :class:`FeatureCache`: per-image measurements keyed by content hash, so an interrupted run resumes.
* unreadable inputs are skipped and listed in ``OUT/skipped.jsonl`` (:func:`write_skip_list`), the
  same policy as every other command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from glomssl.errors import GlomsslError

Row = dict[str, Any]


def manifest_is_empty(path: Path) -> bool:
    """True when a manifest file holds no row (only blank lines); reads up to the first row."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        return all(not line.strip() for line in fh)


def _count_rows(path: Path) -> int:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return sum(1 for line in fh if line.strip())


def read_input(
    source: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, command: str = ""
) -> tuple[list[tuple[Path, Row]], Path, int]:
    """FOLDER or MANIFEST -> ((absolute image path, row) pairs, source folder, repeated rows).

    Rows of a manifest are returned as written (validated); a folder's rows hold ``path`` only. A file
    named by several rows is kept once (the first row wins); their number is the third value. A
    folder's images under ``out`` (the command's own output folder, inside the input) are left out;
    an ``out`` that is the input folder itself is refused (nothing is written yet).
    """
    from glomssl.data.sources import resolve_sources
    from glomssl.fsutil import refuse_out_is_input

    refuse_out_is_input(out, [source], command)
    src = Path(source)
    if src.is_file() and manifest_is_empty(src):
        return [], src.resolve().parent, 0
    sources = resolve_sources(
        [src],
        what="--input",
        check=False,
        allow_slides=False,
        exclude=[] if out is None else [out],
        command=command,
    )
    pairs = [(Path(p), r) for p, r in sources.items]
    if src.is_file():
        return pairs, src.resolve().parent, _count_rows(src) - len(pairs)
    return pairs, src.resolve(), 0


def file_hash(image: Path, row: Row) -> tuple[str, bool]:
    """(sha256 of the file's bytes, True when the row claimed another sha256). Raises GlomsslError."""
    from glomssl.fsutil import sha256_file

    sha = sha256_file(image)
    claimed = row.get("sha256")
    return sha, isinstance(claimed, str) and claimed != sha


def header_size(image: Path) -> tuple[int, int]:
    """(width, height) from the header, after the shared readability check (bombs included)."""
    from PIL import Image

    from glomssl.data.images import image_ok

    why = image_ok(image)
    if why is not None:
        raise GlomsslError(f"{image} is not a readable image ({why}); remove or replace it")
    with Image.open(image) as im:
        return int(im.width), int(im.height)


def place_file(file: Path, rel: str, out_dir: Path) -> str:
    """Path of ``file`` relative to ``out_dir`` for an output manifest.

    Manifests may only point inside their own folder, so a file outside ``out_dir`` is hard-linked
    (copied where links are impossible, atomically) to ``out_dir/images/<rel>``, ``rel`` being its
    path relative to the input. A symlink is followed: its target is what gets linked, and a link
    inside ``out_dir`` whose target lies outside counts as outside (``out_dir`` must be resolved).
    An existing identical target is left alone, so reruns are no-ops.
    """
    import filecmp
    import shutil

    def relpath(p: Path) -> str:  # both sides absolute already; avoids a resolve() per row
        return Path(os.path.relpath(p, out_dir)).as_posix()

    file = Path(os.path.abspath(file))
    if file.is_relative_to(out_dir) and (
        not os.path.islink(file) or Path(os.path.realpath(file)).is_relative_to(out_dir)
    ):
        return relpath(file)
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts or not parts:  # never write outside OUT/images
        from glomssl.fsutil import sha256_bytes

        rel = f"{sha256_bytes(rel.encode())[:12]}_{file.name}"
    target = out_dir / "images" / rel
    if (
        target.is_file()
        and not target.is_symlink()
        and (target.samefile(file) or filecmp.cmp(target, file, shallow=False))
    ):
        return relpath(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    # Linux link() does not follow a symlink (it would hard-link the link itself): name the target
    src = Path(os.path.realpath(file)) if os.path.islink(file) else file
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, target)
    return relpath(target)


def output_row(
    row: Row,
    image: Path,
    out_dir: Path,
    src_dir: Path,
    sha: str | None = None,
    size: tuple[int, int] | None = None,
) -> Row:
    """Copy of ``row`` for OUT/manifest.jsonl: ``path`` (and ``mask``) placed inside ``out_dir``;
    ``sha256`` set to the bytes' own hash and ``width``/``height`` filled in when given."""
    new = dict(row)
    new["path"] = place_file(image, str(row["path"]), out_dir)
    if sha is not None:
        new["sha256"] = sha
    if size is not None and not (isinstance(row.get("width"), int) and "height" in row):
        new["width"], new["height"] = int(size[0]), int(size[1])
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


def write_skip_list(out_dir: Path, skipped: list[dict[str, str]]) -> None:
    """``OUT/skipped.jsonl`` when anything was skipped; a stale one from an earlier run is removed."""
    from glomssl.data.sources import write_skipped

    if skipped:
        write_skipped(out_dir, skipped)
    else:
        (out_dir / "skipped.jsonl").unlink(missing_ok=True)


def progress_iter(items: list[Any], quiet: bool, desc: str) -> Any:
    """``items`` wrapped in a progress bar on a terminal (plain ``items`` otherwise or when quiet)."""
    import sys

    if quiet or not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img")


class FeatureCache:
    """Per-image measurements keyed by (kind, sha256 of the bytes) in a SQLite file inside OUT.

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
