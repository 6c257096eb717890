"""run_mine end to end against the replay server: faults, duplicates, idempotence, stages."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from glomssl.errors import GlomsslError
from glomssl.manifest import read_manifest, resolve
from glomssl.mining import stages
from glomssl.mining.pipeline import MineConfig, run_mine
from glomssl.mining.replay import (
    Faults,
    ReplayServer,
    make_record,
    make_synthetic_replay,
    write_replay_folder,
)
from glomssl.mining.stages import MineContext, StageResult


def _cfg(server: ReplayServer, out: Path, **kw: object) -> MineConfig:
    base = dict(
        query="glomerulus",
        out=str(out),
        endpoint=server.url,
        rate=0.0,
        workers=4,
        page_size=5,
        backoff_s=0.01,
        quiet=True,
        stop_after="download",  # these tests are about search + download; the chain has its own
    )
    base.update(kw)
    return MineConfig(**base)  # type: ignore[arg-type]


def _core_stages() -> list:
    """search + download only, so a test can append its own stage after them."""
    return [s for s in stages.STAGES if s[0] in ("search", "download")]


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "figures").iterdir())}


def test_mine_with_faults_shared_uids_and_duplicates(tmp_path: Path) -> None:
    folder = make_synthetic_replay(tmp_path / "rp", 14, per_article=3, size=16)
    recs = json.loads((folder / "records.json").read_text())
    recs.insert(6, recs[1])  # one figure listed twice
    (folder / "records.json").write_text(json.dumps(recs))
    faults = Faults(max_page=4, first_500=1, first_429=1, retry_after_s=0, first_truncated=1)
    with ReplayServer(folder, faults=faults) as server:
        out = tmp_path / "out"
        s = run_mine(_cfg(server, out))
    assert (s.found, s.done, s.failed_permanent, s.failed_transient, s.duplicates) == (
        14,
        14,
        0,
        0,
        1,
    )
    rows = read_manifest(out / "figures" / "manifest.jsonl")
    assert len({(r["uid"], r["image_id"]) for r in rows}) == 14
    assert sum(r["uid"] == "PMC1000" for r in rows) == 3  # figures sharing a uid all kept
    assert (
        rows[0]["caption"] == "Glomerulus, PAS stain > figure 0"
    )  # HTML stripped, entities decoded
    for r in rows:
        assert r["path"] == r["sha256"] + ".png"
        with Image.open(resolve(out / "figures" / "manifest.jsonl", r)) as im:
            assert im.size == (r["width"], r["height"])
    top = read_manifest(out / "manifest.jsonl")
    assert [r["path"] for r in top] == ["figures/" + r["path"] for r in rows]
    assert (out / "figures" / "failures.jsonl").read_text() == ""
    assert (out / "config.yaml").is_file()


def test_rerun_downloads_nothing_and_keeps_manifests_identical(tmp_path: Path) -> None:
    folder = make_synthetic_replay(tmp_path / "rp", 9, size=8)
    with ReplayServer(folder) as server:
        out = tmp_path / "out"
        run_mine(_cfg(server, out))
        before = _files(out), (out / "manifest.jsonl").read_bytes()
        n_before = len(server.log)
        s = run_mine(_cfg(server, out))
        assert len(server.log) == n_before  # not even a search request
    assert s.downloaded_now == 0 and s.done == 9
    assert (_files(out), (out / "manifest.jsonl").read_bytes()) == before


def test_transient_failures_retried_next_run_permanent_recorded_once(tmp_path: Path) -> None:
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    images = {"/imgs/512/ok.png": png.getvalue(), "/imgs/512/flaky.png": _other_png()}
    recs = [
        make_record("PMC1", "F1", "/imgs/512/ok.png", "glomerulus"),
        make_record("PMC1", "F2", "/imgs/512/flaky.png", "glomerulus"),
        make_record("PMC2", "F1", "/imgs/512/missing.png", "glomerulus"),
    ]
    folder = write_replay_folder(tmp_path / "rp", recs, images)
    out = tmp_path / "out"
    with ReplayServer(folder, faults=Faults(first_500=3, only_prefix="/imgs/")) as server:
        s1 = run_mine(_cfg(server, out, max_retries=1, workers=1))
        fails = [
            json.loads(x) for x in (out / "figures" / "failures.jsonl").read_text().splitlines()
        ]
        # every path's first 3 requests fail: with 1 retry, everything fails transiently now
        assert s1.done == 0 and s1.failed_transient == 3
        assert {f["permanent"] for f in fails} == {False}
        s2 = run_mine(_cfg(server, out, max_retries=1, workers=1))
        assert (s2.done, s2.failed_permanent, s2.failed_transient) == (2, 1, 0)
        n = len(server.log)
        s3 = run_mine(_cfg(server, out, max_retries=1, workers=1))
        assert len(server.log) == n and s3.failed_permanent == 1  # the 404 is not asked again
    fails = [json.loads(x) for x in (out / "figures" / "failures.jsonl").read_text().splitlines()]
    assert [(f["uid"], f["image_id"], f["reason"], f["permanent"]) for f in fails] == [
        ("PMC2", "F1", "HTTP 404", True)
    ]


def _other_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (9, 7), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


def test_hostile_records_never_write_outside_out(tmp_path: Path) -> None:
    """uids, image ids and paths with '..' and absolute URLs: files are named by sha256 only."""
    img = _other_png()
    images = {"/imgs/512/x.png": img}
    recs = [
        make_record("../../../PMC1", "../../evil", "/imgs/512/x.png", "glomerulus"),
        make_record("PMC2", "/etc/passwd", "/imgs/512/../../../../etc/passwd", "glomerulus"),
        make_record("PMC3", "F1", "http://evil.example.org/imgs/512/x.png", "glomerulus"),
        make_record("PMC4", "F1", "//evil.example.org/x.png", "glomerulus"),
    ]
    folder = write_replay_folder(tmp_path / "rp", recs, images)
    out = tmp_path / "deep" / "out"
    with ReplayServer(folder) as server:
        s = run_mine(_cfg(server, out))
    assert s.done == 1 and s.failed_permanent == 3
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    outside = {w for w in written if not w.startswith(("deep/out/", "rp/"))}
    assert outside == set()
    rows = read_manifest(out / "manifest.jsonl")
    assert rows[0]["uid"] == "../../../PMC1" and rows[0]["path"].startswith("figures/")
    fails = (out / "figures" / "failures.jsonl").read_text()
    assert "not on the --endpoint server" in fails and "HTTP 404" in fails


def test_limit_then_larger_limit_continues(tmp_path: Path) -> None:
    folder = make_synthetic_replay(tmp_path / "rp", 12, size=8)
    with ReplayServer(folder) as server:
        out = tmp_path / "out"
        assert run_mine(_cfg(server, out, limit=7)).done == 7
        s = run_mine(_cfg(server, out, limit=12))
    assert (s.found, s.done, s.downloaded_now) == (12, 12, 5)
    rows = read_manifest(out / "manifest.jsonl")
    assert [r["image_id"] for r in rows][:4] == ["F1", "F2", "F3", "F1"]


def test_stop_after_skip_and_appended_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stages are a plain list: a stage appended to it runs after download, on its manifest."""
    folder = make_synthetic_replay(tmp_path / "rp", 5, size=8)
    seen: list[int] = []
    pick = {"index": 0}

    def count_stage(ctx: MineContext) -> StageResult:
        rows = read_manifest(ctx.manifest) if ctx.manifest else []
        seen.append(len(rows))
        first = dict(rows[pick["index"]])
        first["path"] = "figures/" + first["path"]
        target = ctx.out / "picked.jsonl"
        target.write_text(json.dumps(first) + "\n")
        return StageResult("pick", manifest=target)

    monkeypatch.setattr(stages, "STAGES", [*_core_stages(), ("pick", count_stage)])
    with ReplayServer(folder) as server:
        out = tmp_path / "out"
        s = run_mine(_cfg(server, out, stop_after="search"))
        assert (s.found, s.done, s.manifest) == (5, 0, None) and seen == []
        s = run_mine(_cfg(server, out, skip=("pick",), stop_after=None))
        assert s.done == 5 and seen == [] and len(read_manifest(out / "manifest.jsonl")) == 5
        with pytest.raises(GlomsslError, match="unknown stage.*nope"):
            run_mine(_cfg(server, out, stage_options={"nope": {}}, stop_after=None))
        pick["index"] = 2
        s = run_mine(_cfg(server, out, stop_after=None))
    assert seen == [5] and [r.name for r in s.stages] == ["search", "download", "pick"]
    top = read_manifest(out / "manifest.jsonl")
    assert len(top) == 1 and top[0]["path"].startswith("figures/")
    assert top[0]["sha256"] == read_manifest(out / "figures" / "manifest.jsonl")[2]["sha256"]


