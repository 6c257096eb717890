"""Resolve what a user passes as input (FOLDER | MANIFEST | SLIDE...) into one list, one way.

Every command that reads images calls :func:`resolve_sources`. The policy for unreadable files is the
same everywhere: they are skipped, counted and listed (``skipped.jsonl`` in the output folder, written by
:func:`write_skipped`), never fatal, unless nothing readable is left. Whole-slide images are returned
as slides (they are read tile by tile later) and cannot be mixed with folders or manifests.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glomssl.errors import GlomsslError

Row = dict[str, Any]


@dataclass
class Sources:
    """Resolved input: image files with their manifest rows, or slide files; plus what was skipped."""

    kind: str  # "images" or "slides"
    items: list[tuple[Path, Row]] = field(default_factory=list)  # images: (absolute path, row)
    slides: list[Path] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}

    @property
    def paths(self) -> list[Path]:
        return [p for p, _ in self.items]

    def __len__(self) -> int:
        return len(self.items) if self.kind == "images" else len(self.slides)


def _is_slide(path: str | os.PathLike[str]) -> bool:
    from glomssl.wsi import is_slide_path

    return is_slide_path(path) and Path(path).is_file()


def resolve_sources(
    sources: Sequence[str | os.PathLike[str]],
    what: str = "--data",
    check: bool = True,
    allow_slides: bool = True,
    exclude: Sequence[str | os.PathLike[str]] = (),
    command: str = "",
) -> Sources:
    """Resolve folders, manifests or slide files into a :class:`Sources`.

    ``check`` header-checks every image (decompression bombs included) and moves unreadable ones to
    ``skipped``; rows listed twice (the same file) are kept once. Raises a one-line GlomsslError when the
    input does not exist, mixes slides with other inputs, or holds no readable image at all.
    ``exclude``: the command's own output folder(s) (``--out``): a folder's images under them are left
    out (said once on stderr, prefixed with ``command``), so a rerun never reads its own output; the
    rows of a manifest are kept as written (see :func:`glomssl.manifest.load_image_list`).
    """
    from glomssl.data.images import image_ok
    from glomssl.manifest import load_image_list

    srcs = [str(s) for s in sources]
    if not srcs:
        raise GlomsslError(f"no {what} given; pass a folder of images, a manifest or slide files")
    slides = [Path(s) for s in srcs if _is_slide(s)]
    if slides:
        if not allow_slides:
            raise GlomsslError(f"{what} {slides[0]} is a whole-slide image; pass images here")
        if len(slides) != len(srcs):
            raise GlomsslError(
                f"{what} mixes slides with folders/manifests; pass one kind at a time"
            )
        return Sources("slides", slides=slides)
    items: list[tuple[Path, Row]] = []
    seen: set[Path] = set()
    for s in srcs:
        for path, row in load_image_list(s, what, exclude, command):
            key = Path(os.path.normpath(os.path.abspath(path)))  # no per-row resolve(): it is slow
            if key in seen:
                continue
            seen.add(key)
            items.append((path, row))
    out = Sources("images")
    for path, row in items:
        reason = image_ok(path) if check else None
        if reason is None:
            out.items.append((path, row))
        else:
            out.skipped.append({"path": str(path), "reason": reason})
    if not out.items:
        raise GlomsslError(
            f"none of the {len(items)} images in {what} could be read "
            f"(e.g. {out.skipped[0]['path']}: {out.skipped[0]['reason']}); check the files"
        )
    return out


def write_skipped(out_dir: str | os.PathLike[str], skipped: list[dict[str, str]]) -> Path | None:
    """Write ``out_dir/skipped.jsonl`` (one line per unreadable input) when anything was skipped."""
    if not skipped:
        return None
    from glomssl.manifest import write_jsonl

    path = Path(out_dir) / "skipped.jsonl"
    write_jsonl(path, skipped)
    return path
