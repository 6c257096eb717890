"""`glomssl mine` when its panels were cut with other settings than this run's: a changed separate
option, or a default a newer glomssl changed (its sidecar). The old panels are moved aside, never
mixed with new ones nor deleted, and every figure is cut again; later stages follow."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from test_dominant_merge import stored_settings
from test_mine_chain import DEMO, _cfg

from glomssl.manifest import read_manifest
from glomssl.mining.pipeline import run_mine
from glomssl.mining.replay import ReplayServer
from glomssl.mining.separate import SeparateConfig, cut_with_other_settings


def test_a_changed_separate_option_recuts_into_a_fresh_folder(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    with ReplayServer(DEMO) as server:
        run_mine(_cfg(server, out))
        old_files = sorted(p.name for p in (out / "panels").rglob("*.png"))
        assert old_files
        opts = {"separate": {"method": "classic", "min_side": 200}}
        s = run_mine(_cfg(server, out, stage_options=opts))
    aside = sorted(tmp_path.glob("corpus/panels.before-*"))
    assert len(aside) == 1  # the old panels, untouched
    assert sorted(p.name for p in aside[0].rglob("*.png")) == old_files
    assert stored_settings(aside[0])["min_side"] == 24
    assert (
        stored_settings(out / "panels")["min_side"] == 200
    )  # every figure cut again, new settings only
    separate = next(r for r in s.stages if r.name == "separate")
    assert "up_to_date" not in separate.counts and separate.note
    assert "panels.before-" in s.paragraph()
    panels = read_manifest(out / "panels" / "manifest.jsonl")
    assert all(min(r["bbox"][2] - r["bbox"][0], r["bbox"][3] - r["bbox"][1]) >= 200 for r in panels)
    curate = next(r for r in s.stages if r.name == "curate")
    assert "up_to_date" not in curate.counts  # later stages follow the new panels


def test_a_changed_default_recuts_even_when_no_new_figure_came(tmp_path: Path) -> None:
    """A corpus cut by an older glomssl (its panels' state records other settings): a rerun with
    nothing new used to report the stage up to date and keep the old cuts for good."""
    out = tmp_path / "corpus"
    with ReplayServer(DEMO) as server:
        run_mine(_cfg(server, out))
        with sqlite3.connect(out / "panels" / "separate.sqlite") as db:
            old = json.loads(db.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0])
            old["classic"] = 2  # as an older version's gutter analysis recorded it
            db.execute("UPDATE meta SET value=? WHERE key='config'", (json.dumps(old),))
        s = run_mine(_cfg(server, out))
        assert len(list(tmp_path.glob("corpus/panels.before-*"))) == 1
        assert stored_settings(out / "panels")["classic"] == 3
        separate = next(r for r in s.stages if r.name == "separate")
        assert "up_to_date" not in separate.counts and separate.note
        again = run_mine(_cfg(server, out))  # and then it is up to date again
    assert all(r.counts.get("up_to_date") == 1 for r in again.stages[2:])
    assert all(r.note is None for r in again.stages)
    assert len(list(tmp_path.glob("corpus/panels.before-*"))) == 1


def test_cut_with_other_settings_reads_without_writing(tmp_path: Path) -> None:
    cfg = SeparateConfig(input=".", out=str(tmp_path / "new"), method="classic")
    assert cut_with_other_settings(cfg) is None  # no folder yet
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "separate.sqlite").write_bytes(b"not a database")
    assert cut_with_other_settings(cfg) is None  # the run itself reports this one
    assert (tmp_path / "new" / "separate.sqlite").read_bytes() == b"not a database"