def test_bad_stage_manifest_is_a_validation_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_synthetic_replay(tmp_path / "rp", 2, size=8)

    def broken(ctx: MineContext) -> StageResult:
        target = ctx.out / "broken.jsonl"
        target.write_text('{"path": "a.png", "sha256": "nothex", "width": 1, "height": 1}\n')
        return StageResult("broken", manifest=target)

    monkeypatch.setattr(stages, "STAGES", [*_core_stages(), ("broken", broken)])
    with ReplayServer(folder) as server:
        with pytest.raises(GlomsslError, match=r"broken.jsonl:1: field 'sha256'"):
            run_mine(_cfg(server, tmp_path / "out", stop_after=None))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rate": -1.0}, "--rate -1.0 is negative"),
        ({"image_type": "xyz"}, "--image-type 'xyz' is not an Open-i type"),
        ({"collection": "arxiv"}, "--collection 'arxiv' unknown"),
        ({"license": ("cc0",)}, "--license cc0 unknown"),
        ({"workers": 0}, "--workers 0"),
        ({"page_size": 500}, "--page-size 500"),
        ({"limit": 0}, "--limit 0"),
        ({"endpoint": "ftp://x"}, "must start with http"),
        ({"stop_after": "nope"}, "unknown stage 'nope'"),
    ],
)
def test_bad_options(change: dict[str, object], message: str) -> None:
    cfg = dataclasses.replace(MineConfig(), **change)  # type: ignore[arg-type]
    with pytest.raises(GlomsslError, match=message.replace("(", r"\(").replace(".", r"\.")):
        cfg.validate()


