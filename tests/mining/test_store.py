"""SQLite state: WAL, transactions, duplicates, limit cursor, deterministic export."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from glomssl.errors import GlomsslError
from glomssl.manifest import read_manifest
from glomssl.mining.download import Attempt, DownloadResult
from glomssl.mining.openi import Figure
from glomssl.mining.store import MineStore


def _fig(uid: str, image_id: str, caption: str = "glomerulus") -> Figure:
    return Figure(
        uid=uid,
        image_id=image_id,
        img_large=f"/imgs/512/{uid}_{image_id}.png",
        caption=caption,
        license="by",
        title="T",
    )


def _urls(figs: list[Figure]) -> list[str | None]:
    return ["http://h" + f.img_large for f in figs]


def test_wal_and_tables(tmp_path: Path) -> None:
    with MineStore(tmp_path / "state.sqlite") as st:
        assert st.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = {r[0] for r in st.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "records", "attempts"} <= names


def test_shared_uid_and_duplicate_listing(tmp_path: Path) -> None:
    figs = [_fig("PMC1", "F1"), _fig("PMC1", "F2"), _fig("PMC2", "F1"), _fig("PMC1", "F1")]
    with MineStore(tmp_path / "s.sqlite") as st:
        new, dup = st.add_page(figs, _urls(figs), 1, 5, 4, None)
        assert (new, dup) == (3, 1)  # two figures of PMC1 kept, the repeated listing once
        assert st.todo() == [
            (("PMC1", "F1"), "/imgs/512/PMC1_F1.png", "http://h/imgs/512/PMC1_F1.png"),
            (("PMC1", "F2"), "/imgs/512/PMC1_F2.png", "http://h/imgs/512/PMC1_F2.png"),
            (("PMC2", "F1"), "/imgs/512/PMC2_F1.png", "http://h/imgs/512/PMC2_F1.png"),
        ]
        assert st.get_meta("search_next_m") == "5" and st.get_meta("search_total") == "4"


def test_limit_leaves_cursor_on_first_record_not_taken(tmp_path: Path) -> None:
    figs = [_fig(f"PMC{i}", "F1") for i in range(10)]
    with MineStore(tmp_path / "s.sqlite") as st:
        st.add_page(figs, _urls(figs), 11, 21, 50, limit=4)
        assert st.count() == 4 and st.get_meta("search_next_m") == "15"


def test_off_endpoint_image_is_recorded_as_permanent_failure(tmp_path: Path) -> None:
    figs = [_fig("PMC1", "F1")]
    with MineStore(tmp_path / "s.sqlite") as st:
        st.add_page(figs, [None], 1, 2, 1, None)
        assert st.todo() == [] and st.count("failed_permanent") == 1


def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    figs = [_fig("PMC1", "F1")]
    with MineStore(tmp_path / "s.sqlite") as st:
        with pytest.raises(ValueError):  # zip(strict=True) fails mid-transaction
            st.add_page(figs, [], 1, 2, 1, None)
        assert st.count() == 0 and st.get_meta("search_next_m") is None


def test_results_attempts_and_export_are_deterministic(tmp_path: Path) -> None:
    figs = [_fig("PMC1", "F1", "<b>bold</b> caption"), _fig("PMC1", "F2"), _fig("PMC2", "F1")]
    figdir = tmp_path / "figures"
    figdir.mkdir()
    (figdir / ("a" * 64 + ".png")).write_bytes(b"x")
    with MineStore(tmp_path / "s.sqlite") as st:
        st.add_page(figs, _urls(figs), 1, 4, 3, None)
        ok = DownloadResult(
            ("PMC1", "F1"),
            "done",
            "",
            "a" * 64 + ".png",
            "a" * 64,
            10,
            20,
            "2026-01-01T00:00:00Z",
            [Attempt(1.0, 500, "retry"), Attempt(2.0, 200, "ok")],
        )
        bad = DownloadResult(
            ("PMC1", "F2"), "failed_permanent", "HTTP 404", attempts=[Attempt(3.0, 404, "fail")]
        )
        flaky = DownloadResult(
            ("PMC2", "F1"),
            "failed_transient",
            "gave up: HTTP 500",
            attempts=[Attempt(4.0, 500, "fail")],
        )
        for r in (ok, bad, flaky):
            st.record_result(r)
        assert st.n_attempts() == 4
        # the transient failure is retried next run, the permanent one is not
        assert [k for k, _, _ in st.todo()] == [("PMC2", "F1")]
        st.export(figdir, "glomerulus")
        first = (figdir / "manifest.jsonl").read_bytes(), (figdir / "failures.jsonl").read_bytes()
        st.export(figdir, "glomerulus")
        again = (figdir / "manifest.jsonl").read_bytes(), (figdir / "failures.jsonl").read_bytes()
    assert first == again
    rows = read_manifest(figdir / "manifest.jsonl")
    assert len(rows) == 1
    row = rows[0]
    assert row["path"] == "a" * 64 + ".png" and row["retrieved_at"] == "2026-01-01T00:00:00Z"
    assert row["source"] == "openi" and row["query"] == "glomerulus" and row["uid"] == "PMC1"
    assert first[1].decode().count("\n") == 2


def test_store_reopen_keeps_state_and_binds_search(tmp_path: Path) -> None:
    figs = [_fig("PMC1", "F1")]
    with MineStore(tmp_path / "s.sqlite") as st:
        st.bind_search({"query": "a"})
        st.add_page(figs, _urls(figs), 1, 2, 1, None)
    with MineStore(tmp_path / "s.sqlite") as st:
        assert st.count() == 1
        st.bind_search({"query": "a"})
        with pytest.raises(GlomsslError, match="other search options"):
            st.bind_search({"query": "b"})


def test_corrupt_state_file_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "state.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GlomsslError, match="not a usable miner state"):
        MineStore(bad)
    assert sqlite3.sqlite_version
