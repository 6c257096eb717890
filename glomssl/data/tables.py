"""Tables of rows that users write by hand or export: CSV (header row) or JSON Lines (one object a line).

One reader for the label, mask and annotation tables of ``finetune seg``, ``finetune cls`` and
``detect data``; every problem is a one-line :class:`GlomsslError` naming the file and the line.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from glomssl.errors import GlomsslError


def read_table(path: str | os.PathLike[str], what: str = "table") -> list[dict[str, Any]]:
    """Rows of a ``.csv`` file, or of a ``.jsonl``/``.json`` file (one JSON object per line)."""
    p = Path(path)
    if not p.is_file():
        raise GlomsslError(f"{what} {p} is not a file; pass a CSV or JSONL table")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise GlomsslError(
            f"cannot read {what} {p} ({exc}); pass a UTF-8 CSV or JSONL table"
        ) from exc
    if p.suffix.lower() not in (".jsonl", ".json"):
        try:
            return [dict(r) for r in csv.DictReader(text.splitlines())]
        except csv.Error as exc:
            raise GlomsslError(f"{what} {p} is not a readable CSV ({exc})") from exc
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GlomsslError(f"{p}:{i}: not valid JSON ({exc.msg}); fix that line") from exc
        if not isinstance(row, dict):
            raise GlomsslError(f"{p}:{i}: expected a JSON object per line; fix that line")
        rows.append(row)
    return rows
