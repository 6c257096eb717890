"""`glomssl mine` whole: search -> download -> separate -> curate -> dedup against the replay server."""

from __future__ import annotations

from pathlib import Path

import pytest

from glomssl.manifest import read_manifest, resolve
from glomssl.mining.pipeline import MineConfig, run_mine
from glomssl.mining.replay import ReplayServer

DEMO = Path(__file__).resolve().parents[2] / "glomssl" / "assets" / "demo"


def _cfg(server: ReplayServer, out: Path, **kw: object) -> MineConfig:
    base: dict = dict(
        query="microscopy OR histology",
        out=str(out),
        endpoint=server.url,
        rate=0.0,
        workers=4,
        quiet=True,
        stage_options={"separate": {"method": "classic"}},
    )
    base.update(kw)
    return MineConfig(**base)


def test_whole_chain_builds_a_traceable_corpus_and_reruns_as_a_no_op(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    with ReplayServer(DEMO) as server:
        s = run_mine(_cfg(server, out))
        assert [r.name for r in s.stages] == ["search", "download", "separate", "curate", "dedup"]
        figures = read_manifest(out / "figures" / "manifest.jsonl")
        panels = read_manifest(out / "panels" / "manifest.jsonl")
        curated = read_manifest(out / "curated" / "manifest.jsonl")
        final = read_manifest(out / "manifest.jsonl")
        # compound figures were split: more panels than figures, each panel knows its parent
        assert len(panels) > len(figures)
        fig_files = {resolve(out / "figures" / "manifest.jsonl", r) for r in figures}
        # ``parent`` is relative to the panels' manifest, like ``path``
        pm = out / "panels" / "manifest.jsonl"
        assert all(resolve(pm, p, "parent") in fig_files and len(p["bbox"]) == 4 for p in panels)
        # curation and dedup only ever drop rows, each drop with a recorded reason
        rejected = (out / "curated" / "rejected.jsonl").read_text().splitlines()
        assert len(curated) + len(rejected) == len(panels)
        dropped = (out / "dedup" / "dropped.jsonl").read_text().splitlines()
        assert len(final) + len(dropped) == len(curated) and 0 < len(final)
        # the final rows resolve to real files under OUT and carry Open-i provenance
        for row in final:
            f = resolve(out / "manifest.jsonl", row)
            assert f.is_file() and out.resolve() in f.parents
            assert row["source"] == "openi" and row["uid"].startswith("DEMO") and row["parent"]
        before = {p: p.read_bytes() for p in out.rglob("*.jsonl")}
        again = run_mine(_cfg(server, out))
    assert again.downloaded_now == 0
    assert all(r.counts.get("up_to_date") == 1 for r in again.stages[2:])
    assert {p: p.read_bytes() for p in out.rglob("*.jsonl")} == before


def test_stage_options_change_reruns_that_stage(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    with ReplayServer(DEMO) as server:
        run_mine(_cfg(server, out, stop_after="curate"))
        n_before = len(read_manifest(out / "curated" / "manifest.jsonl"))
        opts = {"separate": {"method": "classic"}, "curate": {"min_side": 10_000}}
        s = run_mine(_cfg(server, out, stop_after="curate", stage_options=opts))
    curate = next(r for r in s.stages if r.name == "curate")
    assert "up_to_date" not in curate.counts
    assert n_before > 0 and read_manifest(out / "curated" / "manifest.jsonl") == []


@pytest.mark.slow
def test_chain_with_shipped_detector(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    with ReplayServer(DEMO) as server:
        run_mine(_cfg(server, out, stage_options={"separate": {"method": "yolo"}}))
    panels = read_manifest(out / "panels" / "manifest.jsonl")
    assert {p["method"] for p in panels} == {"yolo"}
    assert len(panels) > len(read_manifest(out / "figures" / "manifest.jsonl"))