def test_different_search_in_same_folder_is_refused(tmp_path: Path) -> None:
    folder = make_synthetic_replay(tmp_path / "rp", 2, size=8)
    with ReplayServer(folder) as server:
        run_mine(_cfg(server, tmp_path / "out"))
        with pytest.raises(GlomsslError, match="other search options"):
            run_mine(_cfg(server, tmp_path / "out", query="kidney"))


def test_malformed_records_and_answers(tmp_path: Path) -> None:
    """A record without imgLarge is skipped and counted; a non-JSON answer is a one-line error."""
    folder = make_synthetic_replay(tmp_path / "rp", 4, size=8)
    recs = json.loads((folder / "records.json").read_text())
    del recs[1]["imgLarge"]
    (folder / "records.json").write_text(json.dumps(recs))
    with ReplayServer(folder) as server:
        s = run_mine(_cfg(server, tmp_path / "out"))
    assert (s.found, s.done, s.malformed) == (3, 3, 1)
    assert "1 malformed records" in s.paragraph()
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "records.json").write_text("[]")
    (junk / "api").mkdir()
    with ReplayServer(junk) as server:
        # an endpoint path that serves a non-JSON file stands in for "not an Open-i server"
        (junk / "x" / "api").mkdir(parents=True)
        (junk / "x" / "api" / "search").write_text("<html>maintenance</html>")
        with pytest.raises(GlomsslError, match="not valid JSON"):
            run_mine(_cfg(server, tmp_path / "out2", endpoint=server.url + "/x"))


@pytest.mark.realdata
def test_mine_verbatim_openi_records(tmp_path: Path, shared_data: Path) -> None:
    """The two verbatim Open-i records (one article, two figures) mined end to end."""
    verbatim = json.loads((shared_data / "openi" / "openi_cxr_response_verbatim.json").read_text())
    images = {r["imgLarge"]: _other_png() for r in verbatim["list"]}
    folder = write_replay_folder(tmp_path / "rp", verbatim["list"], images)
    with ReplayServer(folder) as server:
        s = run_mine(
            _cfg(server, tmp_path / "out", query="chest", image_type="x", collection="cxr")
        )
    assert (s.found, s.done) == (2, 2)
    rows = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert [(r["uid"], r["image_id"]) for r in rows] == [("CXR1", "F1"), ("CXR1", "F2")]
    assert rows[0]["license"] == "byncnd" and rows[0]["caption"] == "Xray Chest PA and Lateral"
    assert len({r["path"] for r in rows}) == 1  # same bytes -> one file, two figures kept


def test_second_miner_on_same_folder_is_refused(tmp_path: Path) -> None:
    import fcntl

    folder = make_synthetic_replay(tmp_path / "rp", 2, size=8)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".mine.lock", "a+b") as fh, ReplayServer(folder) as server:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # stands in for a miner already running there
        with pytest.raises(GlomsslError, match="another `glomssl mine` is working"):
            run_mine(_cfg(server, out))
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        assert run_mine(_cfg(server, out)).done == 2
