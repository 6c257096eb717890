"""Manifests: the one data contract between glomssl stages.

A manifest is a JSON Lines file, one image per line. ``path`` is relative to the manifest's folder,
``sha256``/``width``/``height`` describe the file, and optional fields carry labels and provenance
(see ``glomssl/schemas/manifest_row.schema.json``). Reading validates every row and reports the first
bad one by line number; writing is atomic.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from glomssl.errors import GlomsslError
from glomssl.fsutil import atomic_open, sha256_file

SCHEMA_PATH = Path(__file__).parent / "schemas" / "manifest_row.schema.json"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif")

Row = dict[str, Any]


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


_STR_OR_NULL = (str, type(None))
_FAST_TYPES: dict[str, tuple[type, ...]] = {
    "mask": _STR_OR_NULL,
    "task": _STR_OR_NULL,
    "species": _STR_OR_NULL,
    "stain": _STR_OR_NULL,
    "slide": _STR_OR_NULL,
    "patient": _STR_OR_NULL,
    "license": _STR_OR_NULL,
    "parent": _STR_OR_NULL,
    "label": (str, int, type(None)),
    "source": (str, dict, type(None)),
}
_SPLITS = ("train", "val", "test", None)
_HEX = frozenset("0123456789abcdef")


def _fast_ok(row: dict[str, Any]) -> bool:
    """Cheap check of the common case; any doubt falls through to the full JSON Schema check.

    jsonschema costs about 0.3 ms a row, which adds minutes to million-row manifests, so rows that
    plainly follow the schema are accepted here and only suspicious rows pay for the full check.
    """
    p, sha, w, h = row.get("path"), row.get("sha256"), row.get("width"), row.get("height")
    if not (isinstance(p, str) and p and isinstance(sha, str) and len(sha) == 64):
        return False
    if not _HEX.issuperset(sha):
        return False
    for v in (w, h):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            return False
    for key, types in _FAST_TYPES.items():
        if key in row and not isinstance(row[key], types):
            return False
    if row.get("split") not in _SPLITS or (isinstance(row.get("label"), bool)):
        return False
    bbox = row.get("bbox")
    if bbox is not None and not (
        isinstance(bbox, list)
        and len(bbox) == 4
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in bbox)
    ):
        return False
    return True


def validate_row(row: Any, where: str = "row") -> None:
    """Raise GlomsslError if ``row`` does not follow the manifest schema."""
    if not isinstance(row, dict):
        raise GlomsslError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if not _fast_ok(row):
        errors = sorted(_validator().iter_errors(row), key=lambda e: list(e.path))
        if errors:
            err = errors[0]
            field = ".".join(str(p) for p in err.path) or "(row)"
            raise GlomsslError(f"{where}: field {field!r}: {err.message}; fix or remove that row")
    p = row["path"]
    if os.path.isabs(p) or ".." in Path(p).parts:
        raise GlomsslError(
            f"{where}: path {p!r} must be relative to the manifest's folder and stay inside it"
        )


def read_manifest(path: str | os.PathLike[str], validate: bool = True) -> list[Row]:
    """Read and validate a manifest; errors name the file and the line number."""
    mpath = Path(path)
    if not mpath.is_file():
        raise GlomsslError(f"manifest {mpath} does not exist; check the path")
    rows: list[Row] = []
    try:
        text = mpath.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GlomsslError(
            f"cannot read manifest {mpath}: {exc}; is it a UTF-8 JSONL file?"
        ) from exc
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{mpath}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GlomsslError(
                f"{where}: not valid JSON ({exc.msg}); fix or remove that line"
            ) from exc
        if validate:
            validate_row(row, where)
        rows.append(row)
    return rows


def iter_manifest(path: str | os.PathLike[str]) -> Iterator[Row]:
    """Yield rows of a (possibly large) manifest one by one, validating each."""
    mpath = Path(path)
    if not mpath.is_file():
        raise GlomsslError(f"manifest {mpath} does not exist; check the path")
    with open(mpath, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise GlomsslError(f"{mpath}:{lineno}: not valid JSON ({exc.msg})") from exc
            validate_row(row, f"{mpath}:{lineno}")
            yield row


def dumps_row(row: Row) -> str:
    return json.dumps(row, ensure_ascii=False, sort_keys=False, separators=(",", ":"))


def write_manifest(path: str | os.PathLike[str], rows: Iterable[Row], validate: bool = True) -> int:
    """Write rows atomically (temp file + rename). Returns the number of rows written."""
    n = 0
    with atomic_open(path, "w") as fh:
        for i, row in enumerate(rows, start=1):
            if validate:
                validate_row(row, f"row {i} for {path}")
            fh.write(dumps_row(row) + "\n")
            n += 1
    return n


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    """Write arbitrary JSON rows (e.g. failures.jsonl) atomically, without schema validation."""
    return write_manifest(path, rows, validate=False)


def resolve(manifest_path: str | os.PathLike[str], row: Row, key: str = "path") -> Path:
    """Absolute path of a row's file (``path`` or ``mask``) given the manifest's location."""
    return (Path(manifest_path).resolve().parent / row[key]).resolve()


def relpath(file: str | os.PathLike[str], manifest_dir: str | os.PathLike[str]) -> str:
    """POSIX path of ``file`` relative to the manifest folder."""
    return Path(os.path.relpath(Path(file).resolve(), Path(manifest_dir).resolve())).as_posix()


def image_row(
    file: str | os.PathLike[str], manifest_dir: str | os.PathLike[str], **extra: Any
) -> Row:
    """Build a manifest row for an image file: hash it and read its size (header only)."""
    from PIL import Image

    fpath = Path(file)
    try:
        with Image.open(fpath) as im:
            width, height = im.size
    except (OSError, ValueError) as exc:
        raise GlomsslError(
            f"{fpath} is not a readable image ({exc}); remove or replace it"
        ) from exc
    row: Row = {
        "path": relpath(fpath, manifest_dir),
        "sha256": sha256_file(fpath),
        "width": int(width),
        "height": int(height),
    }
    row.update(extra)
    return row


def _left_out(
    files: list[Path], root: Path, exclude: Sequence[str | os.PathLike[str]]
) -> tuple[list[Path], list[Path], list[str]]:
    """Split ``files`` (listed below ``root``) into (kept, left out, the ``exclude`` entries hit).

    A file is left out when it lies under (or is) one of ``exclude``, compared on resolved paths:
    each file's folder is resolved once (symlinked folders count where they point), the file name
    itself is not followed, so a link the user put in the input stays an input. An ``exclude`` entry
    that holds ``root`` itself (``--out`` the input folder, or above it) leaves nothing out.
    """
    top = root.resolve()
    roots = [(str(e), r) for e in exclude if not top.is_relative_to(r := Path(e).resolve())]
    if not roots:
        return files, [], []
    folders: dict[Path, Path] = {}
    kept: list[Path] = []
    left: list[Path] = []
    hit: list[str] = []
    for f in files:
        parent = folders.get(f.parent)
        if parent is None:
            parent = folders[f.parent] = f.parent.resolve()
        real = parent / f.name
        shown = next((s for s, r in roots if real == r or real.is_relative_to(r)), None)
        if shown is None:
            kept.append(f)
        else:
            left.append(f)
            if shown not in hit:
                hit.append(shown)
    return kept, left, hit


def _where(hit: list[str]) -> str:
    """``under --out DIR`` (``written as FILE`` for an image file the command writes), for messages."""
    return ", ".join(
        f"written as {h}" if Path(h).suffix.lower() in IMAGE_EXTENSIONS else f"under --out {h}"
        for h in hit
    )


def list_images(
    folder: str | os.PathLike[str],
    exclude: Sequence[str | os.PathLike[str]] = (),
    command: str = "",
) -> list[Path]:
    """Image files below ``folder`` (recursive), sorted, by extension.

    ``exclude``: the command's own outputs (its ``--out`` folder, or an image file it writes). Images
    under them are left out, so a rerun with ``--out`` inside ``folder`` never reads its own output;
    that is said once on stderr (prefixed with ``command``). When every image of ``folder`` was left
    out, a one-line GlomsslError says so.
    """
    root = Path(folder)
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not exclude or not files:
        return files
    kept, left, hit = _left_out(files, root, exclude)
    if left and not kept:
        raise GlomsslError(
            f"folder {root} holds no images besides the {len(left)} {_where(hit)}, the output "
            f"of {command or 'this command'}; pass the folder of input images"
        )
    if left:
        import sys

        n = len(left)
        print(
            f"{command or 'glomssl'}: left out {n} image{'s' if n != 1 else ''} {_where(hit)}, "
            "the output of this command",
            file=sys.stderr,
            flush=True,
        )
    return kept


def load_image_list(
    source: str | os.PathLike[str],
    what: str = "",
    exclude: Sequence[str | os.PathLike[str]] = (),
    command: str = "",
) -> list[tuple[Path, Row]]:
    """Resolve a FOLDER or a MANIFEST into (absolute image path, row) pairs.

    A folder's rows are built cheaply (no hashing): ``path`` relative to the folder plus the file name;
    a manifest's rows are returned as written, with their paths resolved against the manifest's folder.
    One picture (read as a manifest it would fail as bad JSON) is a one-line error naming option
    ``what``. ``exclude``/``command``: see :func:`list_images`; only a folder's listing is filtered,
    never the rows of a manifest (a row naming a file is the user's explicit choice).
    """
    src = Path(source)
    if src.is_file() and src.suffix.lower() in IMAGE_EXTENSIONS:
        raise GlomsslError(
            f"{what + ' ' if what else ''}{src} is one image; pass the folder that holds it, or a "
            "manifest listing it"
        )
    if src.is_dir():
        files = list_images(src, exclude, command)
        if not files:
            raise GlomsslError(f"folder {src} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        # relative to the folder as listed (symlinked files keep their link names)
        return [(f.absolute(), {"path": f.relative_to(src).as_posix()}) for f in files]
    if src.is_file():
        rows = read_manifest(src)
        if not rows:
            raise GlomsslError(f"manifest {src} has no rows")
        base = str(src.resolve().parent)  # once: resolving every row costs ~50 us a row
        return [(Path(os.path.normpath(os.path.join(base, r["path"]))), r) for r in rows]
    raise GlomsslError(f"{src} is neither a folder of images nor a manifest file; check the path")
